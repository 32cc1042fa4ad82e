"""Permissions, visibility scopes and the built-in roles (SPEC §12).

A role is a set of permissions plus a visibility scope. The scope decides *which* records a
permission reaches: an operator's `calls.view` reaches his own calls, a group head's his groups',
a company head's everything. Custom roles are the same thing stored per tenant.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    USERS_VIEW = "users.view"
    USERS_MANAGE = "users.manage"
    GROUPS_VIEW = "groups.view"
    GROUPS_MANAGE = "groups.manage"
    ROLES_MANAGE = "roles.manage"
    API_KEYS_MANAGE = "api_keys.manage"
    AUDIT_VIEW = "audit.view"
    TENANT_MANAGE = "tenant.manage"
    EVENTS_VIEW = "events.view"
    CALLS_VIEW = "calls.view"
    CALLS_SUPERVISE = "calls.supervise"
    RECORDINGS_LISTEN = "recordings.listen"
    RECORDINGS_DELETE = "recordings.delete"
    PBX_MANAGE = "pbx.manage"
    ANALYTICS_VIEW = "analytics.view"
    TRACKING_MANAGE = "tracking.manage"
    BILLING_VIEW = "billing.view"
    BILLING_MANAGE = "billing.manage"


class Scope(StrEnum):
    """How far a role's permissions reach."""

    OWN = "own"
    GROUP = "group"
    ALL = "all"


class BuiltinRole(StrEnum):
    OPERATOR = "operator"
    GROUP_HEAD = "group_head"
    MARKETER = "marketer"
    ACCOUNTANT = "accountant"
    COMPANY_HEAD = "company_head"
    ADMINISTRATOR = "administrator"


P = Permission

_VIEW_EVERYTHING = frozenset(
    {
        P.USERS_VIEW,
        P.GROUPS_VIEW,
        P.AUDIT_VIEW,
        P.EVENTS_VIEW,
        P.CALLS_VIEW,
        P.RECORDINGS_LISTEN,
        P.ANALYTICS_VIEW,
        P.BILLING_VIEW,
    }
)

BUILTIN_ROLES: dict[BuiltinRole, tuple[str, Scope, frozenset[Permission]]] = {
    BuiltinRole.OPERATOR: (
        "Operator",
        Scope.OWN,
        frozenset({P.CALLS_VIEW, P.RECORDINGS_LISTEN}),
    ),
    BuiltinRole.GROUP_HEAD: (
        "Group head",
        Scope.GROUP,
        frozenset(
            {
                P.USERS_VIEW,
                P.GROUPS_VIEW,
                P.EVENTS_VIEW,
                P.CALLS_VIEW,
                P.CALLS_SUPERVISE,
                P.RECORDINGS_LISTEN,
                P.ANALYTICS_VIEW,
            }
        ),
    ),
    BuiltinRole.MARKETER: (
        "Marketer",
        Scope.ALL,
        frozenset({P.ANALYTICS_VIEW, P.TRACKING_MANAGE, P.CALLS_VIEW}),
    ),
    BuiltinRole.ACCOUNTANT: (
        "Accountant",
        Scope.ALL,
        frozenset({P.BILLING_VIEW, P.BILLING_MANAGE}),
    ),
    BuiltinRole.COMPANY_HEAD: (
        "Company head",
        Scope.ALL,
        _VIEW_EVERYTHING | {P.CALLS_SUPERVISE},
    ),
    BuiltinRole.ADMINISTRATOR: ("Administrator", Scope.ALL, frozenset(Permission)),
}


def builtin_permissions(role: BuiltinRole) -> frozenset[Permission]:
    return BUILTIN_ROLES[role][2]


def parse_permissions(values: list[str]) -> frozenset[Permission]:
    """Validate a custom role's permission names; unknown names are an input error."""
    known = {p.value for p in Permission}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown permissions: {', '.join(unknown)}")
    return frozenset(Permission(v) for v in values)
