"""`serve` opens SIP over TLS and over WebSocket when configured; both answer real clients."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from pomelo.app import build_platform
from pomelo.core.clock import SystemClock
from tests.conftest import make_settings
from tests.integration.sip.test_transports import make_certificate


def options(transport: str, port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-listeners-{transport}\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: listeners-{transport}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def test_tls_and_websocket_listeners(fresh_database: Any, tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    settings = make_settings(
        await fresh_database(),
        tmp_path / "var",
        sip_tls_cert=cert,
        sip_tls_key=key,
        sip_tls_port=0,
        sip_ws_port=0,
    )
    platform = build_platform(settings, clock=SystemClock())
    await platform.start()
    try:
        server = platform.sip_server
        assert server.tls_port
        assert server.ws_port
        client = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.tls_port, ssl=client, server_hostname="127.0.0.1"
        )
        writer.write(options("TLS", 5061))
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"SIP/2.0 200"), status
        writer.close()
        async with connect(f"ws://127.0.0.1:{server.ws_port}", subprotocols=["sip"]) as ws:
            await ws.send(options("WS", 5062).decode())
            answer = await asyncio.wait_for(ws.recv(), 5)
            assert str(answer).startswith("SIP/2.0 200"), answer
    finally:
        await platform.stop()


def test_tls_needs_both_files(tmp_path: Path) -> None:
    import pytest

    from pomelo.core.errors import ConfigError

    with pytest.raises(ConfigError, match="go together"):
        make_settings("sqlite+aiosqlite:///x.db", tmp_path, sip_tls_cert=tmp_path / "c.pem")
    with pytest.raises(ConfigError, match="does not exist"):
        make_settings(
            "sqlite+aiosqlite:///x.db",
            tmp_path,
            sip_tls_cert=tmp_path / "c.pem",
            sip_tls_key=tmp_path / "k.pem",
        )


class _ClosedGate:
    """Refuses every request (as the security gate does for a banned or flooding source)."""

    def admit(self, ip: str, method: str) -> bool:
        return False

    def inspect(self, request: Any, ip: str) -> bool:
        return False


async def test_a_trusted_in_process_source_skips_the_gate() -> None:
    """The WebRTC gateway's UA talks to the SIP server over loopback: its exact (ip, port)
    is trusted, so browser phones do not share (or trip) the loopback rate limit — while
    anyone else on the same address still meets the gate."""
    import asyncio
    import socket

    from pomelo.pbx.server import SipServer

    server = SipServer("127.0.0.1", 0, gate=_ClosedGate(), transports=("UDP",))
    await server.start()
    loop = asyncio.get_running_loop()
    trusted = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for sock in (trusted, stranger):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        server.trusted_sources.add(trusted.getsockname())

        async def options(sock: socket.socket) -> bytes | None:
            port = sock.getsockname()[1]
            message = (
                f"OPTIONS sip:pomelo@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{port}\r\n"
                f"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:pomelo@127.0.0.1>\r\n"
                f"Call-ID: trusted-{port}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode()
            await loop.sock_sendto(sock, message, ("127.0.0.1", server.port))
            try:
                return await asyncio.wait_for(loop.sock_recv(sock, 4096), 1.0)
            except TimeoutError:
                return None

        answer = await options(trusted)
        assert answer is not None and answer.startswith(b"SIP/2.0 200")
        assert await options(stranger) is None
    finally:
        trusted.close()
        stranger.close()
        await server.stop()
