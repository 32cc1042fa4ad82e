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
