"""The demo tenant of the demo contract (docs/architecture.md, DESIGN.md): created or refreshed
idempotently, with deterministic credentials that only demo mode accepts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from pomelo.app import Platform
from pomelo.auth.access import Actor
from pomelo.auth.models import Group, Tenant, User
from pomelo.auth.schemas import GroupCreate, TenantUpdate, UserCreate, UserUpdate
from pomelo.core.errors import ConfigError
from pomelo.pbx.models import PhoneNumber, Scenario, SipAccount, Trunk
from pomelo.pbx.schemas import (
    NumberCreate,
    NumberUpdate,
    SipAccountCreate,
    SipAccountUpdate,
    TrunkCreate,
)

DEMO_TENANT = "demo"
DEMO_PASSWORD = "demo"  # noqa: S105 (the documented demo credential)
GROUPS = ("Sales", "Support")
DEMO_DID = "+74950000000"
EXTENSIONS = range(101, 111)


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    role: str
    groups: tuple[str, ...]
    available: bool = False


DEMO_USERS = (
    DemoUser("admin", "Demo Administrator", "administrator", ()),
    DemoUser("head", "Demo Company Head", "company_head", ()),
    DemoUser("supervisor", "Demo Supervisor", "group_head", GROUPS),
    *(
        DemoUser(
            f"operator{i}",
            f"Operator {i}",
            "operator",
            ("Sales",) if i <= 3 else ("Support",),
            available=True,
        )
        for i in range(1, 7)
    ),
)


async def seed_demo(platform: Platform) -> list[DemoUser]:
    if not platform.settings.is_demo:
        raise ConfigError("the demo tenant can only be created in demo mode")
    directory = platform.directory
    tenant = await directory.tenant_by_slug(DEMO_TENANT)
    if tenant is None:
        tenant = await directory.create_tenant(DEMO_TENANT, "Demo Company", "Europe/Moscow")
    system = Actor.system(tenant.id, name="demo-seed")
    if tenant.sip_domain != platform.settings.sip_host:
        await directory.update_tenant(system, TenantUpdate(sip_domain=platform.settings.sip_host))
    group_ids = await _ensure_groups(platform, tenant, system)
    user_ids = {}
    for spec in DEMO_USERS:
        user_ids[spec.username] = await _ensure_user(platform, tenant, system, spec, group_ids)
        if spec.available:
            await directory.set_presence(system, user_ids[spec.username], "available", None, True)
    await _ensure_telephony(platform, tenant, system, user_ids, group_ids)
    return list(DEMO_USERS)


async def _ensure_telephony(
    platform: Platform,
    tenant: Tenant,
    system: Actor,
    users: dict[str, str],
    groups: dict[str, str],
) -> None:
    """Extensions 101–110 (101–106 are operator1…6's, password demo<ext>), a trunk accepting
    calls from 127.0.0.1, and the demo DID, answered by the demo menu."""
    pbx = platform.pbx
    async with platform.db.session() as session:
        accounts = {
            a.extension: a
            for a in await session.scalars(
                select(SipAccount).where(SipAccount.tenant_id == tenant.id)
            )
        }
        trunk = await session.scalar(
            select(Trunk).where(Trunk.tenant_id == tenant.id, Trunk.name == "Demo trunk")
        )
        did = await session.scalar(select(PhoneNumber).where(PhoneNumber.number == DEMO_DID))
    for ext in EXTENSIONS:
        owner = users.get(_EXTENSION_OWNERS.get(ext, f"operator{ext - 100}"))
        password = f"{DEMO_PASSWORD}{ext}"
        existing = accounts.get(str(ext))
        if existing is None:
            await pbx.create_account(
                system, SipAccountCreate(extension=str(ext), user_id=owner, password=password)
            )
        else:  # refresh in place: deleting would drop the phones' registrations
            await pbx.update_account(system, existing.id, SipAccountUpdate(user_id=owner))
            await pbx.reset_password(system, existing.id, password)
    if trunk is None:
        created = await pbx.create_trunk(
            system,
            TrunkCreate(
                name="Demo trunk", kind="peer", host="127.0.0.1", inbound_cidrs=["127.0.0.1/32"]
            ),
        )
        trunk_id = created["id"]
    else:
        trunk_id = trunk.id
    menu_id = await _ensure_menu(platform, tenant, groups)
    if did is None:
        await pbx.create_number(
            system,
            NumberCreate(
                number=DEMO_DID,
                trunk_id=trunk_id,
                route_kind="scenario",
                route_target=menu_id,
                description="Demo line",
            ),
        )
    elif did.route_kind != "scenario" or did.route_target != menu_id:
        await pbx.update_number(
            system, did.id, NumberUpdate(route_kind="scenario", route_target=menu_id)
        )


_EXTENSION_OWNERS = {107: "supervisor", 108: "head"}
"""Beyond the operators' 101–106: the supervisors' phones (listen, whisper, barge)."""

DEMO_MENU_TEXT = (
    "Thank you for calling Pomelo. For sales, press 1. For support, press 2. Or stay on the line."
)


async def _ensure_menu(platform: Platform, tenant: Tenant, groups: dict[str, str]) -> str:
    """The demo contract's IVR: 1 → Sales, 2 → Support, no input → Sales."""
    definition = {
        "type": "menu",
        "prompt": {"text": DEMO_MENU_TEXT, "lang": "en"},
        "options": {"1": {"group": groups["Sales"]}, "2": {"group": groups["Support"]}},
        "default": {"group": groups["Sales"]},
        "timeout": 4,
        "retries": 0,
    }
    async with platform.db.session() as session, session.begin():
        scenario = await session.scalar(
            select(Scenario).where(Scenario.tenant_id == tenant.id, Scenario.name == "Demo menu")
        )
        if scenario is None:
            scenario = Scenario(tenant_id=tenant.id, name="Demo menu", definition=definition)
            session.add(scenario)
        elif scenario.definition != definition:
            scenario.definition = definition
            scenario.version += 1
        await session.flush()
        return scenario.id


async def _ensure_groups(platform: Platform, tenant: Tenant, system: Actor) -> dict[str, str]:
    async with platform.db.session() as session:
        rows = await session.execute(
            select(Group.name, Group.id).where(Group.tenant_id == tenant.id)
        )
        existing = {name: gid for name, gid in rows}
    for name in GROUPS:
        if name not in existing:
            created = await platform.directory.create_group(system, GroupCreate(name=name))
            existing[name] = created["id"]
    return existing


async def _ensure_user(
    platform: Platform, tenant: Tenant, system: Actor, spec: DemoUser, groups: dict[str, str]
) -> str:
    async with platform.db.session() as session:
        user_id = await session.scalar(
            select(User.id).where(User.tenant_id == tenant.id, User.username == spec.username)
        )
    directory = platform.directory
    if user_id is None:
        created = await directory.create_user(
            system,
            UserCreate(
                username=spec.username,
                display_name=spec.display_name,
                password=DEMO_PASSWORD,
                role=spec.role,
                group_ids=[groups[g] for g in spec.groups],
            ),
        )
        return str(created["id"])
    await directory.update_user(
        system,
        user_id,
        UserUpdate(
            display_name=spec.display_name,
            role=spec.role,
            password=DEMO_PASSWORD,
            is_active=True,
        ),
    )
    for group in spec.groups:
        await directory.add_member(system, groups[group], user_id)
    return str(user_id)
