"""Prometheus view of the media plane, read at scrape time (no work on the packet path).

Counters add the closed sessions' totals to the live sessions' own counters; stream quality
(loss, duplicates, interarrival jitter per RFC 3550) comes from each stream's receiver
statistics; how the peers hear *our* streams (loss, round trip) comes from their RTCP reports.
See docs/metrics.md for the formulas.
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
    "malformed": "Datagrams on RTP/RTCP ports that were neither (or broken telephone-events)",
    "foreign_source": "Packets from an address other than the latched peer (dropped)",
    "foreign_ssrc": "Packets of a second stream while the first was flowing (dropped)",
    "unknown_payload": "Packets of a payload type nobody negotiated (dropped)",
    "lost": "Packets missing from received streams (RFC 3550 expected - received)",
    "duplicates": "Duplicated packets in received streams",
}
_RTCP_COUNTERS = {
    "rtcp_received": "RTCP compound packets accepted from peers",
    "rtcp_sent": "RTCP compound packets sent to peers (reports and BYEs)",
}
_QUANTILES = (0.5, 0.99)


class MediaCollector(Collector):
    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        live = list(engine.sessions)
        totals = dict(engine.totals.counts)
        jitters = list(engine.totals.jitter_ms)
        losses: list[float] = []
        rtts: list[float] = []
        for session in live:
            c = session.counters
            totals["received"] += c.received
            totals["sent"] += c.sent
            totals["malformed"] += c.malformed
            totals["foreign_source"] += c.foreign_source
            totals["foreign_ssrc"] += c.foreign_ssrc
            totals["unknown_payload"] += c.unknown_payload
            totals["rtcp_received"] += c.rtcp_received
            totals["rtcp_sent"] += c.rtcp_sent
            report = session.remote_report
            if report is not None:
                losses.append(report.fraction_lost)
                if report.rtt_ms is not None:
                    rtts.append(report.rtt_ms)
            if session.stats is not None and c.received:
                totals["lost"] += max(session.stats.lost, 0)
                totals["duplicates"] += session.stats.duplicates
                jitters.append(session.stats.jitter_ms)
        for key, help_text in _COUNTERS.items():
            family = CounterMetricFamily(f"pomelo_rtp_{key}_packets", help_text)
            family.add_metric([], totals[key])
            yield family
        for key, help_text in _RTCP_COUNTERS.items():
            family = CounterMetricFamily(f"pomelo_{key}_packets", help_text)
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
        yield _quantiles(
            "pomelo_rtp_jitter_ms",
            "Interarrival jitter of recent streams (quantile over live and recently closed)",
            jitters,
        )
        yield _quantiles(
            "pomelo_rtcp_reported_loss_fraction",
            "Loss of our streams as the peers last reported it (quantile over live sessions)",
            losses,
        )
        yield _quantiles(
            "pomelo_rtcp_rtt_ms",
            "Round trip to the peers from their RTCP reports (quantile over live sessions)",
            rtts,
        )


def _quantiles(name: str, help_text: str, samples: list[float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["quantile"])
    if samples:
        ordered = sorted(samples)
        for q in _QUANTILES:
            family.add_metric([str(q)], ordered[min(len(ordered) - 1, int(q * len(ordered)))])
    return family


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], value)
    return family
