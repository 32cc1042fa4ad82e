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
