"""Domain events: typed, immutable, past-tense facts.

Every state change in Pomelo is described by one of these. They are appended to the event log in
the same transaction as the change, and published on the bus only after that transaction commits,
so a rolled-back change never reaches a dashboard, a stream client or a webhook.

Each event says who may see it (`audience`), which is what lets the WebSocket stream filter by role
without knowing anything about individual event kinds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

_REGISTRY: dict[str, type[DomainEvent]] = {}

E = TypeVar("E", bound="type[DomainEvent]")


def event(cls: E) -> E:
    """Register a concrete event class under its class name (its `kind` on the wire)."""
    if cls.__name__ in _REGISTRY:
        raise TypeError(f"duplicate event kind {cls.__name__}")
    _REGISTRY[cls.__name__] = cls
    return cls


def event_kinds() -> dict[str, type[DomainEvent]]:
    return dict(_REGISTRY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Audience:
    """Who may see an event besides those who see the whole tenant.

    `user_ids` are the employees the event is about (an operator sees events about himself);
    `group_ids` are the groups it touches (a group head sees events of his groups).
    """

    user_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    tenant_id: str
    at: datetime
    actor_id: str | None = None
    #: Visibility: subclasses fill it so filtering needs no knowledge of the kind.
    audience: Audience = field(default_factory=Audience)

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = cls.__name__

    def payload(self) -> dict[str, Any]:
        """JSON-ready body (without tenant and audience, which travel beside it)."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("tenant_id", "audience"):
                continue
            data[f.name] = _jsonable(getattr(self, f.name))
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, frozenset | set | tuple):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """An event as it leaves the log: with its global, gap-free-per-node sequence number."""

    seq: int
    event: DomainEvent

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "event",
            "seq": self.seq,
            "kind": self.event.kind,
            "data": self.event.payload(),
        }


def event_from_log(
    kind: str, tenant_id: str, payload: dict[str, Any], audience: dict[str, Any]
) -> DomainEvent:
    """Rebuild a typed event from its log row (for catch-up after a gap, and replays)."""
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise KeyError(f"unknown event kind {kind!r}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {"tenant_id": tenant_id, "audience": audience_from_dict(audience)}
    for f in dataclasses.fields(cls):
        if f.name in payload:
            kwargs[f.name] = _from_json(hints[f.name], payload[f.name])
    return cls(**kwargs)


def audience_to_dict(audience: Audience) -> dict[str, list[str]]:
    return {"user_ids": sorted(audience.user_ids), "group_ids": sorted(audience.group_ids)}


def audience_from_dict(data: dict[str, Any]) -> Audience:
    return Audience(
        user_ids=frozenset(data.get("user_ids", ())),
        group_ids=frozenset(data.get("group_ids", ())),
    )


def _from_json(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (types.UnionType, typing.Union) and len(args) == 1:
        return _from_json(args[0], value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    if origin is frozenset:
        return frozenset(value)
    if origin is tuple:
        return tuple(value)
    return value
