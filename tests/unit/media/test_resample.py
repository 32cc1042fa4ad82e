"""Polyphase windowed-sinc resampling quality and streaming equivalence."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.resample import Resampler, resample

RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000]


def tone(
    freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000.0
) -> npt.NDArray[np.int16]:
    n = np.arange(int(rate * seconds))
    return np.rint(amplitude * np.sin(2 * np.pi * freq * n / rate)).astype(np.int16)


def steady(x: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float64]:
    """Drop 100 ms at each end where the filter sees the zero padding."""
    edge = rate // 10
    return x[edge:-edge].astype(np.float64)


def power_db(x: npt.NDArray[np.float64]) -> float:
    return float(10 * np.log10(np.mean(x**2) + 1e-12))


def peak_frequency(x: npt.NDArray[np.float64], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("rate", RATES)
def test_1khz_to_8k_keeps_frequency_and_energy(rate: int) -> None:
    x = tone(1000, rate)
    y = resample(x, rate, 8000)
    assert len(y) == 8000
    out = steady(y, 8000)
    assert peak_frequency(out, 8000) == pytest.approx(1000, abs=2)
    assert abs(power_db(out) - power_db(steady(x, rate))) < 1.0


def test_6khz_at_44k1_is_removed() -> None:
    reference = power_db(steady(tone(1000, 44100), 44100))
    y = resample(tone(6000, 44100), 44100, 8000)
    assert reference - power_db(steady(y, 8000)) >= 30


@pytest.mark.parametrize("rate", [16000, 22050, 32000, 44100, 48000])
def test_out_of_band_tones_are_attenuated_for_every_rate(rate: int) -> None:
    freq = min(6000.0, rate / 2 - 500)
    y = resample(tone(freq, rate), rate, 8000)
    assert power_db(steady(y, 8000)) < power_db(steady(tone(1000, rate), rate)) - 30


def test_passband_is_flat_below_3khz() -> None:
    for freq in (300, 1000, 2000, 3000):
        x = tone(freq, 48000)
        y = resample(x, 48000, 8000)
        assert abs(power_db(steady(y, 8000)) - power_db(steady(x, 48000))) < 0.2, freq


def test_upsample_8k_to_48k() -> None:
    x = tone(1000, 8000)
    y = resample(x, 8000, 48000)
    assert len(y) == 48000
    out = steady(y, 48000)
    assert peak_frequency(out, 48000) == pytest.approx(1000, abs=2)
    assert abs(power_db(out) - power_db(steady(x, 8000))) < 0.2
    # No images of the 1 kHz tone at 7 and 9 kHz.
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    bins = len(out) / 48000
    image = spectrum[int(6500 * bins) : int(24000 * bins)].max()
    assert 20 * np.log10(image / spectrum.max()) < -50


def test_round_trip_8k_48k_8k_is_close() -> None:
    x = tone(440, 8000) // 2 + tone(1800, 8000) // 2
    back = resample(resample(x, 8000, 48000), 48000, 8000)
    err = steady(back, 8000) - steady(x, 8000)
    assert power_db(steady(x, 8000)) - power_db(err) > 40


def test_output_is_time_aligned_with_input() -> None:
    impulse = np.zeros(4800, dtype=np.int16)
    impulse[2400] = 30000
    y = resample(impulse, 48000, 8000)
    assert int(np.argmax(y)) == 400


@pytest.mark.parametrize(
    ("src", "dst"), [(44100, 8000), (8000, 48000), (11025, 8000), (16000, 8000)]
)
@pytest.mark.parametrize("chunk", [1, 7, 160, 441, 960, 100000])
def test_streaming_matches_one_shot(src: int, dst: int, chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    x = rng.integers(-20000, 20000, size=src // 5).astype(np.int16)
    resampler = Resampler(src, dst)
    parts = [resampler.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    parts.append(resampler.flush())
    assert np.array_equal(np.concatenate(parts), resample(x, src, dst))


def test_flush_resets_for_next_stream() -> None:
    resampler = Resampler(16000, 8000)
    x = tone(500, 16000, 0.1)
    first = np.concatenate([resampler.process(x), resampler.flush()])
    second = np.concatenate([resampler.process(x), resampler.flush()])
    assert np.array_equal(first, second)


def test_output_lengths() -> None:
    for src in RATES:
        for n in (0, 1, 2, 159, 160, 441, 1000):
            x = np.ones(n, dtype=np.int16)
            assert len(resample(x, src, 8000)) == -(-n * 8000 // src), (src, n)


def test_same_rate_is_identity() -> None:
    x = tone(1000, 8000, 0.1)
    assert np.array_equal(resample(x, 8000, 8000), x)


def test_full_scale_input_saturates_instead_of_wrapping() -> None:
    # 50 Hz full-scale square: period 882 samples in, 160 out.
    square = np.where(np.arange(44100) % 882 < 441, 32767, -32768).astype(np.int16)
    y = resample(square, 44100, 8000)
    assert y.dtype == np.int16
    # Gibbs overshoot clips at the rails; wrapping would flip plateaus to the other sign.
    assert int(y.max()) == 32767
    assert int(y.min()) == -32768
    assert np.all(y[40 + 160 : -160 : 160] > 30000)
    assert np.all(y[120 + 160 : -160 : 160] < -30000)


def test_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="ratio"):
        Resampler(8000, 7919 * 2)
