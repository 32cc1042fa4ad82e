"""Employees, groups, roles, logins and the audit trail through the HTTP API."""

from __future__ import annotations

import httpx

from tests.conftest import PASSWORD, Server, TenantFixture
from tests.integration.api.test_basics import assert_problem


async def login(
    http: httpx.AsyncClient, t: TenantFixture, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await http.post(
        "/api/v1/auth/login", json={"tenant": t.slug, "username": username, "password": password}
    )


async def test_login_me_logout(server: Server, tenant: TenantFixture) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await login(http, tenant, "operator")
        assert response.status_code == 200
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        me = (await http.get("/api/v1/me")).json()
        assert me["user"]["username"] == "operator"
        assert me["scope"] == "own"
        assert "users.manage" not in me["permissions"]
        token = http.cookies["pomelo_session"]
        assert (await http.post("/api/v1/auth/logout")).status_code == 204
    async with httpx.AsyncClient(
        base_url=server.base_url, cookies={"pomelo_session": token}
    ) as replay:
        assert_problem(await replay.get("/api/v1/me"), 401, "session-expired")


async def test_bad_logins_look_the_same(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    answers = [
        await login(http, tenant, "operator", "wrong password"),
        await login(http, tenant, "no-such-user"),
        await http.post(
            "/api/v1/auth/login",
            json={"tenant": "no-such-tenant", "username": "operator", "password": "x"},
        ),
    ]
    bodies = [assert_problem(a, 401, "bad-credentials") for a in answers]
    assert len({b["detail"] for b in bodies}) == 1


async def test_sessions_expire(server: Server, tenant: TenantFixture) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        assert (await login(http, tenant, "marketer")).status_code == 200
        assert (await http.get("/api/v1/me")).status_code == 200
        server.clock.advance(13 * 3600)
        try:
            assert_problem(await http.get("/api/v1/me"), 401, "session-expired")
        finally:
            server.clock.advance(-13 * 3600)


async def test_employee_lifecycle_and_audit(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    admin = tenant["administrator"].headers
    created = await http.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": "ivan",
            "display_name": "Ivan Petrov",
            "password": "a long passphrase",
            "role": "operator",
            "group_ids": [tenant.group_ids[1]],
            "email": "ivan@example.com",
        },
    )
    assert created.status_code == 201, created.text
    ivan = created.json()
    assert ivan["group_ids"] == [tenant.group_ids[1]]
    assert "password" not in ivan
    assert "password_hash" not in ivan
    assert_problem(
        await http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "ivan", "display_name": "Again", "password": "a long passphrase"},
        ),
        409,
        "username-taken",
    )
    assert_problem(
        await http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "weak", "display_name": "Weak", "password": "demo"},
        ),
        422,
        "weak-password",
    )
    assert_problem(
        await http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "x", "display_name": "X", "role": "emperor"},
        ),
        422,
        "no-such-role",
    )
    updated = await http.patch(
        f"/api/v1/users/{ivan['id']}",
        headers=admin,
        json={"display_name": "Ivan P.", "password": "another long one"},
    )
    assert updated.json()["display_name"] == "Ivan P."
    assert (await login(http, tenant, "ivan", "another long one")).status_code == 200
    await http.patch(f"/api/v1/users/{ivan['id']}", headers=admin, json={"is_active": False})
    assert_problem(await login(http, tenant, "ivan", "another long one"), 401, "bad-credentials")
    trail = (await http.get(f"/api/v1/audit?object_id={ivan['id']}", headers=admin)).json()
    actions = [e["action"] for e in trail["items"]]
    assert actions.count("user.update") == 2
    assert "user.create" in actions
    rename = next(
        e
        for e in trail["items"]
        if e["action"] == "user.update"
        and e["before"]["display_name"] != e["after"]["display_name"]
    )
    assert rename["before"]["display_name"] == "Ivan Petrov"
    assert rename["actor_name"] == "administrator"
    assert rename["after"]["password_changed"] is True
    assert "another long one" not in str(trail)
    assert "hash" not in str(trail)


async def test_visibility_by_role(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    head = tenant["group_head"].headers
    seen = {u["username"] for u in (await http.get("/api/v1/users", headers=head)).json()["items"]}
    assert seen == {"operator", "group-head"}  # his group only
    groups = (await http.get("/api/v1/groups", headers=head)).json()["items"]
    assert [g["name"] for g in groups] == ["Sales"]
    marketer = tenant["marketer"].id
    assert_problem(await http.get(f"/api/v1/users/{marketer}", headers=head), 404, "no-such-user")
    operator = tenant["operator"]
    own = await http.get(f"/api/v1/users/{operator.id}", headers=operator.headers)
    assert own.status_code == 403  # operators have no directory right, even for themselves
    assert (await http.get("/api/v1/me", headers=operator.headers)).status_code == 200
    company = (await http.get("/api/v1/users", headers=tenant["company_head"].headers)).json()
    assert company["total"] == 7


async def test_presence(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    operator = tenant["operator"]
    r = await http.put(
        "/api/v1/me/presence",
        headers=operator.headers,
        json={"presence": "break", "reason": "lunch", "accepts_calls": False},
    )
    assert (r.json()["presence"], r.json()["presence_reason"], r.json()["accepts_calls"]) == (
        "break",
        "lunch",
        False,
    )
    r = await http.put(
        "/api/v1/me/presence", headers=operator.headers, json={"presence": "available"}
    )
    assert (r.json()["presence"], r.json()["presence_reason"]) == ("available", None)
    assert_problem(
        await http.put(
            "/api/v1/me/presence", headers=operator.headers, json={"presence": "asleep"}
        ),
        422,
        "invalid-request",
    )


async def test_groups_and_members(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    admin = tenant["administrator"].headers
    group = (await http.post("/api/v1/groups", headers=admin, json={"name": "VIP"})).json()
    assert_problem(
        await http.post("/api/v1/groups", headers=admin, json={"name": "VIP"}),
        409,
        "group-name-taken",
    )
    member = tenant["marketer"].id
    r = await http.post(
        f"/api/v1/groups/{group['id']}/members", headers=admin, json={"user_id": member}
    )
    assert group["id"] in r.json()["group_ids"]
    again = await http.post(
        f"/api/v1/groups/{group['id']}/members", headers=admin, json={"user_id": member}
    )
    assert again.status_code == 200  # idempotent
    fetched = (await http.get(f"/api/v1/groups/{group['id']}", headers=admin)).json()
    assert fetched["member_ids"] == [member]
    await http.delete(f"/api/v1/groups/{group['id']}/members/{member}", headers=admin)
    assert (await http.get(f"/api/v1/groups/{group['id']}", headers=admin)).json()[
        "member_ids"
    ] == []
    assert (await http.delete(f"/api/v1/groups/{group['id']}", headers=admin)).status_code == 204
    assert_problem(
        await http.get(f"/api/v1/groups/{group['id']}", headers=admin), 404, "no-such-group"
    )


async def test_custom_roles(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    admin = tenant["administrator"].headers
    role = await http.post(
        "/api/v1/roles",
        headers=admin,
        json={
            "key": "team-lead",
            "name": "Team lead",
            "scope": "group",
            "permissions": ["users.view", "groups.view"],
        },
    )
    assert role.status_code == 201, role.text
    assert_problem(
        await http.post(
            "/api/v1/roles",
            headers=admin,
            json={"key": "x", "name": "X", "scope": "all", "permissions": ["rule.world"]},
        ),
        422,
        "unknown-permission",
    )
    assert_problem(
        await http.post(
            "/api/v1/roles",
            headers=admin,
            json={"key": "operator", "name": "X", "scope": "all", "permissions": []},
        ),
        409,
        "role-key-taken",
    )
    lead = await http.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": "lead",
            "display_name": "Lead",
            "password": PASSWORD,
            "role": "team-lead",
            "group_ids": [tenant.group_ids[0]],
        },
    )
    assert lead.status_code == 201
    async with httpx.AsyncClient(base_url=str(http.base_url)) as as_lead:
        await login(as_lead, tenant, "lead")
        names = {u["username"] for u in (await as_lead.get("/api/v1/users")).json()["items"]}
        assert names == {"operator", "group-head", "lead"}
        assert_problem(
            await as_lead.post("/api/v1/groups", json={"name": "Nope"}), 403, "forbidden"
        )
    role_id = role.json()["id"]
    assert_problem(await http.delete(f"/api/v1/roles/{role_id}", headers=admin), 409, "role-in-use")
    builtin = next(
        r for r in (await http.get("/api/v1/roles", headers=admin)).json() if r["key"] == "operator"
    )
    assert_problem(
        await http.patch(f"/api/v1/roles/{builtin['id']}", headers=admin, json={"name": "Boss"}),
        409,
        "role-builtin",
    )


async def test_only_administrators_grant_administrator(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"].headers
    await http.post(
        "/api/v1/roles",
        headers=admin,
        json={
            "key": "hr",
            "name": "HR",
            "scope": "all",
            "permissions": ["users.view", "users.manage"],
        },
    )
    await http.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "hr", "display_name": "HR", "password": PASSWORD, "role": "hr"},
    )
    async with httpx.AsyncClient(base_url=str(http.base_url)) as as_hr:
        await login(as_hr, tenant, "hr")
        assert_problem(
            await as_hr.patch(
                f"/api/v1/users/{tenant['operator'].id}", json={"role": "administrator"}
            ),
            403,
            "forbidden",
        )


async def test_api_keys(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    admin = tenant["administrator"].headers
    created = (await http.post("/api/v1/api-keys", headers=admin, json={"name": "CRM"})).json()
    key = {"Authorization": f"Bearer {created['secret']}"}
    assert (await http.get("/api/v1/me", headers=key)).status_code == 200
    listed = (await http.get("/api/v1/api-keys", headers=admin)).json()
    assert "secret" not in str(listed)
    assert any(k["id"] == created["id"] and k["last_used_at"] for k in listed)
    await http.delete(f"/api/v1/api-keys/{created['id']}", headers=admin)
    assert_problem(await http.get("/api/v1/me", headers=key), 401, "bad-api-key")


async def test_tenant_settings(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    admin = tenant["administrator"].headers
    assert_problem(
        await http.patch("/api/v1/tenant", headers=admin, json={"timezone": "Mars/Olympus"}),
        422,
        "unknown-timezone",
    )
    r = await http.patch("/api/v1/tenant", headers=admin, json={"timezone": "Asia/Almaty"})
    assert r.json()["timezone"] == "Asia/Almaty"
    assert (await http.get("/api/v1/tenant", headers=tenant["operator"].headers)).json()[
        "timezone"
    ] == "Asia/Almaty"


async def test_event_log_api_is_filtered_like_the_stream(
    http: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    head, admin = tenant["group_head"], tenant["administrator"]
    await http.put(
        "/api/v1/me/presence", headers=tenant["operator"].headers, json={"presence": "available"}
    )
    await http.put(
        "/api/v1/me/presence", headers=tenant["marketer"].headers, json={"presence": "available"}
    )
    await http.put(
        "/api/v1/me/presence",
        headers=other_tenant["operator"].headers,
        json={"presence": "available"},
    )
    everything = (await http.get("/api/v1/events?limit=1000", headers=admin.headers)).json()
    presence_users = {e["data"]["user_id"] for e in everything if e["kind"] == "PresenceChanged"}
    assert {tenant["operator"].id, tenant["marketer"].id} <= presence_users
    assert other_tenant["operator"].id not in str(everything)
    seqs = [e["seq"] for e in everything]
    assert seqs == sorted(seqs)
    mine = (await http.get("/api/v1/events?limit=1000", headers=head.headers)).json()
    seen = {e["data"].get("user_id") for e in mine if e["kind"] == "PresenceChanged"}
    assert seen == {tenant["operator"].id}  # his group's member only
    later = (await http.get(f"/api/v1/events?after_seq={seqs[-2]}", headers=admin.headers)).json()
    assert [e["seq"] for e in later] == seqs[-1:]
    assert_problem(
        await http.get("/api/v1/events", headers=tenant["operator"].headers), 403, "forbidden"
    )
