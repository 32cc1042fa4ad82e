"""Call transfer (RFC 3515 REFER, RFC 5589 call flows) carried out by the PBX itself.

The phone that transfers (the *transferor*, leg X) sends REFER in its dialog with the PBX;
its party on the other leg (the *transferee*, Y) stays connected to the PBX throughout. So
instead of asking Y to place a new call, the PBX does it:

* **blind** (``Refer-To: <sip:target>``): the PBX routes the target as if X had dialled it and
  calls it without an offer; the answering phone Z offers in its 2xx, the PBX re-INVITEs Y
  with that offer and returns Y's answer in the ACK to Z (third-party call control, RFC 3725
  flow I). Y and Z are then bridged and X is released;
* **attended** (``Refer-To`` carrying ``Replaces`` of X's other call with W): the PBX takes
  leg W over from that call, re-INVITEs W without an offer, hands W's offer to Y the same way,
  and releases both of X's legs.

X learns the progress through NOTIFYs with ``message/sipfrag`` bodies (100, 180, then the
final status), unless it asked for none with ``Refer-Sub: false`` (RFC 4488). Runs entirely
in the transferring call's task; the only cross-call step (taking W over) is a request posted
to W's call and answered through a future, so each call's legs are only ever touched by their
own task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pomelo.pbx import call_events as ev
from pomelo.pbx.anchor import MediaError
from pomelo.pbx.legs import CallLeg, CallState, LegEvent, LegRole
from pomelo.pbx.midcall import allow_of
from pomelo.pbx.routing import Refusal, uri_user
from pomelo.pbx.session_timer import negotiate_uac
from pomelo.sip.dialog import Dialog
from pomelo.sip.errors import SipParseError
from pomelo.sip.message import REASON_PHRASES, SipRequest, SipResponse
from pomelo.sip.transaction import ServerTransaction
from pomelo.sip.uri import SipUri, parse_name_addr

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call

__all__ = ["Transfers", "parse_replaces"]

log = logging.getLogger(__name__)

HANDOVER_TIMEOUT = 5.0


def parse_replaces(value: str) -> tuple[str, str, str] | None:
    """``(call_id, to_tag, from_tag)`` from a Replaces value (RFC 3891), URL-decoded."""
    parts = unquote(value).split(";")
    call_id = parts[0].strip()
    params: dict[str, str] = {}
    for part in parts[1:]:
        name, _, val = part.partition("=")
        params[name.strip().lower()] = val.strip()
    to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
    if not call_id or to_tag is None or from_tag is None:
        return None
    return call_id, to_tag, from_tag


def _uri_header(uri: SipUri, name: str) -> str | None:
    for key, value in uri.headers.items():
        if key.lower() == name.lower():
            return value
    return None


class _Job:
    """One transfer in progress."""

    __slots__ = (
        "answer",
        "kind",
        "notify",
        "replaced",
        "target",
        "transferee",
        "transferor",
        "winner",
    )

    def __init__(self, transferor: CallLeg, transferee: CallLeg, notify: bool) -> None:
        self.transferor = transferor
        self.transferee = transferee
        self.notify = notify
        self.kind = "blind"
        self.target = ""
        self.winner: CallLeg | None = None
        self.answer: SipResponse | None = None
        self.replaced: str | None = None


class Transfers:
    """The transfers of one call (one at a time)."""

    __slots__ = ("call", "job", "rang", "released")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.job: _Job | None = None
        self.released: set[int] = set()
        self.rang = False

    # -- REFER ----------------------------------------------------------------------------

    async def refer(self, leg: CallLeg, tx: ServerTransaction) -> None:
        request = tx.request
        target = self._refer_target(request)
        if target is None:
            tx.reply(400, "Bad Refer-To")
            return
        peer = leg.peer
        if self.job is not None or leg.pending is not None:
            tx.reply(491)
            return
        if peer is None or not peer.confirmed or self.call.state is not CallState.ANSWERED:
            tx.reply(481)
            return
        notify = (request.header("Refer-Sub") or "").strip().lower() != "false"
        tx.reply(202, headers=[] if notify else [("Refer-Sub", "false")])
        job = self.job = _Job(leg, peer, notify)
        self.rang = False
        await self._notify(job, 100, final=False)
        replaces = _uri_header(target, "Replaces")
        if replaces is not None:
            await self._attended(job, replaces)
        else:
            await self._blind(job, target)

    @staticmethod
    def _refer_target(request: SipRequest) -> SipUri | None:
        values = request.header_values("Refer-To")
        if len(values) != 1:
            return None
        try:
            uri = parse_name_addr(values[0], "Refer-To").uri
        except SipParseError:
            return None
        return uri if isinstance(uri, SipUri) else None

    # -- blind ----------------------------------------------------------------------------

    async def _blind(self, job: _Job, target: SipUri) -> None:
        call = self.call
        dialled = uri_user(target)
        job.target = dialled or ""
        tenant = call.service.router.tenant(call.route.tenant_id)
        if tenant is None:
            await self._finish(job, 503)
            return
        decision = await call.service.router.route_dialled(tenant, job.transferor.account, dialled)
        if isinstance(decision, Refusal):
            await self._finish(job, decision.status)
            return
        if decision.outbound is not None:
            await call.dialer.dial_trunk(decision.outbound, side="transfer", body=b"")
        else:
            for account in decision.accounts:
                for contact in call.service.location.contacts(account.id):
                    await call.dialer.fork(account, contact, side="transfer", body=b"")
        if not self._targets(ringing_only=True):
            await self._finish(job, 480)

    def _targets(self, ringing_only: bool = False) -> list[CallLeg]:
        legs = [leg for leg in self.call.legs if leg.side == "transfer" and leg.role is LegRole.UAC]
        return [leg for leg in legs if leg.ringing] if ringing_only else legs

    def progress(self, leg: CallLeg, response: SipResponse) -> None:
        job = self.job
        if job is None or self.rang or response.status not in (180, 183):
            return
        self.rang = True
        self.call.post(self._notify, job, 180, False)

    async def answered(self, leg: CallLeg, response: SipResponse) -> None:
        """A transfer target answered (its 2xx carries its offer): bridge it to Y."""
        call = self.call
        job = self.job
        leg.fire(LegEvent.ANSWERED)
        leg.dialog = Dialog.from_uac(leg.invite, response) if leg.invite else None
        leg.remote_sdp = response.body
        leg.allow = allow_of(response)
        leg.pending = ("ack", None)  # its 2xx carried the offer: the ACK waits for Y's answer
        call._stop_ring(leg)
        for other in self._targets(ringing_only=True):
            call._cancel_fork(other)
        if job is None or job.winner is not None:
            await call._drop_late_answer_confirmed(leg)
            return
        job.winner, job.answer = leg, response
        await self._offer_to_transferee(job, leg, response.body)

    def failed(self, leg: CallLeg, status: int) -> None:
        job = self.job
        if job is None or job.winner is not None or self._targets(ringing_only=True):
            return
        statuses = [t.outcome for t in self._targets() if t.outcome is not None] or [status]
        busy = 486 if 486 in statuses else None
        self.call.post(self._finish, job, busy or min(statuses))

    # -- attended -------------------------------------------------------------------------

    async def _attended(self, job: _Job, replaces: str) -> None:
        call = self.call
        job.kind = "attended"
        parsed = parse_replaces(replaces)
        service = call.service
        other: CallLeg | None = None
        if parsed is not None:
            call_id, to_tag, from_tag = parsed
            other = service.legs.get((call_id, to_tag)) or service.legs.get((call_id, from_tag))
        if other is None or other.call is call or not other.confirmed:
            await self._finish(job, 481)
            return
        other_call: Call = other.call
        if other_call.route.tenant_id != call.route.tenant_id:
            await self._finish(job, 403)
            return
        future: asyncio.Future[CallLeg | None] = asyncio.get_running_loop().create_future()
        other_call.post(other_call._transfers().hand_over, other, future, call)
        try:
            taken = await asyncio.wait_for(future, HANDOVER_TIMEOUT)
        except TimeoutError:
            taken = None
        if taken is None:
            await self._finish(job, 481)
            return
        job.replaced = other_call.id
        job.target = _number_of(taken)
        self._adopt(taken)
        await self._ask_offer(job, taken)

    async def hand_over(self, replaced: CallLeg, future: asyncio.Future[Any], to: Call) -> None:
        """In the replaced call's task: give its other leg to ``to`` and end this call."""
        call = self.call
        taken = replaced.peer
        usable = (
            taken is not None
            and taken.confirmed
            and taken.pending is None
            and call.state is CallState.ANSWERED
        )
        if not usable or taken is None:
            if not future.done():
                future.set_result(None)
            return
        call.legs.remove(taken)
        taken.cancel_timers()
        taken.peer = replaced.peer = None
        taken.call = to
        if not future.done():
            future.set_result(taken)
        await call._hang_up(None, replaced.side, "transferred")

    def _adopt(self, leg: CallLeg) -> None:
        self.call.legs.append(leg)
        leg.call = self.call
        leg.side = "transfer"

    async def _ask_offer(self, job: _Job, leg: CallLeg) -> None:
        """re-INVITE without SDP: the taken-over leg offers in its 2xx (RFC 3725 flow I)."""
        assert leg.dialog is not None
        request = leg.dialog.create_request("INVITE", headers=self.call.mid.session_headers(leg))
        leg.pending = ("reinvite", None)

        async def on_final(response: SipResponse) -> None:
            leg.pending = None
            if leg.dialog is not None:
                leg.dialog.update_from_response(request, response)
            if not 200 <= response.status < 300 or not response.body:
                if 200 <= response.status < 300:
                    await self.call._ack(leg, b"")
                await self.call._bye(leg)
                await self._finish(job, response.status if response.status >= 300 else 488)
                return
            leg.remote_sdp = response.body
            leg.pending = ("ack", None)
            job.winner, job.answer = leg, response
            await self._offer_to_transferee(job, leg, response.body)

        await self.call._send(leg, request, on_final)

    # -- joining Y to the new party -------------------------------------------------------

    async def _offer_to_transferee(self, job: _Job, offerer: CallLeg, offer: bytes) -> None:
        call = self.call
        y = job.transferee
        if not y.confirmed or y.dialog is None or y.pending is not None:
            await self._abandon(job, offerer, 487 if not y.confirmed else 491)
            return
        headers = [("Content-Type", "application/sdp"), *call.mid.session_headers(y)]
        if call.media.anchored:
            try:
                offer = call.media.translate(offerer, y, offer, offer=True)
            except MediaError:
                await self._abandon(job, offerer, 488)
                return
        request = y.dialog.create_request("INVITE", body=offer, headers=headers)
        y.pending = ("reinvite", offerer)

        async def on_final(response: SipResponse) -> None:
            await self._transferee_answered(job, offerer, request, response)

        await call._send(y, request, on_final)

    async def _transferee_answered(
        self, job: _Job, offerer: CallLeg, request: SipRequest, response: SipResponse
    ) -> None:
        call = self.call
        y = job.transferee
        y.pending = None
        if y.dialog is not None:
            y.dialog.update_from_response(request, response)
        if not 200 <= response.status < 300:
            await self._abandon(job, offerer, response.status)
            return
        await call._ack(y, b"")
        offerer.pending = None
        answer = response.body
        if call.media.anchored and answer:
            try:
                answer = call.media.translate(y, offerer, answer, offer=False)
            except MediaError:
                await self._abandon(job, offerer, 488)
                return
        await call._ack(offerer, answer)
        y.local_sdp, y.remote_sdp = request.body, response.body
        offerer.local_sdp = answer
        await self._complete(job, offerer)

    async def _complete(self, job: _Job, z: CallLeg) -> None:
        call = self.call
        x, y = job.transferor, job.transferee
        x.peer = None
        call._link(y, z)
        z.side = x.side
        if job.answer is not None and job.kind == "blind":
            z.session_expires, z.session_refresher = negotiate_uac(
                job.answer, call.service.settings.session_timers
            )
        call.mid.arm_session(y)
        call.mid.arm_session(z)
        self._transferred_event(job, z)
        await self._finish(job, 200)
        self.released.add(id(x))
        call.service.call_later(
            call.service.settings.transfer_grace, lambda: call.post(self._release, x)
        )

    async def _release(self, x: CallLeg) -> None:
        if x.confirmed:
            await self.call._bye(x)

    async def _abandon(self, job: _Job, offerer: CallLeg, status: int) -> None:
        """The bridge could not be made: drop the new party and tell the transferor."""
        await self.call._bye(offerer)  # ACKs first if its 2xx is still unanswered
        await self._finish(job, status)

    # -- bookkeeping ----------------------------------------------------------------------

    def leg_left(self, leg: CallLeg) -> bool:
        """A BYE from ``leg``: True when it is the transferor leaving as expected (during
        or after its transfer), so the call goes on without it."""
        job = self.job
        if id(leg) in self.released:
            return True
        if job is not None and leg is job.transferor:
            self.released.add(id(leg))
            return True
        return False

    async def _finish(self, job: _Job, status: int) -> None:
        if self.job is not job:
            return
        await self._notify(job, status, final=True)
        self.job = None
        if status >= 300:
            self._cancel_targets()
            if not job.transferor.active and self.call.state is CallState.ANSWERED:
                await self.call._hang_up(None, "system", "transfer-failed", status)

    def _cancel_targets(self) -> None:
        for leg in self._targets(ringing_only=True):
            self.call._cancel_fork(leg)

    async def _notify(self, job: _Job, status: int, final: bool) -> None:
        x = job.transferor
        if not job.notify or not x.confirmed or x.dialog is None:
            return
        reason = REASON_PHRASES.get(status, "")
        state = "terminated;reason=noresource" if final else "active;expires=60"
        request = x.dialog.create_request(
            "NOTIFY",
            body=f"SIP/2.0 {status} {reason}\r\n".encode(),
            headers=[
                ("Event", "refer"),
                ("Subscription-State", state),
                ("Content-Type", "message/sipfrag;version=2.0"),
            ],
        )
        await self.call._send(x, request, lambda _response: None)

    def _transferred_event(self, job: _Job, z: CallLeg) -> None:
        call = self.call
        by = job.transferor.account
        to = z.account
        call.audience.add(by.user_id if by else None, to.user_id if to else None)
        call._emit(
            lambda at, aud: ev.CallTransferred(
                tenant_id=call.route.tenant_id,
                at=at,
                audience=aud,
                call_id=call.id,
                mode=job.kind,
                side=job.transferor.side,
                target=job.target,
                by_user_id=by.user_id if by else None,
                to_account_id=to.id if to else None,
                to_user_id=to.user_id if to else None,
                replaced_call_id=job.replaced,
            )
        )


def _number_of(leg: CallLeg) -> str:
    if leg.account is not None:
        return str(leg.account.extension)
    if leg.dialog is not None:
        return uri_user(leg.dialog.remote.uri) or ""
    return ""
