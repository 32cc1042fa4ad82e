"""The event bus.

The interface is deliberately small (publish ordered batches, subscribe a coroutine) so the
in-memory implementation used by the single-process deployment can be swapped for a NATS
JetStream one without touching publishers or subscribers: both deliver every event of a committed
transaction, in sequence order, at least once per subscriber.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from pomelo.core.events import PublishedEvent

log = logging.getLogger(__name__)

Handler = Callable[[PublishedEvent], Awaitable[None]]
Unsubscribe = Callable[[], None]


class EventBus(Protocol):
    async def publish(self, events: Sequence[PublishedEvent]) -> None: ...

    def subscribe(self, handler: Handler) -> Unsubscribe: ...

    async def close(self) -> None: ...


class MemoryEventBus:
    """Delivers to in-process handlers in publish order; a failing handler never stops others."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    async def publish(self, events: Sequence[PublishedEvent]) -> None:
        for published in events:
            for handler in tuple(self._handlers):
                try:
                    await handler(published)
                except Exception:
                    log.exception("event handler %r failed on %s", handler, published.event.kind)

    def subscribe(self, handler: Handler) -> Unsubscribe:
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    async def close(self) -> None:
        self._handlers.clear()
