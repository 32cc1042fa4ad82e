"""Request and response bodies of the directory API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Username = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", max_length=64)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", max_length=63)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Presence = Literal["available", "break", "offline"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"tenant": "demo", "username": "admin", "password": "demo"}]
        },
    )

    tenant: Slug
    username: Username
    password: Password


class UserCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "operator7",
                    "display_name": "Operator 7",
                    "password": "a long passphrase",
                    "role": "operator",
                }
            ]
        },
    )

    username: Username
    display_name: Name
    password: Password | None = None
    email: EmailStr | None = None
    role: Annotated[str, StringConstraints(min_length=1, max_length=63)] = "operator"
    group_ids: list[Id] = Field(default_factory=list, max_length=200)


class UserUpdate(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"display_name": "Operator Seven"}]}
    )

    display_name: Name | None = None
    email: EmailStr | None = None
    role: Annotated[str, StringConstraints(min_length=1, max_length=63)] | None = None
    password: Password | None = None
    is_active: bool | None = None


class UserPublic(BaseModel):
    id: str
    username: str
    display_name: str
    email: str | None
    role: str
    is_active: bool
    presence: str
    presence_reason: str | None
    accepts_calls: bool
    group_ids: list[str]
    created_at: datetime


class PresenceUpdate(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"presence": "break", "reason": "lunch"}]}
    )

    presence: Presence
    reason: Annotated[str, StringConstraints(max_length=64)] | None = None
    accepts_calls: bool | None = None


class GroupCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Retention", "description": "Keeps clients"}]},
    )

    name: Name
    description: Annotated[str, StringConstraints(max_length=1000)] = ""


class GroupUpdate(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"description": "Keeps clients happy"}]}
    )

    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None


class GroupPublic(BaseModel):
    id: str
    name: str
    description: str
    member_ids: list[str]
    created_at: datetime


class MemberAdd(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "{user_id}"}]}
    )

    user_id: Id


class RoleCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "quality",
                    "name": "Quality controller",
                    "scope": "all",
                    "permissions": ["calls.view", "recordings.listen"],
                }
            ]
        },
    )

    key: Slug
    name: Name
    scope: Literal["own", "group", "all"]
    permissions: list[Annotated[str, StringConstraints(max_length=64)]] = Field(max_length=100)


class RoleUpdate(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Quality team"}]}
    )

    name: Name | None = None
    scope: Literal["own", "group", "all"] | None = None
    permissions: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        default=None, max_length=100
    )


class RolePublic(BaseModel):
    id: str
    key: str
    name: str
    builtin: bool
    scope: str
    permissions: list[str]


class ApiKeyCreate(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "CRM integration"}]}
    )

    name: Name


class ApiKeyPublic(BaseModel):
    id: str
    name: str
    user_id: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    #: Shown once; only its hash is stored.
    secret: str


class TenantPublic(BaseModel):
    id: str
    slug: str
    name: str
    timezone: str
    sip_domain: str | None


class TenantCreate(Strict):
    slug: Slug
    name: Name
    timezone: Annotated[str, StringConstraints(max_length=64)] = "UTC"


class TenantUpdate(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Demo Company Ltd"}]}
    )

    name: Name | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None
    sip_domain: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.\-:\[\]]{1,255}$")] | None
    ) = None


class Me(BaseModel):
    user: UserPublic
    tenant: TenantPublic
    permissions: list[str]
    scope: str
