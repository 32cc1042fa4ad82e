"""A real softphone (baresip) against Pomelo's SIP server."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import Server, TenantFixture
from tests.integration.pbx.test_registrar import account
from tests.support.baresip import Baresip


async def test_baresip_registers_and_shows_in_the_api(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "401", "long-sip-password-401")
    phone = Baresip(
        tmp_path / "phone",
        user="401",
        domain=f"{tenant.slug}.sip",
        password="long-sip-password-401",
        proxy=("127.0.0.1", server.platform.sip_server.port),
    )
    await phone.start()
    try:
        assert await phone.registration() == "OK"
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            listed = (
                await http.get("/api/v1/registrations", headers=tenant["administrator"].headers)
            ).json()
        assert [r["extension"] for r in listed] == ["401"]
        assert listed[0]["user_agent"].startswith("baresip")
    finally:
        await phone.stop()


async def test_baresip_with_a_wrong_password_is_refused(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    await account(server, tenant, "402", "long-sip-password-402")
    phone = Baresip(
        tmp_path / "phone",
        user="402",
        domain=f"{tenant.slug}.sip",
        password="not-the-password",
        proxy=("127.0.0.1", server.platform.sip_server.port),
    )
    await phone.start()
    try:
        assert await phone.registration() == "ERR"
    finally:
        await phone.stop()


async def test_two_baresip_phones_call_each_other(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from pomelo.pbx.cdr_models import CallRecord

    domain = f"{tenant.slug}.sip"
    proxy = ("127.0.0.1", server.platform.sip_server.port)
    await account(server, tenant, "411", "long-sip-password-411")
    await account(server, tenant, "412", "long-sip-password-412")
    caller = Baresip(
        tmp_path / "a", user="411", domain=domain, password="long-sip-password-411", proxy=proxy
    )
    callee = Baresip(
        tmp_path / "b",
        user="412",
        domain=domain,
        password="long-sip-password-412",
        proxy=proxy,
        auto_answer=True,
    )
    await caller.start()
    await callee.start()
    try:
        assert await caller.registration() == "OK"
        assert await callee.registration() == "OK"
        await caller.command("dial", f"sip:412@{domain}")
        incoming = await callee.wait_for("CALL_ESTABLISHED")
        assert incoming["direction"] == "incoming"
        assert incoming["peeruri"] == f"sip:411@{domain}"
        await caller.wait_for("CALL_ESTABLISHED")
        await caller.command("hangup")
        await callee.wait_for("CALL_CLOSED")
    finally:
        await caller.stop()
        await callee.stop()
    await server.platform.call_recorder.drain()
    async with server.platform.db.session() as s:
        records = list(
            await s.scalars(
                select(CallRecord).where(
                    CallRecord.tenant_id == tenant.id, CallRecord.to_number == "412"
                )
            )
        )
    assert [(r.disposition, r.direction, r.hangup_side) for r in records] == [
        ("answered", "internal", "caller")
    ]
