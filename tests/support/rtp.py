"""A loopback RTP endpoint for tests: it streams a tone the way a phone does (20 ms PCMU
packets, one SSRC, growing sequence numbers and timestamps), keeps every datagram it receives,
and falls silent or sprays garbage when the test says so."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pomelo.media.g711 import ulaw_encode
from pomelo.media.rtp import RtpError, RtpPacket, build_rtp, is_rtcp, parse_rtp

__all__ = ["Address", "Datagram", "RtpPeer", "garbage", "tone", "wait_until"]

Address = tuple[str, int]


def tone(freq: float, start: int, count: int, level: float = 0.3) -> npt.NDArray[np.int16]:
    """``count`` samples at 8 kHz of a sine, starting at sample ``start`` (phase-continuous)."""
    t = (np.arange(count) + start) / 8000
    samples: npt.NDArray[np.int16] = (np.sin(2 * math.pi * freq * t) * level * 32767).astype(
        np.int16
    )
    return samples


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Poll ``predicate`` until it holds; timeouts are generous so a slow machine is not a
    failure, and nothing here measures how long it took."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@dataclass(frozen=True, slots=True)
class Datagram:
    source: Address
    data: bytes

    @property
    def packet(self) -> RtpPacket | None:
        try:
            return parse_rtp(self.data)
        except RtpError:
            return None


def garbage(rng: random.Random) -> dict[str, list[bytes]]:
    """Datagrams no RTP receiver may accept, by kind: too short, wrong version, random bytes
    (with the version bits forced to anything but 2) and a huge one."""

    def not_v2(data: bytes, version: int) -> bytes:
        return bytes((version << 6 | (data[0] & 0x3F),)) + data[1:]

    return {
        "short": [b"\x80", b"\x80\x00\x00\x01", rng.randbytes(11)],
        "version": [not_v2(rng.randbytes(172), v) for v in (0, 1, 3)],
        "random": [
            not_v2(rng.randbytes(rng.randrange(12, 400)), rng.choice((0, 1, 3))) for _ in range(12)
        ],
        "huge": [build_rtp(0, 1, 160, 0xDEAD, b"\xff" * 30_000)],
    }


class RtpPeer(asyncio.DatagramProtocol):
    """One phone's RTP socket on 127.0.0.1 (see the module docstring)."""

    def __init__(self, tone_hz: float = 440.0, payload_type: int = 0) -> None:
        self.tone_hz = tone_hz
        self.payload_type = payload_type
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.sent = 0
        self.received: list[Datagram] = []
        self.rtcp: list[Datagram] = []
        """RTCP that reached this socket (the PBX sends its reports to RTP port + 1, which
        may be another test socket's port): kept apart so it never counts as media."""
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("127.0.0.1", 0)
        self._stream: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, tone_hz: float = 440.0, payload_type: int = 0) -> RtpPeer:
        peer = cls(tone_hz, payload_type)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("sockname")[:2]
        self.address = (host, port)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = addr[0], addr[1]
        assert isinstance(host, str) and isinstance(port, int)
        (self.rtcp if is_rtcp(data) else self.received).append(Datagram((host, port), data))

    def send(self, data: bytes, to: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def next_packet(self) -> bytes:
        """The next 20 ms of our tone as an RTP packet of our stream."""
        pcm = tone(self.tone_hz, self.sent * 160, 160)
        data = build_rtp(
            self.payload_type,
            self.seq,
            self.timestamp,
            self.ssrc,
            ulaw_encode(pcm),
            marker=self.sent == 0,
        )
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + 160) & 0xFFFFFFFF
        self.sent += 1
        return data

    # -- streaming like a phone -----------------------------------------------------------

    @property
    def streaming(self) -> bool:
        return self._stream is not None

    def stream(self, to: Address) -> None:
        """Send a packet every 20 ms (paced from the start, not from each send) until
        :meth:`silence`."""
        self.silence()
        self._stream = asyncio.get_running_loop().create_task(self._pace(to))

    def silence(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None

    async def _pace(self, to: Address) -> None:
        loop = asyncio.get_running_loop()
        start, count = loop.time(), 0
        while True:
            self.send(self.next_packet(), to)
            count += 1
            await asyncio.sleep(max(0.0, start + count * 0.02 - loop.time()))

    # -- what arrived ---------------------------------------------------------------------

    def packets(self) -> list[RtpPacket]:
        return [p for d in self.received if (p := d.packet) is not None]

    def count_from(self, ssrc: int) -> int:
        return sum(1 for p in self.packets() if p.ssrc == ssrc)

    def close(self) -> None:
        self.silence()
        if self.transport is not None:
            self.transport.close()
