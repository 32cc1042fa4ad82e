"""The live stream over a real WebSocket: register → snapshot → role-filtered events, and the
property every client relies on: applying the events to a stale snapshot gives a fresh one."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pomelo.core.events import event_kinds
from pomelo.stream.sections import apply_wire_event, default_sections
from tests.conftest import Member, Server, TenantFixture

SECTIONS = default_sections()


class Viewer:
    """A stream client that keeps its view current the way the web app does."""

    def __init__(self, member: Member, ws: ClientConnection) -> None:
        self.member = member
        self.ws = ws
        self.view: dict[str, Any] = {}
        self.seq = 0
        self.kinds: set[str] = set()

    async def receive(self) -> dict[str, Any]:
        message = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
        if message["type"] == "snapshot":
            self.view, self.seq = message["data"], message["seq"]
        elif message["type"] == "event":
            assert message["seq"] > self.seq, "events arrive in sequence order, once"
            self.seq = message["seq"]
            self.kinds.add(message["kind"])
            apply_wire_event(SECTIONS, self.view, message, self.member.id)
        return message

    async def until_marker(self, marker_id: str, reason: str) -> None:
        """Read until the view shows the marker's presence `reason` (by its event, or by a
        resync snapshot taken after it); delivery is in commit order, so everything committed
        before the marker is in the view too."""
        while True:
            await self.receive()
            marker = self.view["directory"]["employees"].get(marker_id, {})
            if marker.get("presence_reason") == reason:
                return


async def open_viewer(server: Server, member: Member) -> Viewer:
    ws = await connect(server.ws_url, additional_headers=member.headers)
    await ws.send(json.dumps({"type": "register"}))
    viewer = Viewer(member, ws)
    first = await viewer.receive()
    assert first["type"] == "snapshot"
    return viewer


async def fresh_view(server: Server, member: Member) -> dict[str, Any]:
    viewer = await open_viewer(server, member)
    await viewer.ws.close()
    return viewer.view


async def mark(http: httpx.AsyncClient, viewers: list[Viewer], marker: Member) -> None:
    """One presence change of `marker`, whom every viewer can see, closes the round."""
    reason = uuid.uuid4().hex[:12]
    r = await http.put(
        "/api/v1/me/presence", headers=marker.headers, json={"presence": "break", "reason": reason}
    )
    assert r.status_code == 200, r.text
    for v in viewers:
        await v.until_marker(marker.id, reason)


def scenario(t: TenantFixture) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """Admin actions that, together, produce every event kind of the directory."""
    sales, support = t.group_ids
    op = t["operator"].id
    return [
        (
            "post",
            "/api/v1/users",
            "new",
            {
                "username": "newbie",
                "display_name": "New Bie",
                "password": "long enough pw",
                "group_ids": [sales],
            },
        ),
        ("patch", "/api/v1/users/{new}", "", {"display_name": "Newbie Renamed"}),
        ("put", "/api/v1/users/{new}/presence", "", {"presence": "available"}),
        ("post", "/api/v1/groups", "extra", {"name": "Extra"}),
        ("patch", "/api/v1/groups/{extra}", "", {"name": "Extra Renamed"}),
        ("post", "/api/v1/groups/{extra}/members", "", {"user_id": op}),
        ("post", f"/api/v1/groups/{support}/members", "", {"user_id": "{new}"}),
        ("delete", f"/api/v1/groups/{sales}/members/{{new}}", "", None),
        ("delete", "/api/v1/groups/{extra}", "", None),
        (
            "post",
            "/api/v1/roles",
            "",
            {"key": "qa", "name": "QA", "scope": "all", "permissions": ["calls.view"]},
        ),
        ("patch", "/api/v1/tenant", "", {"timezone": "Europe/Kiev"}),
        ("patch", "/api/v1/users/{new}", "", {"is_active": False}),
    ]


def fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.slow
async def test_snapshot_plus_events_equals_fresh_snapshot(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    roles = ("administrator", "company_head", "group_head", "operator")
    viewers = [await open_viewer(server, tenant[r]) for r in roles]
    admin = tenant["administrator"]
    names: dict[str, str] = {}
    try:
        for method, path, save_as, body in scenario(tenant):
            payload = json.loads(fill(json.dumps(body), names)) if body is not None else None
            response = await http.request(
                method.upper(), fill(path, names), headers=admin.headers, json=payload
            )
            assert response.status_code < 300, f"{method} {path}: {response.text}"
            if save_as:
                names[save_as] = response.json()["id"]
            await mark(http, viewers, tenant["operator"])
            for v in viewers:
                expected = await fresh_view(server, v.member)
                if v.view != expected:
                    import difflib

                    a = json.dumps(v.view, indent=1, sort_keys=True).splitlines()
                    b = json.dumps(expected, indent=1, sort_keys=True).splitlines()
                    print("\n".join(difflib.unified_diff(a, b, lineterm="")))
                assert v.view == expected, f"{v.member.role} diverged after {method} {path}"
    finally:
        for v in viewers:
            await v.ws.close()
    directory_kinds = {
        k for k, cls in event_kinds().items() if cls.__module__.endswith("auth.events")
    }
    assert directory_kinds <= viewers[0].kinds, "scenario must exercise every event kind"


async def test_role_filtering_and_tenant_isolation(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    operator, head = tenant["operator"], tenant["group_head"]
    viewers = [await open_viewer(server, m) for m in (operator, head)]
    snapshot_op = viewers[0].view["directory"]
    assert set(snapshot_op["employees"]) == {operator.id}
    assert snapshot_op["groups"] == {}
    snapshot_head = viewers[1].view["directory"]
    assert set(snapshot_head["employees"]) == {operator.id, head.id}
    # Another tenant's and another employee's changes must not reach them.
    admin_b = other_tenant["administrator"]
    await http.put("/api/v1/me/presence", headers=admin_b.headers, json={"presence": "available"})
    await http.put(
        "/api/v1/me/presence", headers=tenant["marketer"].headers, json={"presence": "available"}
    )
    await mark(http, viewers, operator)
    for v in viewers:
        seen = {json.dumps(v.view)}
        assert admin_b.id not in seen.pop()
    assert tenant["marketer"].id not in viewers[1].view["directory"]["employees"]
    for v in viewers:
        await v.ws.close()


async def test_register_is_required_and_credentials_checked(
    server: Server, tenant: TenantFixture
) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "hello"}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "register", "api_key": "pk_bogus"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["error_id"] == "bad-api-key"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with connect(server.ws_url) as ws:  # api key in the register message
        await ws.send(json.dumps({"type": "register", "api_key": tenant["operator"].api_key}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"


async def test_session_cookie_and_deactivation_closes_stream(
    server: Server, http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    from tests.conftest import PASSWORD

    login = await http.post(
        "/api/v1/auth/login",
        json={"tenant": tenant.slug, "username": tenant["marketer"].username, "password": PASSWORD},
    )
    assert login.status_code == 200
    cookie = f"pomelo_session={login.cookies['pomelo_session']}"
    async with connect(server.ws_url, additional_headers={"Cookie": cookie}) as ws:
        await ws.send(json.dumps({"type": "register"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
        r = await http.patch(
            f"/api/v1/users/{tenant['marketer'].id}",
            json={"is_active": False},
            headers=tenant["administrator"].headers,
        )
        assert r.status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
