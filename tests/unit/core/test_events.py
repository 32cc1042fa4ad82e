"""Domain events: wire form, and rebuilding typed events from the log."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from pomelo.auth.events import EmployeeCreated, PresenceChanged
from pomelo.core.events import (
    Audience,
    DomainEvent,
    PublishedEvent,
    audience_from_dict,
    audience_to_dict,
    event,
    event_from_log,
    event_kinds,
)

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def test_wire_form_and_round_trip_through_the_log() -> None:
    original = PresenceChanged(
        tenant_id="t1",
        at=AT,
        actor_id="u1",
        user_id="u2",
        presence="break",
        reason="lunch",
        accepts_calls=False,
        audience=Audience(user_ids=frozenset({"u2"}), group_ids=frozenset({"g1"})),
    )
    wire = PublishedEvent(7, original).to_wire()
    assert wire == {
        "type": "event",
        "seq": 7,
        "kind": "PresenceChanged",
        "data": {
            "at": AT.isoformat(),
            "actor_id": "u1",
            "user_id": "u2",
            "presence": "break",
            "reason": "lunch",
            "accepts_calls": False,
        },
    }
    rebuilt = event_from_log(
        "PresenceChanged", "t1", original.payload(), audience_to_dict(original.audience)
    )
    assert rebuilt == original


def test_every_event_is_past_tense_and_registered_once() -> None:
    kinds = event_kinds()
    assert "EmployeeCreated" in kinds
    for name in kinds:
        assert name.endswith(("ed", "Changed")), f"{name} is not a past-tense fact"
    with pytest.raises(TypeError, match="duplicate"):

        @event
        @dataclass(frozen=True, kw_only=True)
        class EmployeeCreated(DomainEvent):
            user_id: str


def test_unknown_kind_is_an_error_and_audience_defaults() -> None:
    with pytest.raises(KeyError):
        event_from_log("NoSuchThingHappened", "t", {}, {})
    assert audience_from_dict({}) == Audience()
    created = EmployeeCreated(tenant_id="t", at=AT, user_id="u", employee={"id": "u"})
    assert created.kind == "EmployeeCreated"
    assert "tenant_id" not in created.payload()
