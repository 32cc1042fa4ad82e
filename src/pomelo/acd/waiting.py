"""A call (or callback request) waiting for an employee: what the queue orders and the
strategies distribute."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

__all__ = ["WaitingCall"]


class WaitingCall:
    """One waiting contact.

    ``priority``: higher is served first (default 0); with ``enqueued_at`` it fixes the place in
    the queue at enqueue time. ``required_skills`` maps a skill to the minimum level (1–10) the
    skills strategy asks for. ``preferred`` lists employees to offer the call to before the
    group's order, most preferred first — the client's responsible employee (known-client
    routing), then his last handler within the sticky window. ``tried`` holds employees the
    distributor already offered this call to without success (agents also remember their own
    refusals; either demotes them). ``excluded`` are never offered this call (e.g. the
    employee who is himself calling the group). ``callback`` is set when the caller left the
    line asking to be called back: the request keeps ``enqueued_at`` and so its place.
    """

    __slots__ = (
        "call_id",
        "callback",
        "client_key",
        "enqueued_at",
        "excluded",
        "preferred",
        "priority",
        "required_skills",
        "tried",
    )

    def __init__(
        self,
        call_id: str,
        enqueued_at: datetime,
        *,
        priority: int = 0,
        required_skills: Mapping[str, int] | None = None,
        preferred: Iterable[str] = (),
        excluded: Iterable[str] = (),
        client_key: str | None = None,
    ) -> None:
        if enqueued_at.tzinfo is None:
            raise ValueError("enqueued_at must be timezone-aware")
        skills = dict(required_skills or {})
        for skill, level in skills.items():
            if not 1 <= level <= 10:
                raise ValueError(f"required level of skill {skill!r} must be 1-10, got {level}")
        self.call_id = call_id
        self.enqueued_at = enqueued_at
        self.priority = priority
        self.required_skills: Mapping[str, int] = skills
        self.preferred: tuple[str, ...] = tuple(preferred)
        self.excluded: frozenset[str] = frozenset(excluded)
        self.tried: set[str] = set()
        self.client_key = client_key
        self.callback = False

    def waited(self, now: datetime) -> float:
        """Seconds since it joined the queue (never negative)."""
        return max(0.0, (now - self.enqueued_at).total_seconds())

    def __repr__(self) -> str:
        kind = "callback" if self.callback else "call"
        return f"<{kind} {self.call_id} prio={self.priority} at={self.enqueued_at.isoformat()}>"
