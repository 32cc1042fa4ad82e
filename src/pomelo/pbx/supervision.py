"""Supervisor listen, whisper and barge on a live call.

The supervisor is called on his own phones (or browser) as a third leg of the call. When he
answers, the call's media moves from the two-party relay to a
:class:`~pomelo.media.bridge.MixBridge` whose hearing rules say who hears whom:

* listen — the supervisor hears client and employee; nobody hears him;
* whisper — the employee hears him too, the client does not;
* barge — everybody hears everybody.

The mode can change at any time (one API call, no SIP signalling: the mix changes on the next
20 ms tick). When the supervisor hangs up the call goes back to the relay; when the call ends
his leg is hung up with it.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from pomelo.media.bridge import MixBridge
from pomelo.media.mixer import SupervisorMode, supervise
from pomelo.pbx.anchor import MediaError, learn_answer, media_of
from pomelo.pbx.legs import CallState, LegEvent
from pomelo.sip.dialog import Dialog

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call
    from pomelo.pbx.legs import CallLeg
    from pomelo.sip.message import SipResponse

__all__ = ["Supervision", "SupervisionError", "SupervisorMode"]

log = logging.getLogger(__name__)

SUPERVISOR = "supervisor"
CLIENT = "client"
EMPLOYEE = "employee"


class SupervisionError(RuntimeError):
    """The call cannot be supervised now; ``reason`` is a stable identifier."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Phase(enum.Enum):
    RINGING = "ringing"
    ACTIVE = "active"


class Supervision:
    """At most one supervisor per call (a second request takes over the mode)."""

    __slots__ = ("bridge", "call", "mode", "phase", "user_id")

    def __init__(self, call: Call, user_id: str, mode: SupervisorMode) -> None:
        self.call = call
        self.user_id = user_id
        self.mode = mode
        self.phase = Phase.RINGING
        self.bridge: MixBridge | None = None

    async def start(self) -> None:
        call = self.call
        service = call.service
        directory = service.router.directory
        account_ids = await directory.accounts_of_user(call.route.tenant_id, self.user_id)
        cache = service.router.cache
        rung = 0
        for account_id in account_ids:
            account = cache.account_by_id(account_id)
            if account is None or not account.enabled:
                continue
            for contact in service.location.contacts(account.id):
                await call.dialer.fork(account, contact, side=SUPERVISOR)
                rung += 1
        if not rung:
            call.supervision = None
            raise SupervisionError("supervisor-unreachable", "the supervisor has no phone online")

    def set_mode(self, mode: SupervisorMode) -> None:
        self.mode = mode
        if self.bridge is not None:
            supervise(self.bridge.mixer, SUPERVISOR, CLIENT, EMPLOYEE, mode)

    async def answered(self, leg: CallLeg, response: SipResponse) -> None:
        call = self.call
        leg.fire(LegEvent.ANSWERED)
        leg.dialog = Dialog.from_uac(leg.invite_request, response)
        leg.remote_sdp = response.body
        call._stop_ring(leg)
        for other in call.legs:
            if other is not leg and other.side == SUPERVISOR and other.ringing:
                call._cancel_fork(other)
        media = media_of(leg)
        try:
            if media is None or not response.body:
                raise MediaError("no SDP in the answer")
            learn_answer(media, response.body)
        except MediaError as exc:
            log.info("call %s: supervisor's answer unusable: %s", call.id, exc)
            await call._drop_late_answer_confirmed(leg)
            return
        await call._ack(leg, b"")
        if call.state is not CallState.ANSWERED or call.winner is None:
            await call._bye(leg)
            return
        self._bridge(leg)

    def _bridge(self, leg: CallLeg) -> None:
        call = self.call
        engine = call.service.media
        client_leg = call.media.client_leg()
        employee_leg = call.winner if client_leg is call.a else call.a
        parts = [
            (CLIENT, media_of(client_leg) if client_leg else None),
            (EMPLOYEE, media_of(employee_leg) if employee_leg else None),
            (SUPERVISOR, media_of(leg)),
        ]
        if engine is None or any(m is None for _, m in parts):
            return
        for _, media in parts:
            assert media is not None
            call.media.unlink(media)
        bridge = MixBridge(engine.clock)
        for pid, media in parts:
            assert media is not None
            bridge.add(pid, media.session)
        bridge.client = CLIENT
        bridge.recorder = call.media.recorder
        self.bridge = bridge
        self.phase = Phase.ACTIVE
        supervise(bridge.mixer, SUPERVISOR, CLIENT, EMPLOYEE, self.mode)
        call.media.watch(leg)

    def left(self, leg: CallLeg | None) -> None:
        """The supervisor hung up, was hung up (``leg`` None), or his phone never answered:
        the call goes back to the relay."""
        call = self.call
        others = [o for o in call.legs if o is not leg and o.side == SUPERVISOR]
        if leg is not None and any(o.ringing or o.confirmed for o in others):
            return
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
        call.supervision = None
        if call.state is CallState.ANSWERED and call.winner is not None:
            call.media.link(call.a, call.winner)

    def stop(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None
