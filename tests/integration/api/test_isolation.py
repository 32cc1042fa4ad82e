"""Every API route, walked from the OpenAPI document, as another tenant and as roles without the
right. New routes join automatically; a route that declares no access rule fails the suite."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from pomelo.auth.permissions import BUILTIN_ROLES, BuiltinRole
from tests.conftest import ROLES, TenantFixture

PUBLIC_ROUTES = {("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/logout")}
METHODS = ("get", "post", "put", "patch", "delete")


async def operations(http: httpx.AsyncClient) -> list[tuple[str, str, dict[str, Any], dict]]:
    spec = (await http.get("/api/openapi.json")).json()
    found = []
    for path, item in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in METHODS:
            if method in item:
                found.append((method, path, item[method], spec))
    assert len(found) > 20
    return found


def ids_of(t: TenantFixture) -> dict[str, str]:
    """Path/body parameter name → an object of that kind in tenant `t`."""
    return {
        "user_id": t["operator"].id,
        "group_id": t.group_ids[0],
        "role_id": t.custom_role_id,
        "key_id": t["operator"].api_key_id,
        "account_id": t.account_id,
        "trunk_id": t.trunk_id,
        "number_id": t.number_id,
        "recording_id": t.recording_id,
        "call_id": "c0ffee00c0ffee00c0ffee00c0ffee00",
        "ip": "203.0.113.254",
    }


def example_body(op: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    examples = schema.get("examples")
    assert examples, f"give the request model of {op['operationId']} an example"
    return dict(examples[0])


def substitute(text: str, ids: dict[str, str]) -> tuple[str, bool]:
    used = False

    def repl(match: re.Match[str]) -> str:
        nonlocal used
        name = match.group(1)
        assert name in ids, f"isolation test: add a fixture object for parameter {name!r}"
        used = True
        return ids[name]

    return re.sub(r"\{(\w+)\}", repl, text), used


async def call(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    op: dict,
    spec: dict,
    ids: dict[str, str],
    headers: dict[str, str],
) -> tuple[httpx.Response, bool]:
    url, in_path = substitute(path, ids)
    body = example_body(op, spec)
    in_body = False
    if body is not None:
        text, in_body = substitute(json.dumps(body), ids)
        body = json.loads(text)
    response = await http.request(method.upper(), url, json=body, headers=headers)
    return response, in_path or in_body


async def test_every_route_declares_its_access(http: httpx.AsyncClient) -> None:
    public = set()
    for method, path, op, _spec in await operations(http):
        access = op.get("x-pomelo-access")
        assert access, f"{method.upper()} {path} declares no access rule"
        if access == "public":
            public.add((method, path))
    assert public == PUBLIC_ROUTES


async def test_another_tenants_ids_are_never_reachable(
    http: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    foreign = ids_of(other_tenant)
    secrets = set(foreign.values()) | {m.id for m in other_tenant.members.values()}
    admin = tenant["administrator"]
    for method, path, op, spec in await operations(http):
        if op["x-pomelo-access"] == "public":
            continue
        response, used_foreign = await call(http, method, path, op, spec, foreign, admin.headers)
        where = f"{method.upper()} {path} → {response.status_code} {response.text[:200]}"
        assert response.status_code < 500, where
        if used_foreign:
            assert response.status_code in (403, 404), where
        else:  # lists and own-tenant writes must not leak the other tenant's objects
            assert not any(s in response.text for s in secrets), where
    await assert_untouched(http, other_tenant)


async def assert_untouched(http: httpx.AsyncClient, t: TenantFixture) -> None:
    h = t["administrator"].headers
    users = (await http.get("/api/v1/users?limit=100", headers=h)).json()
    assert users["total"] == 7
    assert all(u["is_active"] for u in users["items"])
    groups = (await http.get("/api/v1/groups", headers=h)).json()["items"]
    assert sorted(g["name"] for g in groups) == ["Sales", "Support"]
    sales = next(g for g in groups if g["id"] == t.group_ids[0])
    assert t["operator"].id in sales["member_ids"]
    keys = (await http.get("/api/v1/api-keys", headers=h)).json()
    assert all(k["revoked_at"] is None for k in keys)


@pytest.mark.parametrize("role", [*ROLES, "nobody"])
async def test_roles_without_the_right_are_refused(
    http: httpx.AsyncClient, tenant: TenantFixture, role: str
) -> None:
    member = tenant[role]
    granted = set(BUILTIN_ROLES[BuiltinRole(role)][2]) if role != "nobody" else set()
    refused = 0
    for method, path, op, spec in await operations(http):
        access = op["x-pomelo-access"]
        if access in ("public", "authenticated") or access in granted:
            continue
        response, _ = await call(http, method, path, op, spec, ids_of(tenant), member.headers)
        assert response.status_code == 403, f"{role}: {method.upper()} {path} → {response.text}"
        assert response.json()["error_id"] == "forbidden"
        refused += 1
    if role == "nobody":
        assert refused > 15
