"""PBX configuration through the API: SIP accounts, trunks, numbers."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from pomelo.pbx.models import SipAccount
from pomelo.sip.digest import DigestAlgorithm, ha1
from tests.conftest import Server, TenantFixture
from tests.integration.api.test_basics import assert_problem


async def test_accounts_get_strong_passwords_shown_once(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    created = await http.post(
        "/api/v1/sip-accounts",
        headers=admin,
        json={"extension": "555", "user_id": tenant["marketer"].id},
    )
    assert created.status_code == 201, created.text
    account = created.json()
    password = account["password"]
    assert len(password) >= 20
    assert password.isalnum()
    fetched = (await http.get(f"/api/v1/sip-accounts/{account['id']}", headers=admin)).json()
    assert "password" not in fetched
    assert password not in str((await http.get("/api/v1/audit", headers=admin)).json())
    async with server.platform.db.session() as s:
        row = await s.scalar(select(SipAccount).where(SipAccount.id == account["id"]))
    assert row is not None
    assert row.ha1_sha256 == ha1("555", account["domain"], password, DigestAlgorithm.SHA256)
    assert row.ha1_md5 == ha1("555", account["domain"], password, DigestAlgorithm.MD5)
    reset = (
        await http.post(f"/api/v1/sip-accounts/{account['id']}/password", headers=admin)
    ).json()
    assert reset["password"] != password
    mine = (await http.get("/api/v1/me/sip-accounts", headers=tenant["marketer"].headers)).json()
    assert [a["extension"] for a in mine] == ["555"]


async def test_bulk_creation_and_conflicts(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    admin = tenant["administrator"].headers
    bulk = await http.post(
        "/api/v1/sip-accounts/bulk", headers=admin, json={"first_extension": "0700", "count": 5}
    )
    assert bulk.status_code == 201
    assert [a["extension"] for a in bulk.json()] == ["0700", "0701", "0702", "0703", "0704"]
    assert len({a["password"] for a in bulk.json()}) == 5
    overlapping = await http.post(
        "/api/v1/sip-accounts/bulk", headers=admin, json={"first_extension": "0703", "count": 3}
    )
    assert_problem(overlapping, 409, "extension-taken")
    listed = (await http.get("/api/v1/sip-accounts?limit=100", headers=admin)).json()
    assert "0705" not in {a["extension"] for a in listed["items"]}  # all or nothing
    assert_problem(
        await http.post(
            "/api/v1/sip-accounts", headers=admin, json={"extension": "556", "password": "short"}
        ),
        422,
        "weak-password",
    )
    assert_problem(
        await http.post(
            "/api/v1/sip-accounts",
            headers=admin,
            json={"extension": "557", "allowed_cidrs": ["10.0.0.300/8"]},
        ),
        422,
        "invalid-cidr",
    )
    assert_problem(
        await http.post("/api/v1/sip-accounts", headers=admin, json={"extension": "12a"}),
        422,
        "invalid-request",
    )


async def test_account_restrictions_are_editable(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    r = await http.patch(
        f"/api/v1/sip-accounts/{tenant.account_id}",
        headers=admin,
        json={
            "allowed_cidrs": ["127.0.0.0/8", "2001:db8::/32"],
            "allowed_countries": ["ru", "KZ"],
            "enabled": False,
        },
    )
    body = r.json()
    assert body["allowed_countries"] == ["RU", "KZ"]
    assert body["allowed_cidrs"] == ["127.0.0.0/8", "2001:db8::/32"]
    assert body["enabled"] is False


async def test_trunks_keep_their_password_secret(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    assert_problem(
        await http.post(
            "/api/v1/trunks",
            headers=admin,
            json={"name": "Reg", "kind": "register", "host": "sip.example.com"},
        ),
        422,
        "trunk-credentials-missing",
    )
    trunk = await http.post(
        "/api/v1/trunks",
        headers=admin,
        json={
            "name": "Reg",
            "kind": "register",
            "host": "sip.example.com",
            "username": "acct",
            "password": "provider-secret-123",
            "transport": "tcp",
        },
    )
    assert trunk.status_code == 201
    assert trunk.json()["has_password"] is True
    assert "provider-secret-123" not in trunk.text
    assert_problem(
        await http.post(
            "/api/v1/trunks",
            headers=admin,
            json={"name": "Reg", "kind": "peer", "host": "192.0.2.1"},
        ),
        409,
        "trunk-name-taken",
    )
    listed = await http.get("/api/v1/trunks", headers=admin)
    assert "provider-secret-123" not in listed.text
    audit = await http.get("/api/v1/audit?object_type=trunk", headers=admin)
    assert "provider-secret-123" not in audit.text


async def test_numbers_are_normalised_and_unique_across_tenants(
    http: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    r = await http.post(
        "/api/v1/numbers",
        headers=admin,
        json={"number": "+7 (495) 123-45-67", "route_kind": "extension", "route_target": "101"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["number"] == "+74951234567"
    other = other_tenant["administrator"].headers
    assert_problem(
        await http.post("/api/v1/numbers", headers=other, json={"number": "+74951234567"}),
        409,
        "number-taken",
    )
    assert_problem(
        await http.post("/api/v1/numbers", headers=admin, json={"number": "hello"}),
        422,
        "invalid-number",
    )
    assert_problem(
        await http.post(
            "/api/v1/numbers",
            headers=admin,
            json={
                "number": "+74951234568",
                "route_kind": "group",
                "route_target": other_tenant.group_ids[0],
            },
        ),
        404,
        "no-such-group",
    )
    assert_problem(
        await http.post(
            "/api/v1/numbers",
            headers=admin,
            json={"number": "+74951234569", "route_kind": "employee"},
        ),
        422,
        "route-target",
    )
    assert_problem(
        await http.patch(
            f"/api/v1/numbers/{tenant.number_id}",
            headers=admin,
            json={"trunk_id": other_tenant.trunk_id},
        ),
        404,
        "no-such-trunk",
    )
