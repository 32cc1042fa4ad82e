"""The SIP security API over real HTTP: bans (platform-wide) and failed attempts (per tenant).

Until the composition root wires `Platform.sip_security` and the router, this module builds its
own app on the shared platform (same database, same event dispatcher) and serves it with
uvicorn on a loopback port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from pomelo.api import sip_security as sip_security_api
from pomelo.app import create_app
from pomelo.pbx.security import SipSecurity
from pomelo.storage.eventlog import EventLogEntry
from tests.conftest import Server, TenantFixture
from tests.integration.api.test_basics import assert_problem

COUNTRIES = {"77.88.8.8": "RU"}


@pytest.fixture(scope="module")
async def security(server: Server) -> AsyncIterator[SipSecurity]:
    platform = server.platform
    previous = getattr(platform, "sip_security", None)
    security = SipSecurity(CollectorRegistry(), platform.uow, countries=COUNTRIES.get)
    platform.sip_security = security
    yield security
    await security.close()
    platform.sip_security = previous


@pytest.fixture(scope="module")
async def api(server: Server, security: SipSecurity) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(server.platform)
    if "/api/v1/sip/bans" not in app.openapi()["paths"]:  # not wired in create_app yet
        app.include_router(sip_security_api.router)
        app.openapi_schema = None
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    web = uvicorn.Server(config)
    task = asyncio.create_task(web.serve())
    while not web.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = web.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    web.should_exit = True
    await task


def attack(security: SipSecurity, ip: str, tenant_id: str | None, times: int = 5) -> None:
    for n in range(times):
        security.auth_failed(ip, tenant_id, f"10{n}")


async def events_of(server: Server, kind: str, tenant_id: str) -> list[dict[str, object]]:
    async with server.platform.db.session() as s:
        rows = await s.scalars(
            select(EventLogEntry).where(
                EventLogEntry.kind == kind, EventLogEntry.tenant_id == tenant_id
            )
        )
        return [r.payload for r in rows]


async def test_bans_are_listed_to_every_tenant_and_lifted_with_an_audit_trail(
    server: Server,
    api: httpx.AsyncClient,
    security: SipSecurity,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
) -> None:
    attack(security, "198.51.100.101", tenant.id)
    attack(security, "2001:db8:77:1::9", None)
    await security.flush()
    admin, other = tenant["administrator"].headers, other_tenant["administrator"].headers
    for headers in (admin, other):
        listed = await api.get("/api/v1/sip/bans", headers=headers)
        assert listed.status_code == 200, listed.text
        bans = {b["ip"]: b for b in listed.json()["items"]}
        assert {"198.51.100.101", "2001:db8:77:1::/64"} <= set(bans)
        assert bans["198.51.100.101"]["count"] == 1
    # Only the attacked tenant hears about the ban.
    [banned] = await events_of(server, "SipSourceBanned", tenant.id)
    assert banned["ip"] == "198.51.100.101"
    assert banned["reason"] == "auth-failures"
    assert await events_of(server, "SipSourceBanned", other_tenant.id) == []

    for source in ("198.51.100.101", "2001:db8:77:1::/64"):
        assert (await api.delete(f"/api/v1/sip/bans/{source}", headers=admin)).status_code == 204
    listed = (await api.get("/api/v1/sip/bans", headers=admin)).json()["items"]
    assert not {"198.51.100.101", "2001:db8:77:1::/64"} & {b["ip"] for b in listed}
    assert security.admit("198.51.100.101", "REGISTER")
    audit = (await api.get("/api/v1/audit?object_type=sip_ban", headers=admin)).json()["items"]
    assert {(e["action"], e["object_id"]) for e in audit} == {
        ("sip_ban.delete", "198.51.100.101"),
        ("sip_ban.delete", "2001:db8:77:1::/64"),
    }
    assert audit[0]["actor_id"] == tenant["administrator"].id
    assert len(await events_of(server, "SipSourceUnbanned", tenant.id)) == 2

    assert_problem(
        await api.delete("/api/v1/sip/bans/198.51.100.101", headers=admin), 404, "no-such-ban"
    )
    for bad in ("not-an-ip", "198.51.100.0/24", "1.2.3.4.5", "%20"):
        assert_problem(
            await api.delete(f"/api/v1/sip/bans/{bad}", headers=admin), 422, "invalid-ip"
        )
    assert_problem(
        await api.delete("/api/v1/sip/bans/" + "1" * 100, headers=admin), 422, "invalid-request"
    )


async def test_repeat_offences_escalate_after_an_unban(
    api: httpx.AsyncClient, security: SipSecurity, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    attack(security, "198.51.100.102", tenant.id)
    assert (await api.delete("/api/v1/sip/bans/198.51.100.102", headers=admin)).status_code == 204
    attack(security, "198.51.100.102", tenant.id)
    bans = (await api.get("/api/v1/sip/bans?limit=500", headers=admin)).json()["items"]
    assert [b["count"] for b in bans if b["ip"] == "198.51.100.102"] == [2]


async def test_attempts_are_shown_only_to_the_attacked_tenant(
    api: httpx.AsyncClient,
    security: SipSecurity,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
) -> None:
    security.auth_failed("198.51.100.110", tenant.id, "mine-101")
    security.auth_failed("198.51.100.111", other_tenant.id, "theirs-202")
    security.auth_failed("198.51.100.112", None, "nobodys-303")
    security.auth_failed("198.51.100.113", tenant.id, "mine-102")
    mine = await api.get("/api/v1/sip/attempts", headers=tenant["administrator"].headers)
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert [(a["ip"], a["username"]) for a in body["items"]] == [
        ("198.51.100.113", "mine-102"),
        ("198.51.100.110", "mine-101"),
    ]
    assert body["total"] == 2
    assert {a["tenant_id"] for a in body["items"]} == {tenant.id}
    assert "theirs" not in mine.text and "nobodys" not in mine.text
    theirs = await api.get("/api/v1/sip/attempts", headers=other_tenant["administrator"].headers)
    assert [a["username"] for a in theirs.json()["items"]] == ["theirs-202"]
    paged = await api.get(
        "/api/v1/sip/attempts?limit=1&offset=1", headers=tenant["administrator"].headers
    )
    assert [a["username"] for a in paged.json()["items"]] == ["mine-101"]


@pytest.mark.parametrize(
    "role", ["operator", "group_head", "marketer", "accountant", "company_head", "nobody"]
)
async def test_roles_without_pbx_manage_are_refused(
    api: httpx.AsyncClient, security: SipSecurity, tenant: TenantFixture, role: str
) -> None:
    attack(security, "198.51.100.120", tenant.id)
    headers = tenant[role].headers
    for method, path in (
        ("GET", "/api/v1/sip/bans"),
        ("GET", "/api/v1/sip/attempts"),
        ("DELETE", "/api/v1/sip/bans/198.51.100.120"),
    ):
        assert_problem(await api.request(method, path, headers=headers), 403, "forbidden")
    assert security.is_banned("198.51.100.120")
    assert_problem(await api.get("/api/v1/sip/bans"), 401, "not-authenticated")


async def test_the_routes_are_documented(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/api/openapi.json")).json()
    for path, method in (
        ("/api/v1/sip/bans", "get"),
        ("/api/v1/sip/bans/{ip}", "delete"),
        ("/api/v1/sip/attempts", "get"),
    ):
        assert spec["paths"][path][method]["x-pomelo-access"] == "pbx.manage"
