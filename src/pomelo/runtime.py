"""Process runtime: event loop choice and garbage-collector tuning for the hot paths."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def tune_gc() -> None:
    """Move start-up objects out of the collector's reach and collect young objects less often.

    With per-call state, CPython's cyclic GC pauses (not CPU) are what first break a stateful SIP
    server; freezing the long-lived heap and raising gen-0 threshold removes most of them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool) -> T:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
