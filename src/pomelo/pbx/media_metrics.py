"""Prometheus view of the media plane, read at scrape time (no work on the packet path).

Counters add the closed sessions' totals to the live sessions' own counters; stream quality
(loss, duplicates, interarrival jitter per RFC 3550) comes from each stream's receiver
statistics. See docs/metrics.md for the formulas.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pomelo.media.engine import MediaEngine

__all__ = ["MediaCollector"]

_COUNTERS = {
    "received": "RTP packets accepted from peers",
    "sent": "RTP packets sent to peers",
    "malformed": "Datagrams on RTP ports that were not RTP (or broken telephone-events)",
    "foreign_source": "Packets from an address other than the latched peer (dropped)",
    "foreign_ssrc": "Packets of a second stream while the first was flowing (dropped)",
    "unknown_payload": "Packets of a payload type nobody negotiated (dropped)",
    "lost": "Packets missing from received streams (RFC 3550 expected - received)",
    "duplicates": "Duplicated packets in received streams",
}


class MediaCollector(Collector):
    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        live = list(engine.sessions)
        totals = dict(engine.totals.counts)
        jitters = list(engine.totals.jitter_ms)
        for session in live:
            c = session.counters
            totals["received"] += c.received
            totals["sent"] += c.sent
            totals["malformed"] += c.malformed
            totals["foreign_source"] += c.foreign_source
            totals["foreign_ssrc"] += c.foreign_ssrc
            totals["unknown_payload"] += c.unknown_payload
            if session.stats is not None and c.received:
                totals["lost"] += max(session.stats.lost, 0)
                totals["duplicates"] += session.stats.duplicates
                jitters.append(session.stats.jitter_ms)
        for key, help_text in _COUNTERS.items():
            family = CounterMetricFamily(f"pomelo_rtp_{key}_packets", help_text)
            family.add_metric([], totals[key])
            yield family
        yield _gauge("pomelo_rtp_sessions", "Open RTP sessions (two per relayed call)", len(live))
        yield _gauge("pomelo_rtp_ports_free", "RTP ports left in the range", engine.pool.available)
        yield _gauge(
            "pomelo_recordings_active",
            "Calls and conference rooms being recorded now",
            engine.recording_count,
        )
        late = CounterMetricFamily(
            "pomelo_media_clock_late_ticks", "20 ms ticks that ran over 100 ms late (skipped)"
        )
        late.add_metric([], engine.clock.late_ticks)
        yield late
        jitter = GaugeMetricFamily(
            "pomelo_rtp_jitter_ms",
            "Interarrival jitter of recent streams (quantile over live and recently closed)",
            labels=["quantile"],
        )
        if jitters:
            ordered = sorted(jitters)
            for q in (0.5, 0.99):
                jitter.add_metric([str(q)], ordered[min(len(ordered) - 1, int(q * len(ordered)))])
        yield jitter


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], value)
    return family
