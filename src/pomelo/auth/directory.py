"""The employee directory as the live stream shows it: a snapshot and how events change it.

`build` reads the view a given actor may see; `apply` folds one stream event into such a view.
The pair is what lets a client register, take a snapshot at sequence S and stay correct by
applying every later event — a property the test suite checks for each event kind.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pomelo.auth.access import Actor, access_groups, access_users
from pomelo.auth.models import Group, GroupMember, Role, User
from pomelo.auth.permissions import Scope

View = dict[str, Any]


def employee_record(user: User, role_key: str, group_ids: list[str]) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "role": role_key,
        "presence": user.presence,
        "presence_reason": user.presence_reason,
        "accepts_calls": user.accepts_calls,
        "group_ids": sorted(group_ids),
    }


async def memberships(session: AsyncSession, tenant_id: str) -> dict[str, list[str]]:
    """user id → group ids, for one tenant."""
    rows = await session.execute(
        select(GroupMember.user_id, GroupMember.group_id).where(GroupMember.tenant_id == tenant_id)
    )
    result: dict[str, list[str]] = defaultdict(list)
    for user_id, group_id in rows:
        result[user_id].append(group_id)
    return result


async def role_keys(session: AsyncSession, tenant_id: str) -> dict[str, str]:
    rows = await session.execute(select(Role.id, Role.key).where(Role.tenant_id == tenant_id))
    return {role_id: key for role_id, key in rows}


async def build(session: AsyncSession, actor: Actor) -> View:
    groups_of = await memberships(session, actor.tenant_id)
    roles = await role_keys(session, actor.tenant_id)
    users = await session.scalars(access_users(actor).where(User.is_active.is_(True)))
    employees = {
        u.id: employee_record(u, roles.get(u.role_id, "?"), groups_of.get(u.id, [])) for u in users
    }
    groups = {}
    visible_groups: list[Group] = []
    if actor.scope is not Scope.OWN:
        visible_groups = list(await session.scalars(access_groups(actor)))
    for g in visible_groups:
        members = sorted(
            uid for uid, gids in groups_of.items() if g.id in gids and uid in employees
        )
        groups[g.id] = {
            "id": g.id,
            "name": g.name,
            "description": g.description,
            "member_ids": members,
        }
    return {"scope": actor.scope.value, "employees": employees, "groups": groups}


def apply(view: View, kind: str, data: dict[str, Any], viewer_id: str | None) -> View:
    """Fold one event (wire form) into a view. Unknown kinds leave it unchanged."""
    handler = _APPLY.get(kind)
    if handler is not None:
        handler(view, data, viewer_id)
    return view


def _put_employee(view: View, data: dict[str, Any], viewer: str | None) -> None:
    record = data["employee"]
    view["employees"][record["id"]] = record
    _sync_membership(view, record["id"], viewer)


def _deactivate(view: View, data: dict[str, Any], viewer: str | None) -> None:
    view["employees"].pop(data["user_id"], None)
    _sync_membership(view, data["user_id"], viewer)


def _presence(view: View, data: dict[str, Any], _viewer: str | None) -> None:
    record = view["employees"].get(data["user_id"])
    if record is not None:
        record["presence"] = data["presence"]
        record["presence_reason"] = data["reason"]
        record["accepts_calls"] = data["accepts_calls"]


def _group_upsert(view: View, data: dict[str, Any], _viewer: str | None) -> None:
    if view["scope"] == "own":
        return
    group = view["groups"].setdefault(data["group_id"], {"id": data["group_id"], "member_ids": []})
    group["name"] = data["name"]
    group["description"] = data["description"]


def _group_deleted(view: View, data: dict[str, Any], viewer: str | None) -> None:
    group_id = data["group_id"]
    view["groups"].pop(group_id, None)
    for record in list(view["employees"].values()):
        if group_id in record["group_ids"]:
            record["group_ids"] = [g for g in record["group_ids"] if g != group_id]
            _sync_membership(view, record["id"], viewer)


def _sync_membership(view: View, user_id: str, viewer: str | None) -> None:
    """Make the groups' member lists agree with the employee's record; hide him if now unseen."""
    record = view["employees"].get(user_id)
    group_ids = set(record["group_ids"]) if record else set()
    for group_id, group in view["groups"].items():
        members = set(group["member_ids"])
        if group_id in group_ids:
            members.add(user_id)
        else:
            members.discard(user_id)
        group["member_ids"] = sorted(members)
    if record is not None and not _visible(view, user_id, viewer):
        del view["employees"][user_id]
        _sync_membership(view, user_id, viewer)


def _visible(view: View, user_id: str, viewer: str | None) -> bool:
    if view["scope"] == "all" or user_id == viewer:
        return True
    return any(user_id in g["member_ids"] for g in view["groups"].values())


_APPLY = {
    "EmployeeCreated": _put_employee,
    "EmployeeUpdated": _put_employee,
    "EmployeeDeactivated": _deactivate,
    "PresenceChanged": _presence,
    "GroupCreated": _group_upsert,
    "GroupUpdated": _group_upsert,
    "GroupDeleted": _group_deleted,
    "GroupMemberAdded": _put_employee,
    "GroupMemberRemoved": _put_employee,
}
