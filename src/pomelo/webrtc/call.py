"""One call of a browser phone: a WebRTC leg towards the page, a SIP leg towards the B2BUA.

Outgoing, the page sends ``call`` and its offer; the gateway answers it with aiortc, opens
its RTP socket and INVITEs the B2BUA as the employee's SIP account (answering the 407 from
the account's HA1). Incoming, the B2BUA forks a call to the contact the session registered;
the page hears ``incoming`` and accepts (``answer`` + its offer) or declines (486).

Signalling callbacks from the SIP stack are plain functions; anything that must wait (ACK,
BYE, closing the peer connection) runs as a task the gateway keeps. A hang-up while an INVITE
is pending CANCELs it, and a 2xx that crosses the CANCEL is ACKed and BYEd, so no call is
left up at the PBX behind the page's back.
"""

from __future__ import annotations

import enum
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from pomelo.media.dtmf import DtmfError
from pomelo.media.session import MediaPortsExhausted, RtpSession
from pomelo.sip.dialog import Dialog, DialogError
from pomelo.sip.digest import DigestError
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    ServerTransaction,
    new_tag,
)
from pomelo.sip.uri import NameAddr, SipUri
from pomelo.webrtc.peer import BadOffer, BrowserPeer
from pomelo.webrtc.sipside import (
    MediaMismatch,
    SipMedia,
    answer_offer,
    authorization,
    build_offer,
    reachable_host,
    read_answer,
)

if TYPE_CHECKING:
    from pomelo.webrtc.gateway import PhoneSession

__all__ = ["ALLOW", "BrowserCall", "CallError", "CallState", "end_reason"]

log = logging.getLogger(__name__)

ALLOW: Final = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY"
DIALLABLE: Final = re.compile(r"\+?[0-9*#]{1,32}")
DIGITS: Final = frozenset("0123456789*#ABCD")
_SDP = ("Content-Type", "application/sdp")


class CallState(enum.Enum):
    NEW = "new"  # outgoing: waiting for the page's offer
    DIALING = "dialing"  # INVITE sent
    RINGING = "ringing"  # outgoing: the far end rings; incoming: the page rings
    ANSWERING = "answering"  # incoming: the page accepted, media being set up
    ANSWERED = "answered"
    ENDED = "ended"


_REASONS: Final = {
    403: "forbidden",
    404: "not-found",
    408: "no-answer",
    480: "unavailable",
    484: "not-found",
    486: "busy",
    487: "cancelled",
    488: "incompatible",
    600: "busy",
    603: "declined",
    604: "not-found",
    606: "incompatible",
}


def end_reason(status: int) -> str:
    """What the page is told for a final SIP status that ended the call."""
    return _REASONS.get(status, "failed")


class CallError(Exception):
    """A page request this call cannot honour; reported to the page, the call goes on."""

    def __init__(self, error_id: str, detail: str) -> None:
        super().__init__(detail)
        self.error_id = error_id
        self.detail = detail


class BrowserCall:
    """See the module docstring. ``id`` is what the page uses to tell calls apart."""

    __slots__ = (
        "_ack",
        "_late_offer",
        "_sdp",
        "_sdp_version",
        "_session_id",
        "dialog",
        "direction",
        "id",
        "invite",
        "invite_tx",
        "key",
        "media",
        "peer",
        "remote",
        "rtp",
        "server_tx",
        "session",
        "state",
        "to",
    )

    def __init__(self, session: PhoneSession, direction: str) -> None:
        self.id = secrets.token_hex(8)
        self.session = session
        self.direction = direction
        self.state = CallState.NEW
        self.to = ""
        self.remote = ""
        self.peer: BrowserPeer | None = None
        self.rtp: RtpSession | None = None
        self.media: SipMedia | None = None
        self.dialog: Dialog | None = None
        self.invite: SipRequest | None = None
        self.invite_tx: ClientInviteTransaction | None = None
        self.server_tx: ServerTransaction | None = None
        self.key: tuple[str, str] | None = None
        self._ack: SipRequest | None = None
        self._late_offer = False
        self._session_id = str(secrets.randbelow(10**9) + 1)
        self._sdp_version = 1
        self._sdp: bytes | None = None

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def emit(self, kind: str, **data: Any) -> None:
        self.session.emit({"type": kind, "call": self.id, **data})

    # -- from the page --------------------------------------------------------------------

    async def offer(self, sdp: str) -> None:
        """The page's WebRTC offer: answer it, then go on with the SIP side."""
        if self.peer is not None or self.state not in (CallState.NEW, CallState.ANSWERING):
            raise CallError("unexpected-offer", "one offer per call, after call or answer")
        gateway = self.session.gateway
        self.peer = BrowserPeer(
            self._to_sip, ice_servers=gateway.ice_servers, on_failed=self._media_failed
        )
        try:
            answer = await self.peer.answer(sdp)
        except BadOffer as exc:
            self.session.error("bad-offer", str(exc))
            self.hangup("bad-offer")
            return
        if self.ended:
            return
        self.emit("answer", sdp=answer)
        try:
            self.rtp = await gateway.open_rtp()
        except MediaPortsExhausted as exc:
            log.error("webrtc call %s: %s", self.id, exc)
            self.session.error("media-unavailable", "no RTP port is free on the server")
            self.hangup("failed")
            return
        self.rtp.on_pcm = self._from_sip
        self.rtp.on_dtmf = self._dtmf_from_sip
        if self.ended:
            self._release_media()
            return
        if self.direction == "outgoing":
            await self._send_invite()
        else:
            self._accept()

    def hangup(self, reason: str = "hangup") -> None:
        """The page (or its socket closing) ends the call, whatever state it is in."""
        state = self.state
        if state is CallState.ENDED:
            return
        if self.direction == "incoming" and state in (CallState.RINGING, CallState.ANSWERING):
            self._refuse(486 if reason == "declined" else 480)
        elif state in (CallState.DIALING, CallState.RINGING) and self.invite_tx is not None:
            self.invite_tx.cancel()
        elif state is CallState.ANSWERED:
            self._bye()
        self.finish(reason)

    def send_dtmf(self, digit: str) -> None:
        if digit not in DIGITS:
            raise CallError("bad-digit", "a digit is one of 0-9 * # A-D")
        if self.state is not CallState.ANSWERED or self.rtp is None:
            raise CallError("not-answered", "key presses need an answered call")
        try:
            self.rtp.send_dtmf(digit)
        except DtmfError as exc:
            raise CallError("no-dtmf", str(exc)) from exc

    # -- outgoing -------------------------------------------------------------------------

    def start_outgoing(self, to: str) -> None:
        if not DIALLABLE.fullmatch(to):
            raise CallError("bad-number", "dial digits, * and # (optionally a leading +)")
        self.to = to

    async def _send_invite(self) -> None:
        session = self.session
        domain, account = session.domain, session.account
        tag = new_tag()
        self.invite = SipRequest(
            "INVITE",
            SipUri(domain, user=self.to),
            from_=NameAddr(
                SipUri(domain, user=account.extension),
                account.caller_id_name,
                params={"tag": tag},
            ),
            to=NameAddr(SipUri(domain, user=self.to)),
            call_id=f"{secrets.token_hex(12)}@pomelo-webrtc",
            cseq=1,
            contacts=[session.contact()],
            body=self._our_offer(),
            headers=[_SDP, ("Allow", ALLOW), ("User-Agent", "Pomelo WebRTC gateway")],
        )
        self._track((self.invite.call_id, tag))
        self.state = CallState.DIALING
        await self._start(self.invite)

    def _track(self, key: tuple[str, str]) -> None:
        """Route the B2BUA's requests in this dialog (BYE, re-INVITE, ACK) to this call."""
        self.key = key
        self.session.gateway.dialogs[key] = self

    async def _start(self, request: SipRequest) -> None:
        tx = await self.session.gateway.start_request(request, self._on_response)
        if isinstance(tx, ClientInviteTransaction):
            self.invite_tx = tx
            if self.ended:
                tx.cancel()

    def _on_response(self, tx: ClientTransaction, response: SipResponse) -> None:
        status = response.status
        if status < 200:
            if status > 100 and self.state is CallState.DIALING:
                self.state = CallState.RINGING
                self.emit("ringing", status=status)
        elif status < 300:
            self._on_answer(response)
        elif tx.request is self.invite:
            self._on_failure(response)

    def _on_failure(self, response: SipResponse) -> None:
        status = response.status
        if status in (401, 407) and not self.ended and self.invite is not None:
            retry = self._authorized_retry(response)
            if retry is not None:
                self.invite = retry
                self.session.gateway.spawn(self._start(retry))
                return
        self.finish(end_reason(status), status=status)

    def _authorized_retry(self, response: SipResponse) -> SipRequest | None:
        invite = self.invite
        assert invite is not None
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        if invite.has_header(header):
            return None  # our credentials were refused: do not loop
        try:
            value = authorization(response, "INVITE", str(invite.uri), self.session.account)
        except DigestError as exc:
            log.info("webrtc call %s: cannot answer the challenge: %s", self.id, exc)
            return None
        retry = invite.copy()
        retry.vias = []
        retry.cseq += 1
        retry.set_header(header, value)
        return retry

    def _on_answer(self, response: SipResponse) -> None:
        invite = self.invite
        assert invite is not None
        if self.dialog is not None:
            if self._ack is not None:  # a retransmitted 2xx: ACK it again
                self.session.gateway.spawn(self.session.gateway.send_ack(self._ack))
            return
        try:
            self.dialog = Dialog.from_uac(invite, response)
        except DialogError:
            log.warning("webrtc call %s: unusable 2xx %r", self.id, response)
            return
        self._ack = self.dialog.create_ack(invite.cseq)
        self.session.gateway.spawn(self.session.gateway.send_ack(self._ack))
        if self.ended:
            self._bye()  # the page hung up while the CANCEL crossed this 2xx
            return
        try:
            self.media = read_answer(response.body)
        except MediaMismatch as exc:
            log.info("webrtc call %s: %s", self.id, exc)
            self._bye()
            self.finish("incompatible")
            return
        self.state = CallState.ANSWERED
        self._connect()
        self.emit("answered")

    # -- incoming -------------------------------------------------------------------------

    def ring(self, tx: ServerTransaction) -> None:
        """A new INVITE from the B2BUA for this session's contact."""
        request = tx.request
        self.server_tx = tx
        self.invite = request
        self.state = CallState.RINGING
        tx.on_cancel = self._on_cancel
        self._track((request.call_id, tx.local_tag))
        tx.reply(180, contact=self.session.contact())
        caller = request.from_
        user = caller.uri.user if isinstance(caller.uri, SipUri) else None
        self.remote = user or "anonymous"
        self.emit("incoming", **{"from": self.remote, "name": caller.display_name})

    def accept(self) -> None:
        if self.direction != "incoming" or self.state is not CallState.RINGING:
            raise CallError("nothing-to-answer", "no incoming call is ringing")
        self.state = CallState.ANSWERING

    def _accept(self) -> None:
        tx, invite = self.server_tx, self.invite
        assert tx is not None
        assert invite is not None
        if invite.body:
            try:
                body, self.media = self._our_answer(invite.body)
            except MediaMismatch as exc:
                log.info("webrtc call %s: %s", self.id, exc)
                self._refuse(488)
                self.finish("incompatible", status=488)
                return
        else:  # no offer (third-party call control): we offer, the ACK answers
            self._late_offer = True
            body = self._our_offer()
        response = tx.reply(
            200, body=body, headers=[_SDP, ("Allow", ALLOW)], contact=self.session.contact()
        )
        if response is None:  # CANCELled in the meantime
            self.finish("cancelled")
            return
        self.dialog = Dialog.from_uas(invite, response)
        if self.media is not None:
            self._connect()
        self.state = CallState.ANSWERED
        self.emit("answered")

    def _refuse(self, status: int) -> None:
        tx = self.server_tx
        if tx is not None and not tx.final_sent:
            tx.reply(status)

    def _on_cancel(self, tx: ServerTransaction, _cancel: SipRequest) -> None:
        tx.reply(487)
        self.finish("cancelled")

    # -- in-dialog requests from the B2BUA -------------------------------------------------

    def on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        dialog = self.dialog
        if dialog is None or self.ended:
            tx.reply(481)
            return
        problem = dialog.check_request(request)
        if problem is not None:
            tx.reply(problem)
            return
        method = request.method
        if method == "BYE":
            tx.reply(200)
            self.finish("remote-hangup")
        elif method in ("INVITE", "UPDATE"):
            self._on_offer(tx)
        elif method in ("INFO", "NOTIFY", "OPTIONS"):
            tx.reply(200)
        else:
            tx.reply(405, headers=[("Allow", ALLOW)])

    def _on_offer(self, tx: ServerTransaction) -> None:
        """re-INVITE/UPDATE: a session refresh, hold/resume, or media moving elsewhere."""
        request = tx.request
        contact = self.session.contact()
        if self.rtp is None:
            tx.reply(491)
            return
        if not request.body:
            if request.method == "UPDATE":
                tx.reply(200, contact=contact)
                return
            self._late_offer = True
            tx.reply(200, body=self._our_offer(), headers=[_SDP], contact=contact)
            return
        try:
            body, media = self._our_answer(request.body)
        except MediaMismatch:
            tx.reply(488)
            return
        self.media = media
        self._connect()
        tx.reply(200, body=body, headers=[_SDP], contact=contact)

    def on_ack(self, request: SipRequest) -> None:
        if self._late_offer and request.body:
            self._late_offer = False
            try:
                self.media = read_answer(request.body)
            except MediaMismatch:
                self._bye()
                self.finish("incompatible")
                return
            self._connect()

    # -- media ----------------------------------------------------------------------------

    def _local(self) -> tuple[str, int]:
        assert self.rtp is not None
        host, port = self.rtp.local_address
        return reachable_host(host), port

    def _our_offer(self) -> bytes:
        host, port = self._local()
        return self._versioned(lambda v: build_offer(host, port, self._session_id, v))

    def _our_answer(self, offer: bytes) -> tuple[bytes, SipMedia]:
        host, port = self._local()
        _, media = answer_offer(offer, host, port, self._session_id)
        body = self._versioned(lambda v: answer_offer(offer, host, port, self._session_id, v)[0])
        return body, media

    def _versioned(self, build: Callable[[int], bytes]) -> bytes:
        """RFC 3264 §8: the o= version grows exactly when what we describe changes."""
        body = build(self._sdp_version)
        if self._sdp is not None and _without_origin(body) != _without_origin(self._sdp):
            self._sdp_version += 1
            body = build(self._sdp_version)
        self._sdp = body
        return body

    def _connect(self) -> None:
        if self.rtp is not None and self.media is not None:
            self.rtp.configure(self.media.remote, self.media.codec, self.media.dtmf_pt)

    def _to_sip(self, pcm: npt.NDArray[np.int16]) -> None:
        rtp = self.rtp
        if rtp is not None and self.state is CallState.ANSWERED and rtp.remote is not None:
            rtp.send_pcm(pcm)

    def _from_sip(self, pcm: npt.NDArray[np.int16], _ts: int, _arrival: float) -> None:
        if self.peer is not None:
            self.peer.play(pcm)

    def _dtmf_from_sip(self, digit: str) -> None:
        self.emit("dtmf", digit=digit)

    def _media_failed(self) -> None:
        self.hangup("media-failed")

    # -- the end --------------------------------------------------------------------------

    def _bye(self) -> None:
        dialog = self.dialog
        if dialog is None:
            return
        try:
            bye = dialog.create_request("BYE")
        except DialogError:
            return
        dialog.terminate()
        self.session.gateway.spawn(self.session.gateway.request(bye))

    def finish(self, reason: str, *, status: int | None = None) -> None:
        """The call is over for the page: tell it once, free the media."""
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        extra = {"status": status} if status is not None else {}
        self.emit("ended", reason=reason, **extra)
        self.session.call_ended(self)
        dialogs = self.session.gateway.dialogs
        if self.key is not None and dialogs.get(self.key) is self:
            del dialogs[self.key]
        self._release_media()

    def _release_media(self) -> None:
        if self.rtp is not None:
            self.rtp.close()
        if self.peer is not None:
            self.session.gateway.spawn(self.peer.close())


def _without_origin(sdp: bytes) -> list[bytes]:
    return [line for line in sdp.splitlines() if not line.startswith(b"o=")]
