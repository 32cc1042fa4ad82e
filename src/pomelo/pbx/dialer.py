"""Placing the PBX's own INVITEs: to every registered phone of the callee, or to a trunk.

Each target gets its own UAC leg (its own Call-ID and tags), so a forked call is a set of
independent dialogs the PBX can cancel one by one when another phone answers. The caller's
offer goes along unchanged (or none, for the third-party call control of a transfer), and a
provider's digest challenge (401/407) or a 422 asking for a longer session interval is
answered by sending the INVITE again, once.

:class:`Dialer` works on its :class:`~pomelo.pbx.calls.Call`, in that call's task; the
responses it receives are posted back to the call.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pomelo.pbx.legs import CallLeg, LegEvent, LegRole, LegState
from pomelo.pbx.location import Contact
from pomelo.pbx.routing import OutboundTarget
from pomelo.pbx.session_timer import min_se_of_422, uac_headers
from pomelo.pbx.sipcache import AccountInfo, TrunkInfo
from pomelo.sip.digest import DigestError, answer_challenge, select_challenge
from pomelo.sip.errors import SipParseError
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.transaction import ClientTransaction, new_tag
from pomelo.sip.transport import Target, TransportError
from pomelo.sip.uri import NameAddr, SipUri, parse_uri

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call

__all__ = ["ALLOW", "Dialer"]

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY, PRACK"


class Dialer:
    """Outbound legs of one call (see the module docstring)."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call

    async def ring(self, accounts: Iterable[AccountInfo]) -> None:
        call = self.call
        for account in accounts:
            for contact in call.service.location.contacts(account.id):
                await self.fork(account, contact)

    async def fork(
        self,
        account: AccountInfo,
        contact: Contact,
        side: str = "callee",
        body: bytes | None = None,
    ) -> None:
        call = self.call
        transport = call.service.endpoint.transports.get(contact.transport)
        try:
            uri = parse_uri(contact.uri)
        except SipParseError:
            log.warning("call %s: unusable contact %r", call.id, contact.uri)
            return
        leg = self.new_uac_leg(side, account)
        await call.media.open(leg)
        if transport is None:
            leg.outcome = 503
            leg.fire(LegEvent.FAILED)
            return
        target = Target(transport, contact.source, contact.connection)
        leg.local_contact = call.service.contact_for(transport)
        route = call.route
        request = self.invite(
            leg,
            uri,
            from_=NameAddr(SipUri(route.domain, user=route.from_number), route.from_name),
            to=NameAddr(SipUri(route.domain, user=account.extension)),
            body=body,
        )
        await self.send_invite(leg, request, target)

    async def dial_trunk(
        self, out: OutboundTarget, side: str = "callee", body: bytes | None = None
    ) -> None:
        call = self.call
        trunk = out.trunk
        params: dict[str, str | None] = {}
        if trunk.transport.lower() != "udp":
            params["transport"] = trunk.transport.lower()
        uri = SipUri(trunk.host, user=out.dial, port=trunk.port, params=params)
        leg = self.new_uac_leg(side, None)
        await call.media.open(leg)
        leg.trunk = trunk
        request = self.invite(
            leg,
            uri,
            from_=NameAddr(SipUri(trunk.host, user=out.caller_id), out.caller_name),
            to=NameAddr(SipUri(trunk.host, user=out.dial)),
            body=body,
        )
        try:
            target = await call.service.endpoint.transports.resolve(request)
        except TransportError as exc:
            log.info("call %s: trunk %s unreachable: %s", call.id, trunk.name, exc)
            leg.outcome = 503
            leg.fire(LegEvent.FAILED)
            return
        leg.local_contact = call.service.contact_for(target.transport)
        request.contacts = [leg.local_contact.copy()]
        await self.send_invite(leg, request, target)

    def new_uac_leg(self, side: str, account: AccountInfo | None) -> CallLeg:
        call = self.call
        leg = CallLeg(LegRole.UAC, side, (f"{secrets.token_hex(12)}@pomelo", new_tag()))
        leg.account = account
        call._add_leg(leg)
        return leg

    def invite(
        self,
        leg: CallLeg,
        uri: SipUri | Any,
        *,
        from_: NameAddr,
        to: NameAddr,
        body: bytes | None = None,
    ) -> SipRequest:
        """A new INVITE for ``leg``; the caller's offer (or ``body``) and our identity."""
        call = self.call
        caller = call.a.invite_request
        from_.tag = leg.key[1]
        offer = caller.body if body is None else body
        if offer and call.media.anchored:
            offer = call.media.offer(leg, offer)
        headers = [("Allow", ALLOW), ("Supported", "timer")]
        headers += uac_headers(call.service.settings.session_timers)
        if offer:
            headers.append(("Content-Type", caller.content_type or "application/sdp"))
        forwards = caller.max_forwards if caller.max_forwards is not None else 70
        return SipRequest(
            "INVITE",
            uri,
            from_=from_,
            to=to,
            call_id=leg.key[0],
            cseq=1,
            contacts=[leg.local_contact.copy()] if leg.local_contact else None,
            max_forwards=max(forwards - 1, 0),
            body=offer,
            headers=headers,
        )

    async def send_invite(self, leg: CallLeg, request: SipRequest, target: Target) -> None:
        call = self.call
        leg.invite = request
        leg.ack_cseq = request.cseq
        leg.flow = target
        leg.local_sdp = request.body

        def on_response(tx: ClientTransaction, response: SipResponse) -> None:
            call.post(call._on_invite_response, leg, tx, response)

        try:
            leg.client_tx = await call.service.endpoint.start_request(
                request, on_response, target=target
            )
        except TransportError:
            leg.outcome = 503
            leg.fire(LegEvent.FAILED)
            return
        if leg.state is LegState.NEW:
            leg.fire(LegEvent.INVITE_SENT)
        if leg.ring_timer is None:
            settings = call.service.settings
            timeout = settings.outbound_ring_timeout if leg.trunk else settings.ring_timeout
            leg.ring_timer = call.service.call_later(
                timeout, lambda: call.post(call._on_ring_timeout, leg)
            )

    async def retry(self, leg: CallLeg, response: SipResponse) -> bool:
        """Send the INVITE again for a 401/407 (trunk credentials) or a 422 (a larger
        session interval); at most once per status."""
        status = response.status
        if status in leg.retried or status not in (401, 407, 422):
            return False
        retry = leg.invite_request.copy()
        retry.vias = []
        retry.cseq += 1
        if status == 422:
            min_se = min_se_of_422(response)
            if not min_se:
                return False
            retry.set_header("Session-Expires", str(min_se))
            retry.set_header("Min-SE", str(min_se))
        elif not self.authorize(leg, retry, response):
            return False
        leg.retried.add(status)
        leg.fire(LegEvent.CHALLENGED)
        assert leg.flow is not None
        await self.send_invite(leg, retry, leg.flow)
        return True

    def authorize(self, leg: CallLeg, retry: SipRequest, response: SipResponse) -> bool:
        call = self.call
        trunk: TrunkInfo | None = leg.trunk
        password = call.service.trunk_password(trunk) if trunk else None
        if trunk is None or not trunk.username or password is None:
            return False
        asked, answer = (
            ("WWW-Authenticate", "Authorization")
            if response.status == 401
            else ("Proxy-Authenticate", "Proxy-Authorization")
        )
        try:
            challenge = select_challenge(response.header_values(asked))
            value = answer_challenge(challenge, "INVITE", str(retry.uri), trunk.username, password)
        except DigestError:
            return False
        retry.set_header(answer, value)
        return True
