"""The retention sweeper: a platform task deleting recordings older than the retention.

Hourly is plenty for a retention counted in days, and a sweep right at start-up means a server
restarted often (or a retention just shortened) still catches up without waiting an hour.
"""

from __future__ import annotations

import asyncio
import logging

from pomelo.core.clock import Clock
from pomelo.recordings.service import RecordingCatalog

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 3600.0


async def run_retention(
    catalog: RecordingCatalog, clock: Clock, interval: float = SWEEP_INTERVAL_SECONDS
) -> None:
    """Sweep now, then every ``interval`` seconds, until cancelled. A failed sweep is logged
    and retried at the next tick: a database hiccup must not end retention for good."""
    if catalog.retention is None:
        return
    while True:
        try:
            await catalog.sweep(clock.now())
        except Exception:
            log.exception("recording retention sweep failed")
        await asyncio.sleep(interval)
