"""The HTTP surface: health, readiness, OpenAPI, metrics, and errors as problem+json."""

from __future__ import annotations

import httpx

from tests.conftest import TenantFixture


def assert_problem(response: httpx.Response, status: int, error_id: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["error_id"] == error_id
    assert body["title"] and body["detail"]
    return body


async def test_health_and_ready(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/health")).json()["status"] == "ok"
    ready = await http.get("/api/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_openapi_lists_the_v1_routes(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/api/openapi.json")).json()
    assert "/api/v1/users" in spec["paths"]
    assert "/api/v1/groups/{group_id}/members" in spec["paths"]


async def test_metrics_count_requests_by_route_template(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    admin = tenant["administrator"]
    await http.get(f"/api/v1/users/{admin.id}", headers=admin.headers)
    text = (await http.get("/metrics")).text
    assert 'route="/api/v1/users/{user_id}"' in text
    assert admin.id not in text


async def test_unknown_route_and_method(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get("/api/v1/no-such-thing"), 404, "not-found")
    assert_problem(await http.put("/api/health"), 405, "method-not-allowed")


async def test_unauthenticated_and_bad_key(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get("/api/v1/users"), 401, "not-authenticated")
    bad = {"Authorization": "Bearer pk_" + "0" * 32 + "_nope"}
    assert_problem(await http.get("/api/v1/users", headers=bad), 401, "bad-api-key")


async def test_malformed_json_wrong_types_and_extra_fields(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    h = {**tenant["administrator"].headers, "content-type": "application/json"}
    assert_problem(
        await http.post("/api/v1/groups", content=b'{"name": ', headers=h), 400, "malformed-json"
    )
    body = assert_problem(
        await http.post("/api/v1/groups", json={"name": 5}, headers=h), 422, "invalid-request"
    )
    assert body["errors"][0]["loc"] == ["body", "name"]
    assert_problem(
        await http.post("/api/v1/groups", json={"name": "x", "evil": 1}, headers=h),
        422,
        "invalid-request",
    )
    assert_problem(await http.get("/api/v1/users?limit=100000", headers=h), 422, "invalid-request")


async def test_oversized_bodies_are_refused(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    h = {**tenant["administrator"].headers, "content-type": "application/json"}
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    assert_problem(
        await http.post("/api/v1/groups", content=big, headers=h), 413, "request-too-large"
    )

    async def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(20):
            yield b"x" * 10_000

    streamed = await http.post("/api/v1/groups", content=chunks(), headers=h)
    assert_problem(streamed, 413, "request-too-large")


async def test_unknown_and_malformed_ids_are_404(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    h = tenant["administrator"].headers
    assert_problem(await http.get("/api/v1/users/" + "f" * 32, headers=h), 404, "no-such-user")
    assert_problem(await http.get("/api/v1/groups/not-an-id", headers=h), 404, "no-such-group")


async def test_pagination(http: httpx.AsyncClient, tenant: TenantFixture) -> None:
    h = tenant["administrator"].headers
    first = (await http.get("/api/v1/users?limit=3", headers=h)).json()
    second = (await http.get("/api/v1/users?limit=3&offset=3", headers=h)).json()
    assert first["total"] == second["total"] == 7
    assert len(first["items"]) == 3
    names = [u["username"] for u in first["items"] + second["items"]]
    assert len(set(names)) == 6
    assert names == sorted(names)


async def test_nul_characters_are_refused_everywhere(
    http: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    h = tenant["administrator"].headers
    body = assert_problem(
        await http.post("/api/v1/groups", headers=h, json={"name": "a\u0000b"}),
        422,
        "invalid-request",
    )
    assert "NUL" in body["detail"]
    assert_problem(await http.get("/api/v1/users?q=a%00b", headers=h), 422, "invalid-request")
    legit = await http.post(  # an escaped backslash followed by "u0000" is legitimate text
        "/api/v1/groups",
        headers={**h, "content-type": "application/json"},
        content=b'{"name": "back\\\\u0000slash"}',
    )
    assert legit.status_code == 201, legit.text
    assert legit.json()["name"] == "back\\u0000slash"
