"""SIP transports on real loopback sockets: UDP, TCP, TLS and WebSocket.

Every test binds port 0 on 127.0.0.1 and bounds each wait, so a regression shows up as a
failure within seconds rather than a hung suite.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse, parse_message
from pomelo.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    ServerTransaction,
    new_tag,
)
from pomelo.sip.transport import StreamTransport, TcpTransport
from pomelo.sip.uri import NameAddr

WAIT = 5.0


def options(uri: str, call_id: str | None = None) -> SipRequest:
    return SipRequest(
        "OPTIONS",
        uri,
        from_=NameAddr("sip:tester@127.0.0.1", params={"tag": new_tag()}),
        to=NameAddr(uri),
        call_id=call_id or f"{new_tag()}@127.0.0.1",
    )


def raw_request(
    method: str = "OPTIONS",
    *,
    via: str,
    body: bytes = b"",
    cseq: str | None = None,
    content_length: bool = True,
) -> bytes:
    head = (
        f"{method} sip:pbx@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:raw@127.0.0.1>;tag=r1\r\n"
        "To: <sip:pbx@127.0.0.1>\r\n"
        f"Call-ID: {new_tag()}@raw\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
    )
    if content_length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Recorder:
    """A UAS that answers 200 and remembers what it saw."""

    def __init__(self) -> None:
        self.requests: list[SipRequest] = []
        self.transactions: list[ServerTransaction] = []

    def __call__(self, tx: ServerTransaction) -> None:
        self.requests.append(tx.request)
        self.transactions.append(tx)
        tx.reply(200)


@pytest.fixture
async def uas() -> AsyncIterator[tuple[SipEndpoint, Recorder]]:
    recorder = Recorder()
    endpoint = SipEndpoint(recorder)
    await endpoint.listen("UDP")
    await endpoint.listen("TCP", idle_timeout=30.0)
    await endpoint.listen("WS")
    try:
        yield endpoint, recorder
    finally:
        await endpoint.close()


@pytest.fixture
async def uac() -> AsyncIterator[SipEndpoint]:
    endpoint = SipEndpoint(lambda tx: None)
    await endpoint.listen("UDP")
    await endpoint.listen("TCP")
    try:
        yield endpoint
    finally:
        await endpoint.close()


def port_of(endpoint: SipEndpoint, kind: str) -> int:
    transport = endpoint.transports.get(kind)
    assert transport is not None
    return transport.local_address[1]


class DatagramPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)


async def udp_peer() -> tuple[asyncio.DatagramTransport, DatagramPeer, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        DatagramPeer, local_addr=("127.0.0.1", 0)
    )
    return transport, protocol, transport.get_extra_info("sockname")[1]


async def next_response(peer: DatagramPeer) -> SipResponse:
    message = parse_message(await asyncio.wait_for(peer.queue.get(), WAIT))
    assert isinstance(message, SipResponse)
    return message


# -- UDP -----------------------------------------------------------------------------------


async def test_udp_request_response(uas: tuple[SipEndpoint, Recorder], uac: SipEndpoint) -> None:
    server, recorder = uas
    uri = f"sip:pbx@127.0.0.1:{port_of(server, 'UDP')}"
    response = await asyncio.wait_for(uac.request(options(uri)), WAIT)
    assert response.status == 200
    assert response.to.tag == recorder.transactions[0].local_tag
    assert recorder.requests[0].vias[0].transport == "UDP"


async def test_udp_received_and_rport_stamping(uas: tuple[SipEndpoint, Recorder]) -> None:
    server, recorder = uas
    target = ("127.0.0.1", port_of(server, "UDP"))
    sock, peer, port = await udp_peer()
    try:
        # A Via claiming a foreign host and asking for rport: both get stamped, and the
        # response comes back to the real source address, not the Via's.
        sock.sendto(raw_request(via="SIP/2.0/UDP 203.0.113.5:5099;branch=z9hG4bKr1;rport"), target)
        response = await next_response(peer)
        via = recorder.requests[-1].vias[0]
        assert via.received == "127.0.0.1" and via.rport == port
        assert response.vias[0].received == "127.0.0.1" and response.vias[0].rport == port
        # Without rport the response goes to received + the Via's port (§18.2.2).
        sock2, peer2, port2 = await udp_peer()
        try:
            via_text = f"SIP/2.0/UDP 198.51.100.1:{port2};branch=z9hG4bKr2"
            sock.sendto(raw_request(via=via_text), target)
            response = await next_response(peer2)
            assert response.vias[0].received == "127.0.0.1"
            assert response.vias[0].rport is None
            assert peer.queue.empty()
        finally:
            sock2.close()
    finally:
        sock.close()


async def test_udp_garbage_is_answered_400_or_dropped(
    uas: tuple[SipEndpoint, Recorder],
) -> None:
    server, recorder = uas
    target = ("127.0.0.1", port_of(server, "UDP"))
    sock, peer, port = await udp_peer()
    try:
        via = f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbad;rport"
        sock.sendto(b"\x00\xff garbage \r\n\r\n", target)
        sock.sendto(b"SIP/2.0 200 OK\r\nbroken\r\n\r\n", target)
        sock.sendto(raw_request(via="this is not a via"), target)
        sock.sendto(raw_request(via=via, cseq="99999999999 OPTIONS"), target)
        # The offending CSeq is echoed as received (§8.2.6.2), so read the reply as text.
        reply = (await asyncio.wait_for(peer.queue.get(), WAIT)).decode()
        status_line, _, rest = reply.partition("\r\n")
        assert status_line.startswith("SIP/2.0 400 Bad Request (") and "CSeq" in status_line
        assert ";tag=" in rest.split("To: ", 1)[1].split("\r\n", 1)[0]
        assert "received=127.0.0.1" in rest and f"rport={port}" in rest
        sock.sendto(
            raw_request(via=via, body=b"x", content_length=False).replace(
                b"Max-Forwards: 70", b"Max-Forwards: 9999"
            ),
            target,
        )
        response = await next_response(peer)
        assert response.status == 400 and "Max-Forwards" in response.reason
        # Nothing else came back and the socket still serves good requests.
        sock.sendto(raw_request(via=via.replace("bad", "good")), target)
        response = await next_response(peer)
        assert response.status == 200
        assert peer.queue.empty()
        assert len(recorder.requests) == 1
    finally:
        sock.close()


# -- TCP -----------------------------------------------------------------------------------


async def open_tcp(endpoint: SipEndpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port_of(endpoint, "TCP"))


async def read_message(reader: asyncio.StreamReader) -> SipResponse:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    message = parse_message(head)
    assert isinstance(message, SipResponse)
    return message


async def test_tcp_framing_across_partial_writes_and_keepalives(
    uas: tuple[SipEndpoint, Recorder],
) -> None:
    server, recorder = uas
    reader, writer = await open_tcp(server)
    try:
        # Via names a port nobody listens on: the response must reuse this connection.
        via = "SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt1"
        data = raw_request(via=via, body=b"hello")
        for chunk in (data[:7], data[7:60], data[60:-2], data[-2:]):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.02)
        response = await read_message(reader)
        assert response.status == 200 and recorder.requests[-1].body == b"hello"
        writer.write(b"\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
        two = raw_request(via=via.replace("t1", "t2")) + raw_request(via=via.replace("t1", "t3"))
        writer.write(b"\r\n" + two)
        await writer.drain()
        statuses = [(await read_message(reader)).status for _ in range(2)]
        assert statuses == [200, 200]
        assert [r.branch for r in recorder.requests] == ["z9hG4bKt1", "z9hG4bKt2", "z9hG4bKt3"]
        assert recorder.requests[-1].vias[0].received is None  # same host, no rport
    finally:
        writer.close()


async def test_tcp_bad_message_gets_400_and_lost_framing_closes(
    uas: tuple[SipEndpoint, Recorder],
) -> None:
    server, _ = uas
    reader, writer = await open_tcp(server)
    try:
        via = "SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt9"
        writer.write(raw_request(via=via).replace(b"Max-Forwards: 70", b"Max-Forwards: 999"))
        response = await read_message(reader)
        assert response.status == 400 and "Max-Forwards" in response.reason
        writer.write(raw_request(via=via, content_length=False))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the server
    finally:
        writer.close()


async def test_tcp_between_endpoints_reuses_the_connection(
    uas: tuple[SipEndpoint, Recorder], uac: SipEndpoint
) -> None:
    server, recorder = uas
    uri = f"sip:pbx@127.0.0.1:{port_of(server, 'TCP')};transport=TCP"
    for _ in range(3):
        response = await asyncio.wait_for(uac.request(options(uri)), WAIT)
        assert response.status == 200
    client_tcp = uac.transports.get("tcp")
    server_tcp = server.transports.get("TCP")
    assert isinstance(client_tcp, TcpTransport) and isinstance(server_tcp, TcpTransport)
    assert len(client_tcp.connections) == 1
    assert len(server_tcp.connections) == 1
    ports = {request.vias[0].rport for request in recorder.requests}
    assert len(ports) == 1  # the same flow every time


async def test_tcp_idle_timeout_and_connection_cap() -> None:
    endpoint = SipEndpoint(Recorder())
    transport = await endpoint.listen("TCP", idle_timeout=0.2, max_connections=1)
    try:
        port = transport.local_address[1]
        reader1, writer1 = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader2.read(), WAIT) == b""  # over the cap
        assert await asyncio.wait_for(reader1.read(), WAIT) == b""  # idle
        writer1.close()
        writer2.close()
    finally:
        await endpoint.close()


async def test_unreachable_tcp_peer_gives_503(uac: SipEndpoint) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    uri = f"sip:nobody@127.0.0.1:{dead_port};transport=tcp"
    response = await asyncio.wait_for(uac.request(options(uri)), WAIT)
    assert response.status == 503


# -- INVITE / CANCEL end to end ------------------------------------------------------------


async def test_invite_cancel_flow_over_udp(uac: SipEndpoint) -> None:
    ringing: list[ServerTransaction] = []

    def on_request(tx: ServerTransaction) -> None:
        if tx.request.method == "INVITE":
            tx.reply(180)
            ringing.append(tx)

    server = SipEndpoint(on_request)
    await server.listen("UDP")
    try:
        uri = f"sip:pbx@127.0.0.1:{port_of(server, 'UDP')}"
        invite = options(uri)
        invite.method = invite.cseq_method = "INVITE"
        invite.contacts = [NameAddr("sip:tester@127.0.0.1")]
        got: asyncio.Queue[SipResponse] = asyncio.Queue()

        def on_response(tx: ClientTransaction, response: SipResponse) -> None:
            got.put_nowait(response)

        tx = await uac.start_request(invite, on_response)
        assert (await asyncio.wait_for(got.get(), WAIT)).status == 180
        assert isinstance(tx, ClientInviteTransaction)
        cancel_tx = tx.cancel()
        assert cancel_tx is not None
        assert (await asyncio.wait_for(got.get(), WAIT)).status == 487
        assert ringing[0].cancelled
        for _ in range(50):
            if cancel_tx.last_response is not None:
                break
            await asyncio.sleep(0.02)
        assert cancel_tx.last_response is not None and cancel_tx.last_response.status == 200
    finally:
        await server.close()


# -- TLS -----------------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for 127.0.0.1 (cryptography, else openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        import datetime

        from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives import hashes, serialization  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives.asymmetric import ec  # type: ignore[import-not-found, unused-ignore]
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("TLS test needs the cryptography package or the openssl CLI")
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return cert, key
    import ipaddress

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


async def test_tls_request_response(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    recorder = Recorder()
    server = SipEndpoint(recorder)
    client = SipEndpoint(lambda tx: None)
    await server.listen("TLS", ssl_context=server_ctx)
    await client.listen("TLS", ssl_context=server_ctx, client_context=client_ctx)
    try:
        uri = f"sips:pbx@127.0.0.1:{port_of(server, 'TLS')}"
        for _ in range(2):
            response = await asyncio.wait_for(client.request(options(uri)), WAIT)
            assert response.status == 200
        assert recorder.requests[0].vias[0].transport == "TLS"
        tls = client.transports.get("TLS")
        assert isinstance(tls, StreamTransport) and len(tls.connections) == 1
    finally:
        await client.close()
        await server.close()


# -- WebSocket -----------------------------------------------------------------------------


async def test_websocket_with_sip_subprotocol(uas: tuple[SipEndpoint, Recorder]) -> None:
    from websockets.asyncio.client import connect

    server, recorder = uas
    url = f"ws://127.0.0.1:{port_of(server, 'WS')}"
    async with connect(url, subprotocols=["sip"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "sip"
        via = "SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKws1"
        await ws.send(raw_request(via=via).decode())
        frame = await asyncio.wait_for(ws.recv(), WAIT)
        response = parse_message(frame.encode() if isinstance(frame, str) else frame)
        assert isinstance(response, SipResponse) and response.status == 200
        await ws.send(raw_request(via=via.replace("ws1", "ws2"), content_length=False))
        frame = await asyncio.wait_for(ws.recv(), WAIT)
        assert b"200 OK" in (frame.encode() if isinstance(frame, str) else frame)
        await ws.send("\r\n\r\n")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "\r\n"
        await ws.send(raw_request(via=via.replace("ws1", "ws3"), cseq="nope INVITE"))
        frame = await asyncio.wait_for(ws.recv(), WAIT)
        assert b"400 Bad Request" in (frame.encode() if isinstance(frame, str) else frame)
    assert recorder.requests[0].vias[0].transport == "WS"
    assert recorder.requests[0].vias[0].received == "127.0.0.1"


async def test_websocket_without_sip_subprotocol_is_refused(
    uas: tuple[SipEndpoint, Recorder],
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    server, _ = uas
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port_of(server, 'WS')}"):
            pass
    assert info.value.response.status_code == 400


async def test_transports_listed(uas: tuple[SipEndpoint, Recorder]) -> None:
    server, _ = uas
    assert sorted(server.transports.transports) == ["TCP", "UDP", "WS"]
    assert all(t.sent_by[0] == "127.0.0.1" for t in server.transports.transports.values())
