"""Registration over real SIP: SIPp REGISTERs with digest auth against the running platform."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from pomelo.pbx.schemas import SipAccountCreate
from tests.conftest import Server, TenantFixture, require_tool

REGISTER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[field0] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field1]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field1]@[local_ip]:[local_port]>
      Expires: [field3]
      Max-Forwards: 70
      User-Agent: SIPp-test
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[field0] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field1]@[field0]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[field0]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field1]@[local_ip]:[local_port]>
      Expires: [field3]
      [field2]
      Max-Forwards: 70
      User-Agent: SIPp-test
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

FAIL_SCENARIO = REGISTER.replace('<recv response="200"/>', '<recv response="401"/>')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def sipp_register(
    tmp: Path,
    server: Server,
    domain: str,
    user: str,
    password: str,
    *,
    expires: int = 300,
    scenario: str = REGISTER,
) -> tuple[int, str]:
    sipp = require_tool("sipp", "sip-tester")
    (tmp / "reg.xml").write_text(scenario)
    (tmp / "users.csv").write_text(
        f"SEQUENTIAL\n{domain};{user};[authentication username={user} password={password}];"
        f"{expires};\n"
    )
    port = server.platform.sip_server.port
    process = await asyncio.create_subprocess_exec(
        sipp,
        f"127.0.0.1:{port}",
        "-sf",
        "reg.xml",
        "-inf",
        "users.csv",
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-timeout",
        "15s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        cwd=tmp,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out.decode(errors="replace")


async def account(server: Server, tenant: TenantFixture, extension: str, password: str) -> None:
    from pomelo.auth.access import Actor

    await server.platform.pbx.create_account(
        Actor.system(tenant.id), SipAccountCreate(extension=extension, password=password)
    )
    await server.platform.sip_cache.reload()


async def test_register_with_digest_creates_a_binding(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "301", "long-sip-password-301")
    domain = f"{tenant.slug}.sip"
    code, out = await sipp_register(tmp_path, server, domain, "301", "long-sip-password-301")
    assert code == 0, out
    info = server.platform.sip_cache.account(tenant.id, "301")
    assert info is not None
    contacts = server.platform.registrar.contacts(info.id)
    assert len(contacts) == 1
    assert contacts[0].uri.startswith("sip:301@127.0.0.1:")
    await server.platform.registrar.flush()  # persisted: a restart keeps it
    from sqlalchemy import select

    from pomelo.pbx.models import Registration

    async with server.platform.db.session() as s:
        rows = list(await s.scalars(select(Registration).where(Registration.account_id == info.id)))
    assert [r.contact for r in rows] == [contacts[0].uri]


async def test_wrong_password_and_unknown_user_get_the_same_challenge(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "302", "long-sip-password-302")
    domain = f"{tenant.slug}.sip"
    code, out = await sipp_register(
        tmp_path, server, domain, "302", "wrong-password", scenario=FAIL_SCENARIO
    )
    assert code == 0, out
    code, out = await sipp_register(
        tmp_path, server, domain, "399", "whatever", scenario=FAIL_SCENARIO
    )
    assert code == 0, out
    info = server.platform.sip_cache.account(tenant.id, "302")
    assert info is not None
    assert server.platform.registrar.contacts(info.id) == []


async def test_unregister_with_expires_zero(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "303", "long-sip-password-303")
    domain = f"{tenant.slug}.sip"
    assert (await sipp_register(tmp_path, server, domain, "303", "long-sip-password-303"))[0] == 0
    info = server.platform.sip_cache.account(tenant.id, "303")
    assert info is not None
    assert len(server.platform.registrar.contacts(info.id)) == 1
    code, out = await sipp_register(
        tmp_path, server, domain, "303", "long-sip-password-303", expires=0
    )
    assert code == 0, out
    # The contact URI carries SIPp's new local port, so this removes only that one binding;
    # a wildcard or same-contact unregister is covered by the registrar unit tests.
    assert len(server.platform.registrar.contacts(info.id)) == 1


@pytest.mark.parametrize("domain", ["unknown.example", "127.0.0.9"])
async def test_unknown_domain_is_refused(
    server: Server, tenant: TenantFixture, tmp_path: Path, domain: str
) -> None:
    scenario = REGISTER.split('<recv response="401"')[0] + '<recv response="404"/>\n</scenario>'
    code, out = await sipp_register(tmp_path, server, domain, "301", "x", scenario=scenario)
    assert code == 0, out


async def test_sha256_digest_and_restart_keeps_bindings(
    server: Server, tenant: TenantFixture
) -> None:
    """Pomelo's own client answers the SHA-256 challenge (RFC 8760); a new registrar on the
    same database (a restart) knows the binding."""
    from pomelo.pbx.registrar import RegistrarService
    from pomelo.sip.digest import answer_challenge
    from pomelo.sip.endpoint import SipEndpoint
    from pomelo.sip.message import SipRequest
    from pomelo.sip.uri import NameAddr

    await account(server, tenant, "304", "long-sip-password-304")
    domain = f"{tenant.slug}.sip"
    phone = SipEndpoint(lambda tx: tx.reply(200))
    transport = await phone.listen("UDP", "127.0.0.1", 0)
    port = transport.local_address[1]

    def register(cseq: int, authorization: str | None = None) -> SipRequest:
        headers = [("Expires", "600")]
        if authorization:
            headers.append(("Authorization", authorization))
        return SipRequest(
            "REGISTER",
            f"sip:{domain}",
            from_=NameAddr(f"sip:304@{domain}", params={"tag": "t1"}),
            to=NameAddr(f"sip:304@{domain}"),
            call_id="sha-test",
            cseq=cseq,
            contacts=[NameAddr(f"sip:304@127.0.0.1:{port}")],
            headers=headers,
        )

    # A registrar configured the RFC 8760 way (SHA-256 first), on its own SIP port.
    from pomelo.pbx.server import SipServer
    from pomelo.sip.transport import Target

    modern = SipServer("127.0.0.1", 0, transports=("UDP",))
    sha_first = RegistrarService(
        server.platform.sip_cache,
        server.platform.db,
        b"s" * 32,
        qualify_seconds=0,
        algorithms=("SHA-256", "MD5"),
    )
    modern.route("REGISTER", sha_first.handle_register)
    await modern.start()
    await sha_first.start(modern.endpoint)
    target = Target(transport, ("127.0.0.1", modern.port))
    try:
        challenge = await phone.request(register(1), target=target)
        assert challenge.status == 401
        offered = challenge.header_values("WWW-Authenticate")
        sha = next(h for h in offered if "SHA-256" in h)
        assert any("MD5" in h for h in offered)
        answer = answer_challenge(sha, "REGISTER", f"sip:{domain}", "304", "long-sip-password-304")
        assert "SHA-256" in answer
        ok = await phone.request(register(2, answer), target=target)
        assert ok.status == 200, ok.status
        assert ok.header_values("Contact") == [f"<sip:304@127.0.0.1:{port}>;expires=600"]
        replay = await phone.request(register(3, answer), target=target)  # same nonce, same nc
        assert replay.status == 401
    finally:
        await phone.close()
        await sha_first.stop()
        await modern.stop()
    info = server.platform.sip_cache.account(tenant.id, "304")
    assert info is not None
    restarted = RegistrarService(
        server.platform.sip_cache, server.platform.db, b"k" * 32, qualify_seconds=0
    )
    await restarted.start()
    try:
        assert [c.uri for c in restarted.contacts(info.id)] == [f"sip:304@127.0.0.1:{port}"]
    finally:
        await restarted.stop()


async def test_registrations_api_is_tenant_scoped(
    server: Server, tenant: TenantFixture, other_tenant: TenantFixture, tmp_path: Path
) -> None:
    import httpx

    await account(server, tenant, "305", "long-sip-password-305")
    code, out = await sipp_register(
        tmp_path, server, f"{tenant.slug}.sip", "305", "long-sip-password-305"
    )
    assert code == 0, out
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        mine = (
            await http.get("/api/v1/registrations", headers=tenant["administrator"].headers)
        ).json()
        theirs = (
            await http.get("/api/v1/registrations", headers=other_tenant["administrator"].headers)
        ).json()
        denied = await http.get("/api/v1/registrations", headers=tenant["operator"].headers)
    assert [r["extension"] for r in mine] == ["305"]
    assert mine[0]["user_agent"] == "SIPp-test"
    assert 0 < mine[0]["expires_in"] <= 300
    assert theirs == []
    assert denied.status_code == 403
