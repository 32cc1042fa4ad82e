"""The B2BUA core: every call is a set of legs the PBX controls.

The caller's INVITE ends at the PBX (the UAS leg); the PBX places its own INVITEs (UAC legs)
to every registered phone of the callee in parallel, or to a trunk, and relays between the
legs what the two ends need to talk: provisional responses with early media, the answer,
re-INVITE/UPDATE offers (hold), INFO and NOTIFY, and BYE. SDP is translated per leg: every
leg's media ends on the PBX's own RTP sockets (:mod:`pomelo.pbx.call_media`). Because the PBX
is a party to every dialog, it can also end calls on its own (maximum duration, missed session
refresh, RTP timeout), transfer them, supervise and record them.

**Concurrency.** Each :class:`Call` owns one asyncio task and one queue. Everything that
happens to a call — a request or response on any of its legs, a CANCEL, an ACK, a timer —
is posted to that queue and handled in order by that task, so handlers never see a call
half-way through another event, and a slow step (a database lookup while routing) delays
only its own call. Nothing on this path writes to the database: events and the CDR go to
the :class:`~pomelo.pbx.cdr.CallRecorder`, which writes them from its own task.

**Timers** run on an injectable scheduler (an asyncio loop by default) and only post to the
call's queue, so tests can drive ring timeouts and session timers without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pomelo.core.clock import Clock
from pomelo.core.events import Audience, DomainEvent
from pomelo.core.ids import new_id
from pomelo.media.mixer import SupervisorMode
from pomelo.pbx import call_events as ev
from pomelo.pbx.anchor import learn_answer, media_of
from pomelo.pbx.call_media import CallMedia, MediaError
from pomelo.pbx.cdr import CallAudience, CallRecorder, call_record
from pomelo.pbx.cdr_models import CallRecord
from pomelo.pbx.conference import ConferenceRoom, Conferences
from pomelo.pbx.dialer import ALLOW, Dialer
from pomelo.pbx.ivr import Ivr, MenuPlan
from pomelo.pbx.legs import CALL_TRANSITIONS as _CALL_TABLE
from pomelo.pbx.legs import (
    RING_TIMEOUT,
    CallEvent,
    CallLeg,
    CallState,
    LegEvent,
    LegRole,
    LegState,
    caller_status,
    disposition_for,
    step,
    try_step,
)
from pomelo.pbx.location import Location
from pomelo.pbx.midcall import MidCall, allow_of, content_headers, holds
from pomelo.pbx.reliable import ReliableProvisionals, requires_100rel
from pomelo.pbx.routing import (
    ExtensionOrigin,
    Origin,
    Refusal,
    Route,
    Router,
    provisional_route,
)
from pomelo.pbx.session_timer import (
    SessionTimerPolicy,
    negotiate_uac,
    negotiate_uas,
    too_small,
)
from pomelo.pbx.sipcache import AccountInfo, TrunkInfo
from pomelo.pbx.supervision import Supervision, SupervisionError
from pomelo.sip.dialog import Dialog, DialogError
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.errors import SipParseError
from pomelo.sip.message import SipRequest, SipResponse, make_response
from pomelo.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    Scheduler,
    ServerTransaction,
    TimerHandle,
)
from pomelo.sip.transport import Source, Target, Transport, TransportError
from pomelo.sip.uri import NameAddr, SipUri

if TYPE_CHECKING:
    from pomelo.media.engine import MediaEngine
    from pomelo.media.tts import TextToSpeech
    from pomelo.pbx.server import SipServer
    from pomelo.recordings.service import RecordingCatalog

__all__ = ["Call", "CallService", "CallSettings", "TrunkPassword"]

log = logging.getLogger(__name__)

SUPPORTED_OPTIONS = frozenset({"timer", "100rel"})
TrunkPassword = Callable[[TrunkInfo], str | None]
Handler = Callable[..., Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class CallSettings:
    ring_timeout: float = 30.0
    """Seconds a phone may ring before its fork is cancelled (480 when none answered)."""
    outbound_ring_timeout: float = 120.0
    max_duration: float = 4 * 3600.0
    """Seconds after the answer at which the PBX ends the call (BYE both legs)."""
    session_timers: SessionTimerPolicy = field(default_factory=SessionTimerPolicy)
    reap_after: float = 40.0
    """After the outcome is known, legs still not cleared by then are dropped."""
    transfer_grace: float = 2.0
    """After a transfer, seconds the transferor has to hang up before the PBX does."""
    max_calls: int = 20_000


class CallService:
    """Entry points the SIP server dispatches to, and the registry of live calls."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        router: Router,
        location: Location,
        recorder: CallRecorder,
        *,
        clock: Clock,
        settings: CallSettings | None = None,
        scheduler: Scheduler | None = None,
        trunk_password: TrunkPassword | None = None,
        media: MediaEngine | None = None,
        tts: TextToSpeech | None = None,
        recordings: RecordingCatalog | None = None,
        music_on_hold: npt.NDArray[np.int16] | None = None,
        prompts_dir: Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.media = media
        self.tts = tts
        self.recordings = recordings
        self.music_on_hold = music_on_hold
        self.prompts_dir = prompts_dir
        """Recorded menu prompts (``prompt.file`` of a scenario) live here."""
        self.conferences = Conferences(self)
        """Looped to a leg its peer put on hold (None: the held phone hears silence)."""
        self._background: set[asyncio.Task[None]] = set()
        self.router = router
        self.location = location
        self.recorder = recorder
        self.clock = clock
        self.settings = settings or CallSettings()
        self._scheduler = scheduler
        self.trunk_password: TrunkPassword = trunk_password or (lambda _trunk: None)
        self.calls: dict[str, Call] = {}
        self.legs: dict[tuple[str, str], CallLeg] = {}
        self._setups: dict[tuple[str, str], Call] = {}

    def install(self, server: SipServer) -> None:
        """Route the call methods of ``server`` here."""
        server.route("INVITE", self.handle_invite)
        for method in ("BYE", "UPDATE", "INFO", "NOTIFY", "REFER", "PRACK"):
            server.route(method, self.handle_in_dialog)
        server.on_ack(self.on_ack)

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        scheduler = self._scheduler
        if scheduler is None:
            scheduler = self._scheduler = asyncio.get_running_loop()
        return scheduler.call_later(delay, callback)

    # -- entry points (plain functions: no task unless a call is created) ----------------

    def handle_invite(self, tx: ServerTransaction) -> None:
        request = tx.request
        if request.to.tag:
            self.handle_in_dialog(tx)
            return
        problem = self._precheck(request)
        if problem is not None:
            _refuse(tx, problem)
            return
        origin = self.router.identify(request, tx.source.remote[0])
        if isinstance(origin, Refusal):
            _refuse(tx, origin)
            return
        policy = self.settings.session_timers
        if too_small(request, policy):
            tx.reply(422, headers=[("Min-SE", str(policy.min_se))])
            return
        tx.reply(100)
        Call(self, tx, origin)

    def _precheck(self, request: SipRequest) -> Refusal | None:
        try:  # URIs are parsed lazily: make a malformed one a 400 here, not a 500 later
            _ = (request.uri, request.from_.uri, request.to.uri, request.contacts[0].uri)
        except (SipParseError, IndexError):
            return Refusal(400, "Malformed URI or Missing Contact")
        if request.max_forwards == 0:
            return Refusal(483)
        unsupported = _unsupported(request)
        if unsupported:
            return Refusal(420, headers=(("Unsupported", ", ".join(unsupported)),))
        if (request.call_id, request.from_.tag or "") in self._setups:
            return Refusal(482)
        if len(self.calls) >= self.settings.max_calls:
            return Refusal(503, headers=(("Retry-After", "5"),))
        return None

    def handle_in_dialog(self, tx: ServerTransaction) -> None:
        """BYE, re-INVITE, UPDATE, INFO, NOTIFY, REFER: to the call owning the dialog."""
        request = tx.request
        leg = self.legs.get((request.call_id, request.to.tag or ""))
        if leg is None or not leg.active:
            tx.reply(481)
            return
        call: Call = leg.call
        call.post(call.on_request, leg, tx)

    handle_bye = handle_in_dialog

    def on_ack(self, request: SipRequest, source: Source) -> None:
        """ACKs for 2xx (they belong to no transaction) go to the leg's call."""
        leg = self.legs.get((request.call_id, request.to.tag or ""))
        if leg is not None:
            call: Call = leg.call
            call.post(call.on_ack, leg, request)

    # -- bookkeeping ----------------------------------------------------------------------

    def register(self, leg: CallLeg, call: Call) -> None:
        leg.call = call
        self.legs[leg.key] = leg

    def started(self, call: Call) -> None:
        self.calls[call.id] = call
        self._setups[call.setup_key] = call

    def setup_done(self, call: Call) -> None:
        if self._setups.get(call.setup_key) is call:
            del self._setups[call.setup_key]

    def forget(self, call: Call) -> None:
        self.calls.pop(call.id, None)
        self.setup_done(call)
        for leg in call.legs:
            if self.legs.get(leg.key) is leg and leg.call is call:
                del self.legs[leg.key]

    def live_call(self, tenant_id: str, call_id: str) -> Call | None:
        call = self.calls.get(call_id)
        if call is None or call.route.tenant_id != tenant_id or not call.live:
            return None
        return call

    async def supervise(self, call: Call, user_id: str, mode: SupervisorMode | None) -> str:
        """Ask ``call``'s task to call the supervisor in (``mode``) or out (None)."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if mode is None:
            call.post(call.end_supervision, done)
        else:
            call.post(call.supervise, user_id, mode, done)
        return await asyncio.wait_for(done, 10)

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work that outlives a call (cataloguing its recording), logging failures."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("background call work failed", exc_info=task.exception())

        task.add_done_callback(done)

    def contact_for(self, transport: Transport) -> NameAddr:
        host, port = transport.sent_by
        params: dict[str, str | None] = {}
        if transport.name != "UDP":
            params["transport"] = transport.name.lower()
        return NameAddr(SipUri(host, user="pomelo", port=port, params=params))

    async def stop(self) -> None:
        """Hang up every call (shutdown) and wait for their records to be written."""
        for call in list(self.calls.values()):
            call.post(call.shutdown)
        for _ in range(50):
            if not self.calls:
                break
            await asyncio.sleep(0.02)
        for call in list(self.calls.values()):
            call.task.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        await self.recorder.drain()


def _refuse(tx: ServerTransaction, refusal: Refusal) -> None:
    tx.reply(refusal.status, refusal.reason, headers=refusal.headers)


def _unsupported(request: SipRequest) -> list[str]:
    tags: list[str] = []
    for value in request.header_values("Require"):
        tags += [t.strip().lower() for t in value.split(",") if t.strip()]
    return [t for t in tags if t not in SUPPORTED_OPTIONS]


class Call:
    """One call: its legs, its queue and task, and what its record will say."""

    __slots__ = (
        "a",
        "answered_at",
        "audience",
        "conference",
        "dialer",
        "disposition",
        "ended_at",
        "hangup",
        "id",
        "ivr",
        "legs",
        "media",
        "mid",
        "origin",
        "queue",
        "rang",
        "reaper",
        "reliable",
        "route",
        "service",
        "setup_key",
        "started_at",
        "state",
        "supervision",
        "task",
        "timer",
        "transfers",
        "winner",
    )

    def __init__(self, service: CallService, tx: ServerTransaction, origin: Origin) -> None:
        request = tx.request
        self.id = new_id()
        self.service = service
        self.origin = origin
        self.started_at = service.clock.now()
        self.answered_at: Any = None
        self.ended_at: Any = None
        self.state = CallState.OFFERED
        self.queue: asyncio.Queue[tuple[Handler, tuple[Any, ...]]] = asyncio.Queue()
        self.route: Route = provisional_route(origin, request)
        self.audience = CallAudience(origin.tenant.id)
        self.disposition = "failed"
        self.hangup: tuple[str | None, int | None, str | None] = (None, None, None)
        self.rang: set[str] = set()
        self.winner: CallLeg | None = None
        self.timer: TimerHandle | None = None
        self.reaper: TimerHandle | None = None
        self.transfers: Any = None
        self.mid = MidCall(self)
        self.dialer = Dialer(self)
        self.media = CallMedia(self, service.media)
        self.ivr: Ivr | None = None
        self.supervision: Supervision | None = None
        self.conference: ConferenceRoom | None = None
        self.reliable = ReliableProvisionals(self) if requires_100rel(request) else None
        self.setup_key = (request.call_id, request.from_.tag or "")
        self.legs: list[CallLeg] = []
        self.a = self._caller_leg(tx, origin)
        service.started(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def _caller_leg(self, tx: ServerTransaction, origin: Origin) -> CallLeg:
        request = tx.request
        leg = CallLeg(LegRole.UAS, "caller", (request.call_id, tx.local_tag))
        leg.tx = tx
        leg.invite = request
        leg.flow = Target(tx.source.transport, tx.source.remote, tx.source.connection)
        leg.local_contact = self.service.contact_for(tx.source.transport)
        leg.remote_sdp = request.body
        leg.allow = allow_of(request)
        if isinstance(origin, ExtensionOrigin):
            leg.account = origin.account
        leg.fire(LegEvent.INVITE_RECEIVED)
        self._add_leg(leg)
        tx.on_cancel = lambda _tx, _cancel: self.post(self._on_cancel)
        tx.on_terminated = self._on_caller_tx_end
        return leg

    def _add_leg(self, leg: CallLeg) -> None:
        self.legs.append(leg)
        self.service.register(leg, self)

    # -- the task -------------------------------------------------------------------------

    def post(self, handler: Handler, *args: Any) -> None:
        """Queue ``handler(*args)`` to run in this call's task, after what is queued."""
        self.queue.put_nowait((handler, args))

    async def _run(self) -> None:
        try:
            await self._apply(self._setup, ())
            while self.state is not CallState.ENDED:
                handler, args = await self.queue.get()
                await self._apply(handler, args)
        finally:
            self._stop_timers()
            if self.reliable is not None:
                self.reliable.stop()
            if self.ivr is not None:
                self.ivr.stop()
            if self.supervision is not None:
                self.supervision.stop()
            if self.conference is not None:
                self.service.conferences.leave(self, self.conference)
                self.conference = None
            self.media.close()
            self.service.forget(self)

    async def _apply(self, handler: Handler, args: tuple[Any, ...]) -> None:
        try:
            result = handler(*args)
            if result is not None:
                await result
        except Exception:
            log.exception("call %s: %s failed; ending the call", self.id, handler)
            await self._abort("internal-error")
        if self.state is CallState.ENDING and not any(leg.active for leg in self.legs):
            self._fire(CallEvent.CLEARED)

    def _fire(self, event: CallEvent) -> None:
        new = try_step(_CALL_TABLE, self.state, event)
        if new is None:
            new = step(_CALL_TABLE, self.state, event, f"call {self.id}")
        self.state = new

    @property
    def live(self) -> bool:
        """Not yet decided (ringing) or in progress (answered)."""
        return self.state in (CallState.OFFERED, CallState.RINGING, CallState.ANSWERED)

    @property
    def deciding(self) -> bool:
        return self.state in (CallState.OFFERED, CallState.RINGING)

    # -- setup ----------------------------------------------------------------------------

    async def _setup(self) -> None:
        service = self.service
        try:
            decision = await service.router.route(self.origin, self.a.invite_request)
        finally:
            service.setup_done(self)
        if isinstance(decision, Refusal):
            self._offered()
            self._fail_caller(decision.status, decision.reason, decision.cause)
            return
        self.route = decision
        self.audience.add(decision.caller.user_id if decision.caller else None)
        self.audience.add(decision.callee_user_id)
        if decision.group_id:
            self.audience.group_ids.add(decision.group_id)
        self._offered()
        if not self.a.ringing:
            return  # cancelled while routing
        if not await self._open_caller_media():
            return
        if decision.menu is not None:
            await self._run_menu(decision.menu)
            return
        if decision.conference is not None:
            await self._join_conference(decision.conference)
            return
        if decision.outbound is not None:
            await self.dialer.dial_trunk(decision.outbound)
        else:
            await self.dialer.ring(decision.accounts)
        self._check_forks()

    async def _open_caller_media(self) -> bool:
        """Anchor the caller's media; a caller offering nothing we can use gets 488."""
        if not self.media.anchored:
            return True
        await self.media.open(self.a)
        try:
            self.media.learn_offer(self.a, self.a.invite_request.body)
        except MediaError as exc:
            log.info("call %s: %s", self.id, exc)
            self._fail_caller(488, None, "incompatible-media")
            return False
        return True

    async def on_media_timeout(self, leg: CallLeg) -> None:
        """The leg's peer stopped sending RTP: it is gone (the CDR says rtp-timeout)."""
        if not leg.confirmed:
            return
        log.info("call %s: no RTP from %s, hanging up", self.id, leg.side)
        if self.state is CallState.ANSWERED:
            await self._hang_up(None, "system", "rtp-timeout")
        elif leg is self.a and self.deciding:
            await self.give_up("rtp-timeout", disposition="failed", side="system")

    # -- the PBX answers first: menus ---------------------------------------------------

    def _answer_by_pbx(self) -> bool:
        """The PBX itself answers the caller from his media anchor (menu, conference room):
        200 with our SDP, his leg confirmed. False when that failed (he has been told)."""
        a = self.a
        if a.tx is None:
            return False
        try:
            body = self.media.answer_locally(a)
        except MediaError as exc:
            log.info("call %s: %s", self.id, exc)
            self._fail_caller(488, None, "incompatible-media")
            return False
        headers = [("Allow", ALLOW), ("Content-Type", "application/sdp")]
        sent = a.tx.reply(200, body=body, headers=headers, contact=a.local_contact)
        if sent is None:
            return False
        a.fire(LegEvent.ANSWERED)
        a.dialog = Dialog.from_uas(a.invite_request, sent)
        a.local_sdp = body
        return True

    async def _run_menu(self, plan: MenuPlan) -> None:
        if not self._answer_by_pbx():
            return
        await self.media.start_recording()
        self.ivr = Ivr(self, plan)
        await self.ivr.start(self.service.tts)

    async def _join_conference(self, room: str) -> None:
        """The PBX answers and mixes the caller into the room (the call counts as answered
        by the PBX: no employee, no winner leg)."""
        if not self.media.anchored:
            self._fail_caller(503, None, "media-off")
            return
        if not self._answer_by_pbx():
            return
        self.answered_at = self.service.clock.now()
        self._fire(CallEvent.ANSWERED)
        self.timer = self.service.call_later(
            self.service.settings.max_duration, lambda: self.post(self._on_max_duration)
        )
        self.conference = await self.service.conferences.join(self, room)

    async def ring_group(self, group_id: str) -> None:
        """After a menu choice: ring the group as if it had been dialled."""
        if not self.deciding or not self.a.confirmed:
            return
        decision = await self.service.router.to_group(self.route, group_id)
        if isinstance(decision, Refusal):
            await self.give_up(decision.cause or "nobody-to-ring")
            return
        self.route = decision
        self.audience.group_ids.add(group_id)
        await self.dialer.ring(decision.accounts)
        self._check_forks()

    async def give_up(
        self, cause: str, *, disposition: str = "missed", side: str = "system"
    ) -> None:
        """End a call the PBX answered itself (menu, queue) before any employee did."""
        if not self.deciding:
            return
        if self.ivr is not None:
            self.ivr.stop()
        self._end(disposition, side, None, cause)
        self._cancel_forks()
        if self.a.confirmed:
            await self._bye(self.a, cause)

    # -- supervision ----------------------------------------------------------------------

    async def supervise(
        self, user_id: str, mode: SupervisorMode, done: asyncio.Future[str]
    ) -> None:
        """Call the supervisor in (or change the mode of the one already there)."""
        try:
            if self.state is not CallState.ANSWERED:
                raise SupervisionError("call-not-answered", "only answered calls can be supervised")
            current = self.supervision
            if current is not None:
                current.set_mode(mode)
                done.set_result(current.phase.value)
                return
            self.supervision = Supervision(self, user_id, mode)
            await self.supervision.start()
            done.set_result(self.supervision.phase.value)
        except SupervisionError as exc:
            if not done.done():
                done.set_exception(exc)

    async def end_supervision(self, done: asyncio.Future[str]) -> None:
        supervision = self.supervision
        if supervision is None:
            done.set_exception(SupervisionError("not-supervised", "nobody supervises this call"))
            return
        for leg in list(self.legs):
            if leg.side == "supervisor":
                if leg.confirmed:
                    await self._bye(leg)
                elif leg.ringing:
                    self._cancel_fork(leg)
        supervision.left(None)
        done.set_result("ended")

    def _supervisor_gone(self, leg: CallLeg) -> None:
        if self.supervision is not None:
            self.supervision.left(leg)

    async def _join_after_menu(self, b: CallLeg, response: SipResponse) -> None:
        """An employee answered a call the PBX had answered already: join b to the
        caller's session (no re-INVITE of the caller: his media never left the PBX)."""
        b_media = media_of(b)
        try:
            if b_media is None or not response.body:
                raise MediaError("the answer carries no SDP")
            learn_answer(b_media, response.body)
        except MediaError as exc:
            log.info("call %s: callee's answer unusable: %s", self.id, exc)
            await self._drop_late_answer_confirmed(b)
            b.outcome = 488
            self._check_forks()
            return
        if self.ivr is not None:
            self.ivr.stop()
        self.media.link(self.a, b)
        await self._ack(b, b"")
        b.session_expires, b.session_refresher = negotiate_uac(
            response, self.service.settings.session_timers
        )
        self._link(self.a, b)
        self._answered(b)
        self.media.watch(b)
        self.mid.arm_session(b)

    # -- responses to our INVITEs ---------------------------------------------------------

    async def _on_invite_response(
        self, leg: CallLeg, tx: ClientTransaction, response: SipResponse
    ) -> None:
        if leg.call is not self:
            leg.call.post(leg.call._on_invite_response, leg, tx, response)
            return
        status = response.status
        if status < 200:
            if status > 100 and tx is leg.client_tx:
                self._on_provisional(leg, response)
        elif status < 300:
            await self._on_answer(leg, response)
        elif tx is leg.client_tx:
            await self._on_fork_failure(leg, response)

    def _on_provisional(self, leg: CallLeg, response: SipResponse) -> None:
        if leg.state is LegState.TERMINATING:
            return
        if not leg.ringing:
            return
        leg.fire(LegEvent.PROVISIONAL)
        if leg.side == "supervisor":
            return
        if leg.side == "transfer":
            self._transfers().progress(leg, response)
            return
        a = self.a
        if a.ringing and a.tx is not None:
            body = response.body
            if body and self.media.anchored:
                body = self._early_media(leg, body)
            if self.reliable is not None:
                headers = content_headers(response) if body else []
                sent = self.reliable.send(response.status, response.reason, body, headers)
            else:
                sent = a.tx.reply(
                    response.status,
                    response.reason,
                    body=body,
                    headers=content_headers(response),
                    contact=a.local_contact,
                )
            if sent is not None:
                a.fire(LegEvent.PROVISIONAL)
                if body:
                    a.local_sdp = body
        self._rang(leg)

    def _early_media(self, leg: CallLeg, body: bytes) -> bytes:
        """SDP in a provisional answers our offer to the fork: join the caller to it.
        Without an offer from the caller it would be an offer, which needs PRACK: drop it."""
        if not self.a.invite_request.body:
            return b""
        try:
            return self.media.translate(leg, self.a, body, offer=False)
        except MediaError as exc:
            log.info("call %s: early media ignored: %s", self.id, exc)
            return b""

    def _rang(self, leg: CallLeg) -> None:
        if self.deciding:
            self._fire(CallEvent.RANG)
        account: AccountInfo | None = leg.account
        key = account.id if account else leg.key[1]
        if key in self.rang:
            return
        self.rang.add(key)
        user_id = account.user_id if account else None
        self.audience.add(user_id)
        account_id = account.id if account else None
        self._emit(
            lambda at, aud: ev.CallRingingStarted(
                tenant_id=self.route.tenant_id,
                at=at,
                audience=aud,
                call_id=self.id,
                account_id=account_id,
                user_id=user_id,
            )
        )

    async def _on_answer(self, leg: CallLeg, response: SipResponse) -> None:
        if leg.dialog is not None or leg.state is LegState.ENDED:
            self._resend_ack(leg)  # a retransmitted 2xx
            return
        if leg.side == "supervisor" and leg.ringing and self.supervision is not None:
            await self.supervision.answered(leg, response)
            return
        if leg.state is LegState.TERMINATING or not self.deciding or leg.side == "transfer":
            if leg.side == "transfer" and leg.ringing:
                await self._transfers().answered(leg, response)
                return
            await self._drop_late_answer(leg, response)
            return
        leg.fire(LegEvent.ANSWERED)
        leg.dialog = Dialog.from_uac(leg.invite_request, response)
        leg.remote_sdp = response.body
        leg.allow = allow_of(response)
        self._stop_ring(leg)
        self._cancel_forks(except_leg=leg)
        await self._answer_caller(leg, response)

    async def _drop_late_answer(self, leg: CallLeg, response: SipResponse) -> None:
        """A 2xx nobody wants (the call was cancelled, or another phone answered first):
        complete the handshake (ACK) and hang up at once (BYE), RFC 3261 §15."""
        leg.fire(LegEvent.LATE_ANSWER if leg.state is LegState.TERMINATING else LegEvent.ANSWERED)
        self._stop_ring(leg)
        leg.dialog = Dialog.from_uac(leg.invite_request, response)
        await self._ack(leg, leg.local_sdp if not leg.invite_request.body else b"")
        await self._bye(leg)

    async def _answer_caller(self, b: CallLeg, response: SipResponse) -> None:
        a = self.a
        if a.confirmed:
            await self._join_after_menu(b, response)
            return
        policy = self.service.settings.session_timers
        interval, we_refresh, timer_headers = negotiate_uas(a.invite_request, policy)
        headers = [
            ("Allow", ALLOW),
            ("Supported", "timer"),
            *timer_headers,
            *content_headers(response),
        ]
        sent = None
        body = response.body
        if self.media.anchored and body:
            try:
                body = self.media.translate(b, a, body, offer=not a.invite_request.body)
            except MediaError as exc:
                log.info("call %s: callee's answer unusable: %s", self.id, exc)
                await self._drop_late_answer_confirmed(b)
                b.outcome = 488
                self._check_forks()
                return
        if a.ringing and a.tx is not None:
            sent = a.tx.reply(200, body=body, headers=headers, contact=a.local_contact)
        if sent is None:
            await self._drop_late_answer_confirmed(b)
            return
        a.fire(LegEvent.ANSWERED)
        a.dialog = Dialog.from_uas(a.invite_request, sent)
        a.local_sdp = body
        a.session_expires, a.session_refresher = interval, we_refresh
        b.session_expires, b.session_refresher = negotiate_uac(response, policy)
        self._link(a, b)
        self._answered(b)
        await self.media.start_recording()
        if a.invite_request.body:
            await self._ack(b, b"")
        else:
            b.pending = ("ack", a)  # late offer: the caller's ACK carries the answer
            a.pending = ("relay-ack", b)
        self.mid.arm_session(a)
        self.mid.arm_session(b)

    async def _drop_late_answer_confirmed(self, b: CallLeg) -> None:
        await self._ack(b, b"" if b.invite_request.body else b.remote_sdp)
        await self._bye(b)

    def _link(self, a: CallLeg, b: CallLeg) -> None:
        a.peer, b.peer = b, a

    def _answered(self, b: CallLeg) -> None:
        self.winner = b
        self.answered_at = self.service.clock.now()
        self._fire(CallEvent.ANSWERED)
        account: AccountInfo | None = b.account
        user_id = account.user_id if account else None
        self.audience.add(user_id)
        self.timer = self.service.call_later(
            self.service.settings.max_duration, lambda: self.post(self._on_max_duration)
        )
        self._emit(
            lambda at, aud: ev.CallAnswered(
                tenant_id=self.route.tenant_id,
                at=at,
                audience=aud,
                call_id=self.id,
                account_id=account.id if account else None,
                user_id=user_id,
            )
        )

    async def _on_fork_failure(self, leg: CallLeg, response: SipResponse) -> None:
        status = response.status
        if leg.ringing and await self.dialer.retry(leg, response):
            return
        if leg.ringing or leg.state is LegState.TERMINATING:
            leg.fire(LegEvent.REJECTED)
            if leg.outcome is None:
                leg.outcome = status
        self._stop_ring(leg)
        if leg.side == "transfer":
            self._transfers().failed(leg, status)
            return
        if leg.side == "supervisor":
            self._supervisor_gone(leg)
            return
        self._check_forks()

    def _on_ring_timeout(self, leg: CallLeg) -> None:
        leg.ring_timer = None
        if leg.ringing:
            self._cancel_fork(leg, RING_TIMEOUT)
            if leg.side == "transfer":
                self._transfers().failed(leg, 480)
                return
            if leg.side == "supervisor":
                self._supervisor_gone(leg)
                return
            self._check_forks()

    def _check_forks(self) -> None:
        """When no fork can still answer and nobody did, the caller gets the best failure."""
        if not self.deciding:
            return
        forks = [leg for leg in self.legs if leg.role is LegRole.UAC and leg.side == "callee"]
        if any(leg.ringing for leg in forks):
            return
        if any(leg.state is LegState.TERMINATING and leg.outcome is None for leg in forks):
            return
        status = caller_status(leg.outcome for leg in forks)
        if not forks:
            cause = "no-route" if self.route.outbound else "not-registered"
        else:
            cause = "no-answer" if status == 480 else disposition_for(status).replace("_", "-")
        self._fail_caller(status, None, cause, side="callee" if forks else "system")

    def _fail_caller(
        self, status: int, reason: str | None, cause: str, side: str = "system"
    ) -> None:
        a = self.a
        if a.ringing and a.tx is not None:
            a.tx.reply(status, reason)
            a.fire(LegEvent.REJECTED)
        elif a.confirmed and self.deciding:  # the PBX had answered (menu): hang up on him
            if self.ivr is not None:
                self.ivr.stop()
            self._end(disposition_for(status), side, status, cause)
            self.post(self._bye, a, cause)
            return
        self._end(disposition_for(status), side, status, cause)

    def _cancel_forks(self, except_leg: CallLeg | None = None) -> None:
        for leg in self.legs:
            if leg is not except_leg and leg.role is LegRole.UAC and leg.ringing:
                self._cancel_fork(leg)

    def _cancel_fork(self, leg: CallLeg, outcome: int | None = 487) -> None:
        leg.fire(LegEvent.CANCEL_SENT)
        leg.outcome = outcome
        self._stop_ring(leg)
        tx = leg.client_tx
        if isinstance(tx, ClientInviteTransaction):
            tx.cancel()

    def _stop_ring(self, leg: CallLeg) -> None:
        if leg.ring_timer is not None:
            leg.ring_timer.cancel()
            leg.ring_timer = None

    # -- the caller's transaction ---------------------------------------------------------

    def _on_cancel(self) -> None:
        a = self.a
        if not a.ringing or a.tx is None:
            return
        a.tx.reply(487)
        a.fire(LegEvent.CANCEL_RECEIVED)
        self._end("cancelled", "caller", 487, "cancel")
        self._cancel_forks()

    def _on_caller_tx_end(self, tx: ServerTransaction) -> None:
        if tx.timed_out or tx.error is not None:
            self.post(self._on_caller_lost, tx.error is not None)

    async def _on_caller_lost(self, transport_error: bool) -> None:
        """Our 2xx was never ACKed (§13.3.1.4) or could not be sent: the caller is gone."""
        a = self.a
        reason = "transport-error" if transport_error else "ack-timeout"
        if a.confirmed and self.deciding:
            a.fire(LegEvent.FAILED)
            await self.give_up(reason, disposition="failed")
        elif a.confirmed:
            a.fire(LegEvent.FAILED)
            await self._hang_up(a, "system", reason)
        elif a.ringing:
            a.fire(LegEvent.FAILED)
            self._end("failed", "caller", None, reason)
            self._cancel_forks()

    # -- ACKs -----------------------------------------------------------------------------

    async def on_ack(self, leg: CallLeg, request: SipRequest) -> None:
        if leg.call is not self:
            leg.call.post(leg.call.on_ack, leg, request)
            return
        pending = leg.pending
        if not (isinstance(pending, tuple) and pending[0] == "relay-ack"):
            return
        leg.pending = None
        peer: CallLeg = pending[1]
        body = request.body
        if body:
            leg.remote_sdp = body
            on_hold = holds(body)  # a late-offer re-INVITE is answered in the ACK: hold too
            if on_hold is not None and on_hold != leg.holding and self.state is CallState.ANSWERED:
                leg.holding = on_hold
                self.mid.hold_changed(leg)
            if self.media.anchored:
                try:
                    body = self.media.translate(leg, peer, body, offer=False)
                except MediaError as exc:
                    log.info("call %s: answer in ACK unusable: %s", self.id, exc)
                    await self._hang_up(None, "system", "incompatible-media", 488)
                    return
            peer.local_sdp = body
        if peer.pending is not None and peer.pending[0] == "ack":
            peer.pending = None
            await self._ack(peer, body, request.content_type)

    async def _ack(self, leg: CallLeg, body: bytes, content_type: str | None = None) -> None:
        if leg.dialog is None:
            return
        headers = [("Content-Type", content_type or "application/sdp")] if body else []
        ack = leg.dialog.create_ack(leg.ack_cseq, body=body, headers=headers)
        try:
            await self.service.endpoint.send_ack(ack, target=leg.flow)
        except TransportError as exc:
            log.info("call %s: ACK not sent: %s", self.id, exc)
            return
        leg.ack = ack.serialize()

    def _resend_ack(self, leg: CallLeg) -> None:
        if leg.ack is not None and leg.flow is not None:
            try:
                leg.flow.send(leg.ack)
            except TransportError as exc:
                log.debug("re-ACK failed: %s", exc)

    # -- in-dialog requests ---------------------------------------------------------------

    async def on_request(self, leg: CallLeg, tx: ServerTransaction) -> None:
        if leg.call is not self:
            leg.call.post(leg.call.on_request, leg, tx)
            return
        request = tx.request
        if request.method == "BYE":
            await self._on_bye(leg, tx)
            return
        if request.method == "PRACK":
            if leg is self.a and self.reliable is not None:
                self.reliable.on_prack(tx)
            else:
                tx.reply(481)
            return
        if leg.dialog is None or not leg.active:
            if request.method == "UPDATE" and leg.ringing and self.media.anchored:
                self._early_update(leg, tx)
                return
            tx.reply(481 if request.method != "INVITE" else 491)
            return
        status = leg.dialog.check_request(request)
        if status is not None:
            tx.reply(status, headers=[("Retry-After", "1")] if status == 500 else ())
            return
        if request.method == "INFO" and self.ivr is not None and self.ivr.listening:
            await self.ivr.on_info(tx)
        elif request.method in ("INVITE", "UPDATE"):
            await self.mid.on_offer(leg, tx)
        elif request.method == "REFER":
            await self._transfers().refer(leg, tx)
        else:
            await self.mid.relay(leg, tx)

    def _early_update(self, leg: CallLeg, tx: ServerTransaction) -> None:
        """UPDATE before the answer (RFC 3311 §5.1): the PBX is this leg's media end, so it
        answers the new offer itself — the other side is not involved."""
        request = tx.request
        if not request.body:
            tx.reply(200, contact=leg.local_contact)
            return
        try:
            self.media.learn_offer(leg, request.body)
            body = self.media.answer_locally(leg)
        except MediaError as exc:
            log.info("call %s: early UPDATE refused: %s", self.id, exc)
            tx.reply(488)
            return
        leg.remote_sdp = request.body
        leg.local_sdp = body
        tx.reply(
            200,
            body=body,
            headers=[("Content-Type", "application/sdp")],
            contact=leg.local_contact,
        )

    async def _on_bye(self, leg: CallLeg, tx: ServerTransaction) -> None:
        if leg.dialog is not None and leg.dialog.check_request(tx.request) == 500:
            tx.reply(500)
            return
        tx.reply(200)
        state = leg.state
        if state not in (LegState.CONFIRMED, LegState.TERMINATING, LegState.EARLY):
            return
        leg.fire(LegEvent.BYE_RECEIVED)
        leg.cancel_timers()
        if leg is self.a and self.deciding and state is LegState.CONFIRMED:
            await self.give_up("bye", disposition="cancelled", side="caller")
            return
        if leg is self.a and state is LegState.EARLY:
            if self.a.tx is not None:
                self.a.tx.reply(487)
            self._end("cancelled", "caller", 487, "bye")
            self._cancel_forks()
            return
        if state is LegState.EARLY:
            leg.outcome = leg.outcome or 480
            self._check_forks()
            return
        if self.transfers is not None and self.transfers.leg_left(leg):
            return
        if leg.side == "supervisor":
            self._supervisor_gone(leg)
            return
        await self._hang_up(leg, leg.side, "bye")

    # -- requests we send in a dialog -----------------------------------------------------

    async def _send(
        self,
        leg: CallLeg,
        request: SipRequest,
        on_final: Callable[[SipResponse], Awaitable[None] | None],
    ) -> None:
        """Send an in-dialog request; ``on_final`` runs in this call's task with its final
        response (a synthetic 408/503 on timeout or transport failure)."""
        done = False

        def on_response(tx: ClientTransaction, response: SipResponse) -> None:
            nonlocal done
            if response.status < 200:
                return
            if done:
                if response.status < 300 and request.method == "INVITE":
                    self._resend_ack(leg)
                return
            done = True
            self.post(on_final, response)

        if request.method == "INVITE":
            leg.ack_cseq = request.cseq
        try:
            await self.service.endpoint.start_request(request, on_response, target=leg.flow)
        except TransportError:
            self.post(on_final, make_response(request, 503))

    async def _bye(self, leg: CallLeg, reason: str | None = None) -> None:
        """BYE a confirmed leg (or a UAC leg whose 2xx crossed our CANCEL)."""
        if leg.dialog is None or leg.state not in (LegState.CONFIRMED, LegState.TERMINATING):
            return
        if leg.state is LegState.TERMINATING and leg.role is LegRole.UAS:
            return  # our BYE is already on its way
        pending = leg.pending
        if isinstance(pending, tuple) and pending[0] == "ack":
            leg.pending = None
            await self._ack(leg, b"")  # the answer never came; complete the handshake first
        leg.fire(LegEvent.BYE_SENT)
        leg.cancel_timers()
        headers = [("Reason", f'SIP;cause=200;text="{reason}"')] if reason else []
        try:
            request = leg.dialog.create_request("BYE", headers=headers)
        except DialogError:
            leg.fire(LegEvent.FAILED)
            return

        def on_final(_response: SipResponse) -> None:
            if leg.state is LegState.TERMINATING:
                leg.fire(LegEvent.BYE_ANSWERED)

        await self._send(leg, request, on_final)

    # -- session timers, maximum duration ------------------------------------------------

    async def _on_max_duration(self) -> None:
        self.timer = None
        await self._hang_up(None, "system", "max-duration")

    # -- ending ---------------------------------------------------------------------------

    async def _hang_up(
        self, by: CallLeg | None, side: str, reason: str, code: int | None = None
    ) -> None:
        """The answered call is over: record who ended it, BYE every other leg."""
        if self.state is not CallState.ANSWERED:
            return
        self._end("answered", side, code, reason)
        for leg in self.legs:
            if leg is by:
                continue
            if leg.confirmed:
                await self._bye(leg, reason if side == "system" else None)
            elif leg.role is LegRole.UAC and leg.ringing:
                self._cancel_fork(leg)

    def _end(self, disposition: str, side: str | None, code: int | None, reason: str) -> None:
        if not self.live:
            return
        self.ended_at = self.service.clock.now()
        self.disposition = disposition
        self.hangup = (side, code, reason)
        self._fire(CallEvent.HUNG_UP if self.state is CallState.ANSWERED else CallEvent.FAILED)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.reaper = self.service.call_later(
            self.service.settings.reap_after, lambda: self.post(self._reap)
        )
        self._emit_ended()

    def _reap(self) -> None:
        for leg in self.legs:
            if leg.active:
                log.info("call %s: dropping leg %r that did not clear", self.id, leg)
                leg.fire(LegEvent.FAILED)
                leg.cancel_timers()

    async def _abort(self, reason: str) -> None:
        a = self.a
        if a.ringing and a.tx is not None:
            a.tx.reply(500)
            a.fire(LegEvent.REJECTED)
        if self.state is CallState.ANSWERED:
            await self._hang_up(None, "system", reason, 500)
        else:
            self._end("failed", "system", 500, reason)
            self._cancel_forks()
        if self.reaper is None:
            self.reaper = self.service.call_later(
                self.service.settings.reap_after, lambda: self.post(self._reap)
            )

    async def shutdown(self) -> None:
        if self.state is CallState.ANSWERED:
            await self._hang_up(None, "system", "shutdown")
        elif self.deciding:
            self._fail_caller(503, None, "shutdown")
            self._cancel_forks()
        self._reap()

    def _stop_timers(self) -> None:
        for timer in (self.timer, self.reaper):
            if timer is not None:
                timer.cancel()
        self.timer = self.reaper = None
        for leg in self.legs:
            leg.cancel_timers()

    # -- events and the record ------------------------------------------------------------

    def _emit(
        self,
        build: Callable[[Any, Audience], DomainEvent],
        record: CallRecord | None = None,
    ) -> None:
        at = self.service.clock.now()
        self.service.recorder.emit(self.audience, lambda aud: build(at, aud), record)

    def _offered(self) -> None:
        route = self.route
        callee: AccountInfo | None = route.callee
        self._emit(
            lambda at, aud: ev.CallOffered(
                tenant_id=route.tenant_id,
                at=at,
                audience=aud,
                call_id=self.id,
                direction=route.direction,
                from_number=route.from_number,
                to_number=route.to_number,
                did=route.did,
                caller_account_id=route.caller.id if route.caller else None,
                caller_user_id=route.caller.user_id if route.caller else None,
                callee_account_id=callee.id if callee else None,
                callee_user_id=route.callee_user_id,
                trunk_id=route.trunk.id if route.trunk else None,
            )
        )

    def _emit_ended(self) -> None:
        record = self.record()
        side, code, reason = self.hangup
        self._emit(
            lambda at, aud: ev.CallEnded(
                tenant_id=self.route.tenant_id,
                at=at,
                audience=aud,
                call_id=self.id,
                disposition=record.disposition,
                hangup_side=side,
                hangup_code=code,
                hangup_reason=reason,
                duration=record.duration,
                talk_time=record.talk_time,
            ),
            record,
        )

    def record(self) -> CallRecord:
        """The CDR row as of now."""
        return call_record(self)

    def _transfers(self) -> Any:
        if self.transfers is None:
            from pomelo.pbx.transfer import Transfers

            self.transfers = Transfers(self)
        return self.transfers

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.state.value} legs={len(self.legs)}>"
