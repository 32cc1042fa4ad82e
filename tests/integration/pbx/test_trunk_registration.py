"""Pomelo registers to a provider with the trunk's credentials (digest), and keeps it fresh.

The "provider" is a second Pomelo SIP server on 127.0.0.2 whose registrar knows an account for
the trunk: a real registrar on the far side, over real UDP."""

from __future__ import annotations

import asyncio

import httpx

from pomelo.auth.access import Actor
from pomelo.auth.schemas import TenantUpdate
from pomelo.pbx.registrar import RegistrarService
from pomelo.pbx.schemas import SipAccountCreate
from pomelo.pbx.server import SipServer
from tests.conftest import Server, TenantFixture


async def wait_status(
    http: httpx.AsyncClient, trunk_id: str, headers: dict[str, str], wanted: str
) -> dict:
    for _ in range(100):
        state = (await http.get(f"/api/v1/trunks/{trunk_id}/registration", headers=headers)).json()
        if state["status"] == wanted:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"trunk never became {wanted}: {state}")


async def test_register_trunk_reaches_and_stays_registered(
    server: Server, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    platform = server.platform
    provider_tenant = Actor.system(other_tenant.id)
    await platform.directory.update_tenant(provider_tenant, TenantUpdate(sip_domain="127.0.0.2"))
    await platform.pbx.create_account(
        provider_tenant, SipAccountCreate(extension="7001", password="provider-pass-7001")
    )
    await platform.sip_cache.reload()
    provider = SipServer("127.0.0.2", 0, transports=("UDP",))
    registrar = RegistrarService(platform.sip_cache, platform.db, b"p" * 32, qualify_seconds=0)
    provider.route("REGISTER", registrar.handle_register)
    await provider.start()
    await registrar.start(provider.endpoint)
    admin = tenant["administrator"].headers
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            created = await http.post(
                "/api/v1/trunks",
                headers=admin,
                json={
                    "name": "Provider",
                    "kind": "register",
                    "host": "127.0.0.2",
                    "port": provider.port,
                    "username": "7001",
                    "password": "provider-pass-7001",
                    "register_expires": 120,
                },
            )
            assert created.status_code == 201, created.text
            trunk_id = created.json()["id"]
            state = await wait_status(http, trunk_id, admin, "registered")
            assert state["expires_in"] == 120
            account = platform.sip_cache.account(other_tenant.id, "7001")
            assert account is not None
            (contact,) = registrar.contacts(account.id)
            assert contact.uri == f"sip:7001@127.0.0.1:{platform.sip_server.port}"
            # A wrong password: the provider refuses, the state says so, nothing crashes.
            await http.patch(
                f"/api/v1/trunks/{trunk_id}", headers=admin, json={"password": "wrong-password-123"}
            )
            failed = await wait_status(http, trunk_id, admin, "failed")
            assert "401" in failed["detail"]
            theirs = await http.get(
                f"/api/v1/trunks/{trunk_id}/registration",
                headers=other_tenant["administrator"].headers,
            )
            assert theirs.status_code == 404
    finally:
        await registrar.stop()
        await provider.stop()
        await platform.directory.update_tenant(
            provider_tenant, TenantUpdate(sip_domain=f"{other_tenant.slug}.sip")
        )
