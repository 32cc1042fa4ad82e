"""Built-in roles follow SPEC §12: who may see and do what."""

from __future__ import annotations

import pytest

from pomelo.auth.permissions import (
    BUILTIN_ROLES,
    BuiltinRole,
    Permission,
    Scope,
    builtin_permissions,
    parse_permissions,
)


def test_scopes_of_builtin_roles() -> None:
    scopes = {role: BUILTIN_ROLES[role][1] for role in BuiltinRole}
    assert scopes[BuiltinRole.OPERATOR] is Scope.OWN
    assert scopes[BuiltinRole.GROUP_HEAD] is Scope.GROUP
    assert scopes[BuiltinRole.COMPANY_HEAD] is Scope.ALL


def test_rights_of_builtin_roles() -> None:
    operator = builtin_permissions(BuiltinRole.OPERATOR)
    assert Permission.RECORDINGS_LISTEN in operator
    assert Permission.USERS_MANAGE not in operator
    marketer = builtin_permissions(BuiltinRole.MARKETER)
    assert Permission.TRACKING_MANAGE in marketer
    assert Permission.PBX_MANAGE not in marketer
    assert builtin_permissions(BuiltinRole.ACCOUNTANT) == {
        Permission.BILLING_VIEW,
        Permission.BILLING_MANAGE,
    }
    head = builtin_permissions(BuiltinRole.COMPANY_HEAD)
    assert Permission.AUDIT_VIEW in head
    assert not any(p.value.endswith(".manage") for p in head)
    assert builtin_permissions(BuiltinRole.ADMINISTRATOR) == frozenset(Permission)


def test_custom_permissions_are_validated() -> None:
    assert parse_permissions(["users.view"]) == {Permission.USERS_VIEW}
    with pytest.raises(ValueError, match="unknown permissions: fly"):
        parse_permissions(["users.view", "fly"])
