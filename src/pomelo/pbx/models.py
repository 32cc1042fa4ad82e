"""Tables of the PBX configuration: SIP accounts, trunks, numbers, and registrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pomelo.storage.base import Base, IdMixin, TenantMixin, utcnow


class SipAccount(IdMixin, TenantMixin, Base):
    """An extension phones register with. Only digest HA1s are kept (for MD5 and SHA-256), so
    the password is shown once, at creation or reset, and never stored."""

    __tablename__ = "sip_accounts"
    __table_args__ = (UniqueConstraint("tenant_id", "extension"),)

    extension: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    realm: Mapped[str] = mapped_column(String(255))
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    caller_id_name: Mapped[str | None] = mapped_column(String(100), default=None)
    allowed_cidrs: Mapped[list[str]] = mapped_column(default=list)
    allowed_countries: Mapped[list[str]] = mapped_column(default=list)
    max_contacts: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Trunk(IdMixin, TenantMixin, Base):
    """A connection to a telephony provider: a peer by address, or Pomelo registering to it."""

    __tablename__ = "trunks"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # "peer" | "register"
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=5060)
    transport: Mapped[str] = mapped_column(String(8), default="udp")
    inbound_cidrs: Mapped[list[str]] = mapped_column(default=list)
    username: Mapped[str | None] = mapped_column(String(100), default=None)
    password_sealed: Mapped[str | None] = mapped_column(String(500), default=None)
    register_expires: Mapped[int] = mapped_column(Integer, default=300)
    caller_id: Mapped[str | None] = mapped_column(String(32), default=None)
    strip_digits: Mapped[int] = mapped_column(Integer, default=0)
    prefix: Mapped[str] = mapped_column(String(16), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PhoneNumber(IdMixin, TenantMixin, Base):
    """A DID. Numbers are globally unique: a number belongs to exactly one tenant."""

    __tablename__ = "phone_numbers"

    number: Mapped[str] = mapped_column(String(32), unique=True)
    trunk_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("trunks.id", ondelete="SET NULL"), default=None
    )
    route_kind: Mapped[str] = mapped_column(String(16), default="hangup")
    route_target: Mapped[str | None] = mapped_column(String(64), default=None)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Registration(IdMixin, TenantMixin, Base):
    """A registrar binding (RFC 3261 §10). Persisted, so a restart keeps phones reachable."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("account_id", "contact"),)

    account_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sip_accounts.id", ondelete="CASCADE"), index=True
    )
    contact: Mapped[str] = mapped_column(String(512))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    call_id: Mapped[str] = mapped_column(String(255))
    cseq: Mapped[int] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8))
    source_host: Mapped[str] = mapped_column(String(64))
    source_port: Mapped[int] = mapped_column(Integer)
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    q: Mapped[str | None] = mapped_column(String(8), default=None)
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Scenario(IdMixin, TenantMixin, Base):
    """What a number does with a call before an employee takes it (a number whose route is
    ``scenario`` points here). The definition is JSON, validated by :mod:`pomelo.pbx.ivr`;
    today it is a voice menu, the scenario graph of the routing issue grows out of it."""

    __tablename__ = "scenarios"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, default=1)
    definition: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
