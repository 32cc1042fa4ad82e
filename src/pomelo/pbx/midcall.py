"""The middle of a call: what the B2BUA relays between two answered legs, and what it
answers itself.

* re-INVITE and UPDATE carrying a new offer (hold, resume, codec change) go to the other leg
  and its answer comes back; the offerer's hold state is read from its SDP (RFC 3264 §8.4)
  and reported as CallHoldStarted/CallResumed;
* a pure session refresh (UPDATE without a body, or a re-INVITE whose SDP keeps its o=
  version) is answered here with the SDP that leg already has, without waking the other
  phone;
* INFO and NOTIFY (DTMF, events) are relayed with their payload headers;
* session timers (RFC 4028), one per leg: the PBX refreshes the legs it is the refresher of
  and ends the call when a phone that should refresh does not.

:class:`MidCall` works on its :class:`~pomelo.pbx.calls.Call`, in that call's task.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pomelo.pbx import call_events as ev
from pomelo.pbx.anchor import MediaError
from pomelo.pbx.legs import CallLeg, CallState, LegRole
from pomelo.pbx.session_timer import (
    expiry_delay,
    min_se_of_422,
    parse_session_expires,
    refresh_delay,
    refresh_header,
)
from pomelo.pbx.sipcache import AccountInfo
from pomelo.sip.errors import SdpParseError
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.sdp import parse_sdp
from pomelo.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call

__all__ = ["RELAYED_HEADERS", "MidCall", "allow_of", "content_headers", "holds", "same_session"]

log = logging.getLogger(__name__)

RELAYED_HEADERS = (
    "Content-Type",
    "Content-Disposition",
    "Event",
    "Subscription-State",
    "Info-Package",
)
"""Headers an in-dialog request keeps when relayed to the other leg (its payload's)."""


def content_headers(message: SipRequest | SipResponse) -> list[tuple[str, str]]:
    if not message.body:
        return []
    return [("Content-Type", message.content_type or "application/sdp")]


def allow_of(message: SipRequest | SipResponse) -> frozenset[str]:
    methods: set[str] = set()
    for value in message.header_values("Allow"):
        methods.update(m.strip().upper() for m in value.split(",") if m.strip())
    return frozenset(methods)


def _origin_line(sdp: bytes) -> bytes | None:
    for line in sdp.splitlines():
        if line.startswith(b"o="):
            return line.strip()
    return None


def same_session(offer: bytes, previous: bytes) -> bool:
    """RFC 3264 §8: an offer whose o= line (and so session version) is unchanged changes
    nothing; that is what a session refresh looks like."""
    if not offer or not previous:
        return False
    line = _origin_line(offer)
    return line is not None and line == _origin_line(previous)


def holds(sdp: bytes) -> bool | None:
    """Whether an offer puts the other side on hold (RFC 3264 §8.4: sendonly or inactive,
    or the RFC 2543 c=0.0.0.0 form); None when the body is not SDP."""
    try:
        session = parse_sdp(sdp)
    except (SdpParseError, ValueError, UnicodeDecodeError):
        return None
    streams = [m for m in session.media if m.port != 0]
    if not streams:
        return None
    for media in streams:
        connection = session.connection_for(media)
        on_hold = media.direction in ("sendonly", "inactive")
        if session.attribute("sendonly") is not None or session.attribute("inactive") is not None:
            on_hold = True
        if connection is not None and connection.address == "0.0.0.0":  # noqa: S104
            on_hold = True
        if not on_hold:
            return False
    return True


class MidCall:
    """In-dialog handling for one call (see the module docstring)."""

    __slots__ = ("call",)

    def __init__(self, call: Call) -> None:
        self.call = call

    async def on_offer(self, leg: CallLeg, tx: ServerTransaction) -> None:
        """re-INVITE or UPDATE: answer a pure session refresh here, relay anything else."""
        request = tx.request
        if self.is_refresh(leg, request):
            self.answer_refresh(leg, tx)
            return
        peer = leg.peer
        busy = leg.pending is not None or (peer is not None and peer.pending is not None)
        if peer is None or not peer.confirmed or busy:
            tx.reply(491)
            return
        await self.relay(leg, tx)

    def is_refresh(self, leg: CallLeg, request: SipRequest) -> bool:
        if request.method == "UPDATE":
            return not request.body
        return same_session(request.body, leg.remote_sdp)

    def answer_refresh(self, leg: CallLeg, tx: ServerTransaction) -> None:
        call = self.call
        request = tx.request
        parsed = parse_session_expires(request)
        if parsed is not None and leg.session_expires:
            policy = call.service.settings.session_timers
            leg.session_expires = max(parsed[0], policy.min_se)
            if parsed[1] is not None:
                we_are_uac = leg.role is LegRole.UAC
                leg.session_refresher = parsed[1] == ("uac" if we_are_uac else "uas")
        headers = self.session_headers(leg)
        body = leg.local_sdp if request.method == "INVITE" else b""
        if body:
            headers.append(("Content-Type", "application/sdp"))
        tx.reply(200, body=body, headers=headers, contact=leg.local_contact)
        self.arm_session(leg)

    def session_headers(self, leg: CallLeg) -> list[tuple[str, str]]:
        if not leg.session_expires:
            return []
        value = refresh_header(leg.session_expires, leg.role is LegRole.UAC, leg.session_refresher)
        return [("Session-Expires", value), ("Supported", "timer")]

    async def relay(self, leg: CallLeg, tx: ServerTransaction) -> None:
        """Forward an in-dialog request to the other leg and its final answer back."""
        call = self.call
        request = tx.request
        peer = leg.peer
        if peer is None or peer.dialog is None or not peer.confirmed:
            tx.reply(481)
            return
        headers = [(name, v) for name in RELAYED_HEADERS for v in request.header_values(name)]
        body = request.body
        if request.method in ("INVITE", "UPDATE"):
            headers += self.session_headers(peer)
            if body and call.media.anchored:
                try:
                    body = call.media.translate(leg, peer, body, offer=True)
                except MediaError as exc:
                    log.info("call %s: re-offer refused: %s", call.id, exc)
                    tx.reply(488)
                    return
                headers = [h for h in headers if h[0].lower() != "content-type"]
                headers.append(("Content-Type", "application/sdp"))
        out = peer.dialog.create_request(request.method, body=body, headers=headers)
        if request.method == "INVITE":
            peer.pending = ("reinvite", leg)

        async def on_final(response: SipResponse) -> None:
            await self.on_relayed_final(leg, tx, peer, out, response)

        await call._send(peer, out, on_final)

    async def on_relayed_final(
        self,
        leg: CallLeg,
        tx: ServerTransaction,
        peer: CallLeg,
        out: SipRequest,
        response: SipResponse,
    ) -> None:
        call = self.call
        request = tx.request
        method = request.method
        if method == "INVITE":
            peer.pending = None
        if peer.dialog is not None:
            peer.dialog.update_from_response(out, response)
        status = response.status
        ok = 200 <= status < 300
        headers = content_headers(response)
        body = response.body
        if ok and method in ("INVITE", "UPDATE"):
            headers += self.session_headers(leg)
            if body and call.media.anchored:
                try:
                    body = call.media.translate(peer, leg, body, offer=not request.body)
                except MediaError as exc:
                    log.info("call %s: re-answer unusable: %s", call.id, exc)
                    body = leg.local_sdp
            self.offer_accepted(leg, peer, request.body, response.body, out.body, body)
        contact = leg.local_contact if method == "INVITE" else None
        tx.reply(status, response.reason, body=body, headers=headers, contact=contact)
        if ok and method == "INVITE":
            if request.body:
                await call._ack(peer, b"")
            else:
                peer.pending = ("ack", leg)
                leg.pending = ("relay-ack", peer)
        if status in (408, 481) and call.state is CallState.ANSWERED:
            await call._hang_up(peer, peer.side, "peer-gone", status)

    def offer_accepted(
        self,
        leg: CallLeg,
        peer: CallLeg,
        offer: bytes,
        answer: bytes,
        offer_sent: bytes | None = None,
        answer_sent: bytes | None = None,
    ) -> None:
        """Bookkeeping after a relayed offer/answer: SDP on both legs, hold state, timers
        (a successful re-INVITE or UPDATE refreshes both sessions, RFC 4028 §10). The
        ``*_sent`` bodies are what the PBX sent on (anchored media rewrites them)."""
        if offer:
            leg.remote_sdp = offer
            peer.local_sdp = offer if offer_sent is None else offer_sent
            on_hold = holds(offer)
            if on_hold is not None and on_hold != leg.holding:
                leg.holding = on_hold
                self.hold_changed(leg)
        if answer:
            peer.remote_sdp = answer
            leg.local_sdp = answer if answer_sent is None else answer_sent
        self.arm_session(leg)
        self.arm_session(peer)

    def hold_changed(self, leg: CallLeg) -> None:
        call = self.call
        account: AccountInfo | None = leg.account
        user_id = account.user_id if account else None
        factory = ev.CallHoldStarted if leg.holding else ev.CallResumed
        call._emit(
            lambda at, aud: factory(
                tenant_id=call.route.tenant_id,
                at=at,
                audience=aud,
                call_id=call.id,
                side=leg.side,
                user_id=user_id,
            )
        )

    def arm_session(self, leg: CallLeg) -> None:
        call = self.call
        if leg.session_timer is not None:
            leg.session_timer.cancel()
            leg.session_timer = None
        if not leg.session_expires or not leg.confirmed:
            return
        interval = leg.session_expires
        delay = refresh_delay(interval) if leg.session_refresher else expiry_delay(interval)
        leg.session_timer = call.service.call_later(
            delay, lambda: call.post(self.on_session_timer, leg)
        )

    async def on_session_timer(self, leg: CallLeg) -> None:
        call = self.call
        leg.session_timer = None
        if not leg.confirmed or call.state is not CallState.ANSWERED:
            return
        if not leg.session_refresher:
            await call._hang_up(None, "system", "session-timer", 408)
            return
        if leg.pending is not None:
            leg.session_timer = call.service.call_later(
                2.0, lambda: call.post(self.on_session_timer, leg)
            )
            return
        await self.refresh(leg)

    async def refresh(self, leg: CallLeg) -> None:
        """Refresh a session we are the refresher of: UPDATE without a body when the peer
        allows it (cheapest, no offer/answer), else a re-INVITE offering the same SDP."""
        call = self.call
        assert leg.dialog is not None
        method = "UPDATE" if "UPDATE" in leg.allow else "INVITE"
        body = leg.local_sdp if method == "INVITE" else b""
        headers = self.session_headers(leg)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        request = leg.dialog.create_request(method, body=body, headers=headers)
        if method == "INVITE":
            leg.pending = ("refresh", None)

        async def on_final(response: SipResponse) -> None:
            await self.on_refresh_final(leg, request, response)

        await call._send(leg, request, on_final)

    async def on_refresh_final(
        self, leg: CallLeg, request: SipRequest, response: SipResponse
    ) -> None:
        call = self.call
        if request.method == "INVITE":
            leg.pending = None
        status = response.status
        if leg.dialog is not None:
            leg.dialog.update_from_response(request, response)
        if 200 <= status < 300:
            if request.method == "INVITE":
                await call._ack(leg, b"")
            parsed = parse_session_expires(response)
            if parsed is not None:
                leg.session_expires = parsed[0]
        elif status in (408, 481):
            if call.state is CallState.ANSWERED:
                await call._hang_up(leg, "system", "session-timer", status)
            return
        elif status == 422 and min_se_of_422(response):
            leg.session_expires = min_se_of_422(response)
        self.arm_session(leg)
