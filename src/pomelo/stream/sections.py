"""Snapshot sections: each domain contributes a part of the live view and knows how to update it.

A section is a pair (build, apply). The hub composes them; later domains (agents, queues,
metrics) add their own without the hub knowing their event kinds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pomelo.auth import directory
from pomelo.auth.access import Actor

View = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    build: Callable[[AsyncSession, Actor], Awaitable[View]]
    apply: Callable[[View, str, dict[str, Any], str | None], View]


def default_sections() -> list[Section]:
    return [Section("directory", directory.build, directory.apply)]


def apply_wire_event(
    sections: list[Section], view: dict[str, View], wire: dict[str, Any], viewer_id: str | None
) -> dict[str, View]:
    """Fold one wire event into a whole snapshot (what every client does)."""
    for section in sections:
        view[section.name] = section.apply(
            view[section.name], wire["kind"], wire["data"], viewer_id
        )
    return view
