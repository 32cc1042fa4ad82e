"""A real SipServer behind SipSecurity, flooded over UDP on loopback.

The flooding sockets bind 127.0.0.2 and 127.0.0.3 (Linux routes all of 127.0.0.0/8 to the
loopback interface) so that the gate can tell them from the legitimate client on 127.0.0.1.
Every wait is bounded: a regression fails in seconds instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry

from pomelo.pbx.security import SipSecurity, SipSecurityConfig
from pomelo.pbx.server import SipServer

QUIET = 0.4  # no answer within this long after the last request: nothing more is coming


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[SipServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    security = SipSecurity(registry, config=SipSecurityConfig(rate=0.5, burst=20))
    server = SipServer("127.0.0.1", 0, gate=security, transports=("UDP",))
    await server.start()
    try:
        yield server, registry
    finally:
        await server.stop()


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    opened = {}
    for name, host in (("legit", "127.0.0.1"), ("flood", "127.0.0.2"), ("scanner", "127.0.0.3")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((host, 0))
        sock.setblocking(False)
        opened[name] = sock
    yield opened
    for sock in opened.values():
        sock.close()


def options(sock: socket.socket, method: str = "OPTIONS", agent: str = "Linphone/5.2") -> bytes:
    host, port = sock.getsockname()
    tag = uuid.uuid4().hex
    return (
        f"{method} sip:pbx@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:100@127.0.0.1>;tag={tag[:8]}\r\n"
        "To: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: {tag}@{host}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:100@{host}:{port}>\r\n"
        "Expires: 60\r\n"
        f"User-Agent: {agent}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def exchange(sock: socket.socket, port: int, messages: list[bytes]) -> int:
    """Send every message, then count the answers until the line stays quiet."""
    loop = asyncio.get_running_loop()
    for message in messages:
        await loop.sock_sendto(sock, message, ("127.0.0.1", port))
    answers = 0
    while True:
        try:
            await asyncio.wait_for(loop.sock_recv(sock, 65535), QUIET)
        except TimeoutError:
            return answers
        answers += 1


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_flooding_source_is_cut_off_while_a_phone_keeps_its_service(
    pbx: tuple[SipServer, CollectorRegistry], sockets: dict[str, socket.socket]
) -> None:
    server, registry = pbx
    flood = sockets["flood"]
    started = time.monotonic()
    wave = [options(flood, m) for m in ("OPTIONS", "REGISTER") for _ in range(100)]
    answered = await exchange(flood, server.port, wave)
    # The burst, plus the trickle refilled meanwhile (0.5/s): nothing like the 200 sent.
    assert 20 <= answered <= 20 + 0.5 * (time.monotonic() - started) + 1
    started = time.monotonic()
    again = await exchange(flood, server.port, [options(flood) for _ in range(100)])
    assert again <= 0.5 * (time.monotonic() - started) + 1
    assert sample(registry, "pomelo_sip_requests_dropped_total", reason="rate") >= 250

    legit = sockets["legit"]
    assert await exchange(legit, server.port, [options(legit) for _ in range(10)]) == 10


async def test_a_scanner_gets_no_answer_at_all(
    pbx: tuple[SipServer, CollectorRegistry], sockets: dict[str, socket.socket]
) -> None:
    server, registry = pbx
    scanner = sockets["scanner"]
    probe = [options(scanner, agent="friendly-scanner")]
    assert await exchange(scanner, server.port, probe) == 0
    # Banned now: even its innocent-looking requests are dropped, unanswered.
    assert await exchange(scanner, server.port, [options(scanner) for _ in range(5)]) == 0
    assert isinstance(server.gate, SipSecurity)
    assert server.gate.is_banned("127.0.0.3")
    assert sample(registry, "pomelo_sip_bans_total", reason="scanner") == 1
    assert sample(registry, "pomelo_sip_requests_dropped_total", reason="ban") == 5

    legit = sockets["legit"]
    assert await exchange(legit, server.port, [options(legit), options(legit, "REGISTER")]) == 2
