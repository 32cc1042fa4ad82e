"""Shared fixtures: a real database (SQLite, or PostgreSQL when POMELO_TEST_DATABASE_URL points
at one), a real HTTP server on a loopback port, and tenants with one employee per role."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from pomelo.app import Platform, build_platform, create_app
from pomelo.auth.access import Actor
from pomelo.auth.schemas import GroupCreate, RoleCreate, UserCreate
from pomelo.config import Settings, load_settings
from tests.support.recordings import make_recording

TEST_SECRET = "test-secret-0123456789abcdef"
PASSWORD = "correct horse battery"
ROLES = ("operator", "group_head", "marketer", "accountant", "company_head", "administrator")


def postgres_url() -> str | None:
    url = os.environ.get("POMELO_TEST_DATABASE_URL", "")
    return url if url.startswith("postgresql") else None


async def create_postgres_database(base_url: str) -> str:
    """A throw-away database on the configured server, so runs never share state."""
    import asyncpg

    name = f"pomelo_test_{uuid.uuid4().hex[:12]}"
    url = make_url(base_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database or "postgres",
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(db_url: str) -> None:
    import asyncpg

    url = make_url(db_url)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database="postgres",
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def fresh_database() -> AsyncIterator[Any]:
    """Factory of empty databases (SQLite files, or PostgreSQL databases) cleaned up at the end."""
    created: list[str] = []
    tmp = Path(os.environ.get("PYTEST_TMP", "/tmp")) / f"pomelo-tests-{uuid.uuid4().hex[:8]}"

    async def make() -> str:
        base = postgres_url()
        if base:
            url = await create_postgres_database(base)
        else:
            tmp.mkdir(parents=True, exist_ok=True)
            url = f"sqlite+aiosqlite:///{tmp / (uuid.uuid4().hex[:8] + '.db')}"
        created.append(url)
        return url

    yield make
    for url in created:
        if url.startswith("postgresql"):
            await drop_postgres_database(url)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "production",
        "secret_key": TEST_SECRET,
        "database_url": database_url,
        "data_dir": data_dir,
        "http_port": 0,
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 8,
        "event_poll_seconds": 0.2,
        "max_request_bytes": 65536,
        "sip_port": 0,
        "sip_qualify_seconds": 0,
        # Clear of a demo running on the same machine (20000-29999) and of the ephemeral range.
        "rtp_port_min": 30000,
        "rtp_port_max": 31999,
        # Tests' own phones and SIPp run from 127.0.0.1: never rate-limit or ban it (the ban
        # tests attack from 127.0.0.2 and 127.0.0.3).
        "sip_exempt_networks": ("127.0.0.1/32",),
    }
    values.update(overrides)
    return load_settings(**values)


class ShiftedClock:
    """Real time plus an offset tests can move (session expiry) without freezing timestamps."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Server:
    platform: Platform
    base_url: str
    clock: ShiftedClock

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/api/v1/stream"


async def start_server(settings: Settings, clock: ShiftedClock) -> tuple[Server, Any]:
    platform = build_platform(settings, clock=clock)
    config = uvicorn.Config(
        create_app(platform),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return Server(platform, f"http://127.0.0.1:{port}", clock), (server, task)


async def stop_server(handle: Any) -> None:
    server, task = handle
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
async def server(
    fresh_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    url = await fresh_database()
    settings = make_settings(url, tmp_path_factory.mktemp("var"))
    clock = ShiftedClock()
    srv, handle = await start_server(settings, clock)
    yield srv
    await stop_server(handle)


@dataclass
class Member:
    id: str
    username: str
    role: str
    api_key: str
    api_key_id: str
    group_ids: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class TenantFixture:
    id: str
    slug: str
    members: dict[str, Member]
    group_ids: list[str]
    custom_role_id: str
    account_id: str = ""
    trunk_id: str = ""
    number_id: str = ""
    recording_id: str = ""

    def __getitem__(self, key: str) -> Member:
        return self.members[key]


async def build_tenant(platform: Platform) -> TenantFixture:
    """A tenant with two groups and one employee per built-in role, plus `nobody`, a custom role
    with no permission at all (every guarded route must refuse him)."""
    directory = platform.directory
    slug = f"t-{uuid.uuid4().hex[:10]}"
    tenant = await directory.create_tenant(slug, f"Tenant {slug}", "Europe/Moscow")
    system = Actor.system(tenant.id)
    sales = await directory.create_group(system, GroupCreate(name="Sales"))
    support = await directory.create_group(system, GroupCreate(name="Support"))
    nobody = await directory.create_role(
        system, RoleCreate(key="nobody", name="Nobody", scope="own", permissions=[])
    )
    members: dict[str, Member] = {}
    for role in (*ROLES, "nobody"):
        groups = [sales["id"]] if role in ("operator", "group_head") else []
        user = await directory.create_user(
            system,
            UserCreate(
                username=role.replace("_", "-"),
                display_name=role.title(),
                password=PASSWORD,
                role=role,
                group_ids=groups,
            ),
        )
        actor = await platform.credentials.actor_for_user(user["id"])
        key, key_id = await _api_key(platform, actor)
        members[role] = Member(user["id"], user["username"], role, key, key_id, groups)
    fixture = TenantFixture(tenant.id, slug, members, [sales["id"], support["id"]], nobody["id"])
    await _pbx_objects(platform, system, fixture)
    fixture.recording_id, _ = await make_recording(
        platform, tenant.id, user_ids=(members["operator"].id,), group_id=sales["id"]
    )
    return fixture


async def _pbx_objects(platform: Platform, system: Actor, t: TenantFixture) -> None:
    """One SIP account (the operator's), one trunk and one number per tenant."""
    from pomelo.pbx.schemas import NumberCreate, SipAccountCreate, TrunkCreate

    account = await platform.pbx.create_account(
        system, SipAccountCreate(extension="101", user_id=t["operator"].id)
    )
    trunk = await platform.pbx.create_trunk(
        system,
        TrunkCreate(name="Carrier", kind="peer", host="127.0.0.1", inbound_cidrs=["127.0.0.1/32"]),
    )
    number = await platform.pbx.create_number(
        system,
        NumberCreate(
            number=f"+7495{uuid.uuid4().int % 10**7:07d}",
            trunk_id=trunk["id"],
            route_kind="group",
            route_target=t.group_ids[0],
        ),
    )
    t.account_id, t.trunk_id, t.number_id = account["id"], trunk["id"], number["id"]


async def _api_key(platform: Platform, actor: Actor) -> tuple[str, str]:
    """Every member gets a key (API keys are an admin right, so mint it as the system)."""
    from dataclasses import replace

    from pomelo.auth.permissions import Permission

    minted = replace(actor, permissions=actor.permissions | {Permission.API_KEYS_MANAGE})
    created = await platform.credentials.create_api_key(minted, "tests")
    return str(created["secret"]), str(created["id"])


@pytest.fixture
async def tenant(server: Server) -> TenantFixture:
    return await build_tenant(server.platform)


@pytest.fixture
async def other_tenant(server: Server) -> TenantFixture:
    return await build_tenant(server.platform)


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def require_tool(command: str, package: str) -> str:
    """Path of a real peer program; skipped when absent, but a failure when CI demands peers
    (POMELO_REQUIRE_PEERS=1), so a missing install can never pass silently."""
    import shutil

    path = shutil.which(command)
    if path is not None:
        return path
    message = f"{command} not installed (Debian package {package})"
    if os.environ.get("POMELO_REQUIRE_PEERS") == "1":
        pytest.fail(message)
    pytest.skip(message)
