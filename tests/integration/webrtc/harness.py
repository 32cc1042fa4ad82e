"""Both ends of a browser call, played in-process for fast tests.

`FakeBrowser` is the page: the phone WebSocket plus an aiortc peer connection whose
microphone is a sine tone and whose speaker keeps what it hears. `SipPhone` is a desk phone
of the same tenant: a small SIP UA on loopback that registers with its password, answers (or
refuses) calls, places calls through the B2BUA with digest, sends a tone of its own over RTP
and keeps what it hears. Audio checks compare dominant frequencies, so each direction is
told apart from the other and from an echo.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import secrets
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from pomelo.media.session import PCMU, PortPool, RtpSession
from pomelo.sip.dialog import Dialog
from pomelo.sip.digest import answer_challenge, select_challenge
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.sdp import parse_sdp
from pomelo.sip.transaction import ServerTransaction, new_tag
from pomelo.sip.transport import Source, Target
from pomelo.sip.uri import NameAddr, SipUri

TONE_RATE = 48000
_PHONE_PORTS = PortPool(41000, 41999)


# -- signal analysis --------------------------------------------------------------------------


def dominant_frequency(samples: npt.NDArray[np.int16], rate: int) -> float:
    """The strongest frequency (Hz) of a stretch of audio, DC excluded."""
    data = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(data))
    spectrum[:3] = 0
    return float(np.argmax(spectrum) * rate / len(samples))


def rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def tone(
    freq: float, start: int, count: int, rate: int, level: float = 0.3
) -> npt.NDArray[np.int16]:
    t = (np.arange(count) + start) / rate
    return (np.sin(2 * math.pi * freq * t) * level * 32767).astype(np.int16)


class Ear:
    """Audio heard at one end, as mono int16 at its own rate."""

    def __init__(self) -> None:
        self.chunks: list[npt.NDArray[np.int16]] = []
        self.rate = 0

    def add(self, samples: npt.NDArray[np.int16], rate: int) -> None:
        self.rate = rate
        self.chunks.append(samples)

    def loud_frames(self, threshold: float = 500.0) -> int:
        return sum(1 for c in self.chunks if rms(c) > threshold)

    def recent(self, seconds: float = 0.5) -> npt.NDArray[np.int16]:
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(self.chunks)
        return audio[-int(seconds * self.rate) :]

    async def wait_for_sound(self, frames: int = 40, timeout: float = 15) -> None:
        """Until enough loud frames arrived (what a listener would call "I hear you")."""
        async with asyncio.timeout(timeout):
            while self.loud_frames() < frames:
                await asyncio.sleep(0.05)


# -- the browser ------------------------------------------------------------------------------


class ToneTrack(MediaStreamTrack):
    """A microphone that hums: 20 ms frames of a sine at 48 kHz, paced in real time."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self.freq = freq
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        samples = TONE_RATE // 50
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += samples
            delay = self._start + self._pts / TONE_RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        data = tone(self.freq, self._pts, samples, TONE_RATE).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = TONE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, TONE_RATE)
        return frame


def frame_to_mono(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    mixed = data.mean(axis=0) if frame.format.is_planar else data.reshape(-1, channels).mean(axis=1)
    out: npt.NDArray[np.int16] = mixed.astype(np.int16)
    return out


class FakeBrowser:
    """The phone page, played by aiortc (see the module docstring)."""

    def __init__(self, base_url: str, tone_hz: float = 440.0) -> None:
        self.url = base_url.replace("http://", "ws://") + "/api/v1/phone"
        self.tone_hz = tone_hz
        self.ws: Any = None
        self.pc: RTCPeerConnection | None = None
        self.ear = Ear()
        self.messages: list[dict[str, Any]] = []
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url)
        self._tasks.append(asyncio.create_task(self._read()))

    async def register(self, api_key: str | None, **extra: Any) -> dict[str, Any]:
        await self.connect()
        message: dict[str, Any] = {"type": "register", **extra}
        if api_key is not None:
            message["api_key"] = api_key
        await self.send(message)
        return await self.expect("registered", "error")

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                self.messages.append(message)
                await self._inbox.put(message)
        await self._inbox.put({"type": "closed"})

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def expect(self, *types: str, timeout: float = 15) -> dict[str, Any]:
        """The next message of one of ``types``; others are skipped (kept in messages)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._inbox.get()
                if message["type"] in types:
                    return message
                if message["type"] == "closed":
                    raise AssertionError(f"socket closed while waiting for {types}")

    async def close_code(self, timeout: float = 10) -> int | None:
        async with asyncio.timeout(timeout):
            await self.ws.wait_closed()
        return int(self.ws.close_code) if self.ws.close_code is not None else None

    async def offer(self) -> str:
        """A WebRTC offer with the tone as microphone, after ICE gathering (no trickle)."""
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(ToneTrack(self.tone_hz))
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def listen() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    assert isinstance(frame, av.AudioFrame)
                    self.ear.add(frame_to_mono(frame), frame.sample_rate)

        self._tasks.append(asyncio.create_task(listen()))

    async def take_answer(self) -> dict[str, Any]:
        answer = await self.expect("answer")
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return answer

    async def place_call(self, to: str) -> str:
        await self.send({"type": "call", "to": to})
        calling = await self.expect("calling")
        await self.send({"type": "offer", "sdp": await self.offer()})
        await self.take_answer()
        return str(calling["call"])

    async def answer_call(self) -> None:
        await self.send({"type": "answer", "sdp": await self.offer()})
        await self.take_answer()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- the desk phone ---------------------------------------------------------------------------


class SipPhone:
    """A registered SIP phone of the tenant (see the module docstring).

    ``mode`` decides what it does with a call: "answer", "busy" (486) or "ring" (until
    cancelled).
    """

    def __init__(
        self, domain: str, extension: str, password: str, pbx_port: int, tone_hz: float = 1000.0
    ) -> None:
        self.domain = domain
        self.extension = extension
        self.password = password
        self.pbx_port = pbx_port
        self.tone_hz = tone_hz
        self.mode = "answer"
        self.endpoint = SipEndpoint(self._on_request, on_ack=self._on_ack)
        self.target: Target | None = None
        self.port = 0
        self.ear = Ear()
        self.digits: list[str] = []
        self.rtp: RtpSession | None = None
        self.dialog: Dialog | None = None
        self.invited = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.bye = asyncio.Event()
        self.incoming: SipRequest | None = None
        self.last_invite: SipRequest | None = None
        self._tone: asyncio.Task[None] | None = None

    async def start(self) -> SipPhone:
        transport = await self.endpoint.listen("UDP", "127.0.0.1", 0)
        self.port = transport.local_address[1]
        self.target = Target(transport, ("127.0.0.1", self.pbx_port))
        response = await self._authorized(self._register_request, "REGISTER")
        assert response.status == 200, response
        return self

    async def stop(self) -> None:
        if self._tone is not None:
            self._tone.cancel()
        if self.rtp is not None:
            self.rtp.close()
        await self.endpoint.close()

    def _register_request(self) -> SipRequest:
        aor = SipUri(self.domain, user=self.extension)
        return SipRequest(
            "REGISTER",
            SipUri(self.domain),
            from_=NameAddr(aor, params={"tag": new_tag()}),
            to=NameAddr(aor.copy()),
            call_id=f"reg-{secrets.token_hex(8)}",
            contacts=[self._contact()],
            headers=[("Expires", "300")],
        )

    def _contact(self) -> NameAddr:
        return NameAddr(SipUri("127.0.0.1", user=self.extension, port=self.port))

    async def _authorized(
        self,
        build: Callable[[], SipRequest],
        method: str,
        on_provisional: Callable[[SipResponse], None] | None = None,
    ) -> SipResponse:
        request = build()
        response = await self.endpoint.request(request, target=self.target)
        if response.status not in (401, 407):
            return response
        asked, answer = (
            ("WWW-Authenticate", "Authorization")
            if response.status == 401
            else ("Proxy-Authenticate", "Proxy-Authorization")
        )
        retry = request.copy()
        retry.vias = []
        retry.cseq += 1
        challenge = select_challenge(response.header_values(asked))
        retry.set_header(
            answer,
            answer_challenge(challenge, method, str(retry.uri), self.extension, self.password),
        )
        self.last_invite = retry
        return await self.endpoint.request(retry, target=self.target, on_provisional=on_provisional)

    # -- media --------------------------------------------------------------------------------

    async def _open_rtp(self) -> RtpSession:
        rtp = await RtpSession.open(_PHONE_PORTS, "127.0.0.1")
        rtp.on_pcm = lambda pcm, _ts, _at: self.ear.add(pcm, 8000)
        rtp.on_dtmf = self.digits.append
        self.rtp = rtp
        return rtp

    def _sdp(self, direction: str = "sendrecv", version: int = 1) -> bytes:
        assert self.rtp is not None
        port = self.rtp.local_address[1]
        return (
            f"v=0\r\no=phone 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
        ).encode()

    def _start_media(self, remote_sdp: bytes) -> None:
        assert self.rtp is not None
        sdp = parse_sdp(remote_sdp)
        media = sdp.media[0]
        connection = sdp.connection_for(media)
        assert connection is not None
        telephone = [pt for pt, m in media.rtpmaps.items() if m.encoding == "telephone-event"]
        self.rtp.configure(
            (connection.address, media.port), PCMU, telephone[0] if telephone else None
        )
        self._tone = asyncio.create_task(self._hum())

    async def _hum(self) -> None:
        rtp = self.rtp
        assert rtp is not None
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while True:
            rtp.send_pcm(tone(self.tone_hz, sent * 160, 160, 8000))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - loop.time()))

    def send_dtmf(self, digit: str) -> None:
        assert self.rtp is not None
        self.rtp.send_dtmf(digit)

    # -- being called ---------------------------------------------------------------------

    async def _on_request(self, tx: ServerTransaction) -> None:
        request = tx.request
        if request.method == "INVITE" and not request.to.tag:
            await self._on_invite(tx)
        elif request.method == "BYE":
            tx.reply(200)
            self.bye.set()
        else:
            tx.reply(200)

    async def _on_invite(self, tx: ServerTransaction) -> None:
        self.incoming = tx.request
        self.invited.set()
        if self.mode == "busy":
            tx.reply(486)
            return
        tx.on_cancel = self._on_cancel
        tx.reply(180, contact=self._contact())
        if self.mode == "ring":
            return
        await asyncio.sleep(0.2)
        await self._open_rtp()
        response = tx.reply(
            200,
            body=self._sdp(),
            headers=[("Content-Type", "application/sdp")],
            contact=self._contact(),
        )
        assert response is not None
        self.dialog = Dialog.from_uas(tx.request, response)
        self._start_media(tx.request.body)

    def _on_cancel(self, tx: ServerTransaction, _cancel: SipRequest) -> None:
        tx.reply(487)
        self.cancelled.set()

    def _on_ack(self, request: SipRequest, source: Source) -> None:
        return None

    # -- calling ----------------------------------------------------------------------------

    async def call(
        self, to: str, on_provisional: Callable[[SipResponse], None] | None = None
    ) -> SipResponse:
        """INVITE ``to`` through the PBX (digest on the 407); the final response. A 2xx is
        ACKed and starts the tone."""
        await self._open_rtp()
        tag, call_id = new_tag(), f"call-{secrets.token_hex(8)}"

        def build() -> SipRequest:
            return SipRequest(
                "INVITE",
                SipUri(self.domain, user=to),
                from_=NameAddr(SipUri(self.domain, user=self.extension), params={"tag": tag}),
                to=NameAddr(SipUri(self.domain, user=to)),
                call_id=call_id,
                contacts=[self._contact()],
                body=self._sdp(),
                headers=[("Content-Type", "application/sdp")],
            )

        response = await self._authorized(build, "INVITE", on_provisional)
        if 200 <= response.status < 300:
            assert self.last_invite is not None
            self.dialog = Dialog.from_uac(self.last_invite, response)
            await self.endpoint.send_ack(
                self.dialog.create_ack(self.last_invite.cseq), target=self.target
            )
            self._start_media(response.body)
        return response

    async def reinvite(self, direction: str, version: int) -> SipResponse:
        """A re-INVITE in the call (hold: "sendonly", resume: "sendrecv"), ACKed."""
        assert self.dialog is not None
        request = self.dialog.create_request(
            "INVITE",
            body=self._sdp(direction, version),
            headers=[("Content-Type", "application/sdp")],
            contact=self._contact(),
        )
        response = await self.endpoint.request(request, target=self.target)
        if 200 <= response.status < 300:
            await self.endpoint.send_ack(self.dialog.create_ack(request.cseq), target=self.target)
        return response

    async def hangup(self) -> SipResponse:
        assert self.dialog is not None
        return await self.endpoint.request(self.dialog.create_request("BYE"), target=self.target)
