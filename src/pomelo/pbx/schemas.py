"""Request and response bodies of the PBX configuration API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Extension = Annotated[str, StringConstraints(pattern=r"^[0-9]{2,8}$")]
Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Cidr = Annotated[str, StringConstraints(min_length=2, max_length=64)]
Country = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")]
SipPassword = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Host = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.:\-\[\]]{1,255}$")]
RouteKind = Literal["hangup", "employee", "extension", "group", "scenario", "conference"]


def _examples(example: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class SipAccountCreate(BaseModel):
    model_config = _examples({"extension": "201", "user_id": "{user_id}"})

    extension: Extension
    user_id: Id | None = None
    password: SipPassword | None = Field(
        default=None, description="Leave out to have a strong one generated (shown once)."
    )
    caller_id_name: Annotated[str, StringConstraints(max_length=100)] | None = None
    allowed_cidrs: list[Cidr] = Field(default_factory=list, max_length=100)
    allowed_countries: list[Country] = Field(default_factory=list, max_length=250)
    max_contacts: int = Field(default=5, ge=1, le=50)


class SipAccountBulkCreate(BaseModel):
    model_config = _examples({"first_extension": "300", "count": 5})

    first_extension: Extension
    count: int = Field(ge=1, le=1000)


class SipAccountUpdate(BaseModel):
    model_config = _examples({"enabled": False})

    user_id: Id | None = None
    enabled: bool | None = None
    caller_id_name: Annotated[str, StringConstraints(max_length=100)] | None = None
    allowed_cidrs: list[Cidr] | None = Field(default=None, max_length=100)
    allowed_countries: list[Country] | None = Field(default=None, max_length=250)
    max_contacts: int | None = Field(default=None, ge=1, le=50)


class SipAccountPublic(BaseModel):
    id: str
    extension: str
    user_id: str | None
    domain: str
    enabled: bool
    caller_id_name: str | None
    allowed_cidrs: list[str]
    allowed_countries: list[str]
    max_contacts: int
    registered_contacts: int
    created_at: datetime


class SipAccountWithPassword(SipAccountPublic):
    #: Shown only in the response that created or reset it.
    password: str


class TrunkCreate(BaseModel):
    model_config = _examples(
        {
            "name": "Provider",
            "kind": "peer",
            "host": "192.0.2.10",
            "inbound_cidrs": ["192.0.2.0/24"],
        }
    )

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    kind: Literal["peer", "register"]
    host: Host
    port: int = Field(default=5060, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "udp"
    inbound_cidrs: list[Cidr] = Field(default_factory=list, max_length=100)
    username: Annotated[str, StringConstraints(max_length=100)] | None = None
    password: SipPassword | None = None
    register_expires: int = Field(default=300, ge=60, le=86400)
    caller_id: Annotated[str, StringConstraints(max_length=32)] | None = None
    strip_digits: int = Field(default=0, ge=0, le=15)
    prefix: Annotated[str, StringConstraints(pattern=r"^[0-9+]{0,16}$")] = ""


class TrunkUpdate(BaseModel):
    model_config = _examples({"enabled": False})

    host: Host | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] | None = None
    inbound_cidrs: list[Cidr] | None = Field(default=None, max_length=100)
    username: Annotated[str, StringConstraints(max_length=100)] | None = None
    password: SipPassword | None = None
    register_expires: int | None = Field(default=None, ge=60, le=86400)
    caller_id: Annotated[str, StringConstraints(max_length=32)] | None = None
    strip_digits: int | None = Field(default=None, ge=0, le=15)
    prefix: Annotated[str, StringConstraints(pattern=r"^[0-9+]{0,16}$")] | None = None
    enabled: bool | None = None


class TrunkPublic(BaseModel):
    id: str
    name: str
    kind: str
    host: str
    port: int
    transport: str
    inbound_cidrs: list[str]
    username: str | None
    has_password: bool
    register_expires: int
    caller_id: str | None
    strip_digits: int
    prefix: str
    enabled: bool
    created_at: datetime


class NumberCreate(BaseModel):
    model_config = _examples(
        {"number": "+74950001122", "trunk_id": "{trunk_id}", "route_kind": "hangup"}
    )

    number: Annotated[str, StringConstraints(min_length=3, max_length=32)]
    trunk_id: Id | None = None
    route_kind: RouteKind = "hangup"
    route_target: Annotated[str, StringConstraints(max_length=64)] | None = None
    description: Annotated[str, StringConstraints(max_length=200)] = ""


class NumberUpdate(BaseModel):
    model_config = _examples({"description": "Main line"})

    trunk_id: Id | None = None
    route_kind: RouteKind | None = None
    route_target: Annotated[str, StringConstraints(max_length=64)] | None = None
    description: Annotated[str, StringConstraints(max_length=200)] | None = None


class NumberPublic(BaseModel):
    id: str
    number: str
    trunk_id: str | None
    route_kind: str
    route_target: str | None
    description: str
    created_at: datetime


class RegistrationPublic(BaseModel):
    account_id: str
    extension: str
    contact: str
    transport: str
    source: str
    user_agent: str
    expires_in: int
    reachable: bool


class TrunkRegistrationPublic(BaseModel):
    status: str
    detail: str
    expires_in: int
    attempts: int
