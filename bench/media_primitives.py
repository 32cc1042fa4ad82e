"""Micro-benchmarks of the per-packet media primitives.

Prints one JSON line with the median cost of each operation in microseconds. Each figure
is the median over several batches (batch time / batch size) so one scheduler hiccup
does not skew it; the whole run is bounded to a few seconds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from pomelo.media.dtmf import DtmfDetector, dtmf_tone
from pomelo.media.g711 import ulaw_decode, ulaw_encode, ulaw_to_alaw
from pomelo.media.jitter import JitterBuffer
from pomelo.media.resample import Resampler
from pomelo.media.rtp import StreamStats, build_rtp, parse_rtp

BATCHES = 15
BUDGET_S = 12.0  # hard stop well under the 15 s limit


def median_us(fn: Callable[[], object], deadline: float, batch: int = 2000) -> float:
    for _ in range(min(200, batch)):  # warm-up: caches, lazy imports, branch predictors
        fn()
    samples = []
    for _ in range(BATCHES):
        if time.perf_counter() > deadline:
            break
        start = time.perf_counter_ns()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter_ns() - start) / batch / 1000)
    return round(statistics.median(samples), 3)


def main() -> None:
    deadline = time.perf_counter() + BUDGET_S
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    frame_ulaw = rng.integers(0, 256, 160, dtype=np.uint8).tobytes()
    packet = build_rtp(0, 1234, 160_000, 0xDEADBEEF, frame_ulaw, marker=True)

    def rtp_parse_rebuild() -> object:
        parsed = parse_rtp(packet)
        parsed.ssrc = 0x01020304
        return parsed.to_bytes()

    stats = StreamStats(1)
    counter = [0]

    def stream_stats_update() -> object:
        counter[0] += 1
        n = counter[0]
        return stats.update(n & 0xFFFF, n * 160, n * 0.02)

    jb: JitterBuffer[bytes] = JitterBuffer()
    jb_counter = [0]

    def jitter_push_pop() -> object:
        jb_counter[0] += 1
        n = jb_counter[0]
        jb.push(n & 0xFFFF, n * 160, frame_ulaw, n * 0.02)
        return jb.pop()

    pcm = ulaw_decode(frame_ulaw)
    speech_like = (rng.normal(0, 3000, 160)).astype(np.int16)
    detector = DtmfDetector()
    tone_frame = dtmf_tone("5", 20)
    resampler = Resampler(48000, 8000)
    frame_48k = rng.integers(-8000, 8000, 960).astype(np.int16)

    results = {
        "rtp_parse_rebuild_us": median_us(rtp_parse_rebuild, deadline),
        "stream_stats_update_us": median_us(stream_stats_update, deadline),
        "ulaw_to_alaw_160_us": median_us(lambda: ulaw_to_alaw(frame_ulaw), deadline),
        "ulaw_decode_160_us": median_us(lambda: ulaw_decode(frame_ulaw), deadline),
        "ulaw_encode_160_us": median_us(lambda: ulaw_encode(pcm), deadline),
        "jitter_push_pop_us": median_us(jitter_push_pop, deadline),
        "goertzel_20ms_noise_us": median_us(lambda: detector.feed(speech_like), deadline, 500),
        "goertzel_20ms_tone_us": median_us(lambda: detector.feed(tone_frame), deadline, 500),
        "resample_48k_to_8k_20ms_us": median_us(
            lambda: resampler.process(frame_48k), deadline, 200
        ),
    }
    print(
        json.dumps(
            {
                "bench": "media_primitives",
                **results,
                "total_s": round(time.perf_counter() - started, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
