"""Frame sources: clips, playlists, music-on-hold loops, silence and tones."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.player import (
    FRAME_SAMPLES,
    Clip,
    FrameSource,
    Loop,
    Playlist,
    Silence,
    Tone,
)


def drain(source: FrameSource, limit: int = 10_000) -> list[npt.NDArray[np.int16]]:
    frames: list[npt.NDArray[np.int16]] = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            return frames
        frames.append(frame)
    raise AssertionError("source did not finish")


def ramp(n: int) -> npt.NDArray[np.int16]:
    return (np.arange(n) + 1).astype(np.int16)


def test_clip_plays_once_and_pads_the_last_frame() -> None:
    clip = Clip(ramp(400))
    frames = drain(clip)
    assert len(frames) == 3
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16 for f in frames)
    joined = np.concatenate(frames)
    np.testing.assert_array_equal(joined[:400], ramp(400))
    assert not joined[400:].any()
    assert clip.done
    assert clip.read() is None


def test_done_is_known_before_the_next_read() -> None:
    clip = Clip(ramp(320))
    assert not clip.done
    clip.read()
    assert not clip.done
    assert clip.read() is not None
    assert clip.done  # the scenario can move on without a wasted tick


def test_exact_multiple_gets_no_extra_frame() -> None:
    assert len(drain(Clip(ramp(480)))) == 3


def test_empty_clip_is_done_at_once() -> None:
    clip = Clip(np.zeros(0, dtype=np.int16))
    assert clip.done
    assert clip.read() is None


def test_frames_cannot_be_modified_by_a_consumer() -> None:
    samples = ramp(160)
    clip = Clip(samples)
    frame = clip.read()
    assert frame is not None
    with pytest.raises(ValueError, match="read-only"):
        frame[0] = 99
    samples[0] = 99  # nor does changing the caller's array afterwards change the clip
    clip.rewind()
    again = clip.read()
    assert again is not None and again[0] == 1


def test_clip_rewinds_for_a_repeated_menu() -> None:
    clip = Clip(ramp(200))
    first = drain(clip)
    clip.rewind()
    again = drain(clip)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))


def test_clip_refuses_wrong_arrays() -> None:
    with pytest.raises(TypeError, match="int16"):
        Clip(np.zeros(10, dtype=np.float64))
    with pytest.raises(ValueError, match="mono"):
        Clip(np.zeros((10, 2), dtype=np.int16))


def test_loop_is_seamless_and_endless() -> None:
    music = ramp(1000)  # not a multiple of a frame: no silence may appear at the wrap
    loop = Loop(music)
    frames = [loop.read() for _ in range(50)]
    assert not loop.done
    joined = np.concatenate(frames)
    np.testing.assert_array_equal(joined, np.resize(music, 50 * FRAME_SAMPLES))


def test_loop_of_a_clip_shorter_than_a_frame_repeats_within_the_frame() -> None:
    frame = Loop(np.array([1, 2, 3], dtype=np.int16)).read()
    assert frame.tolist() == [1, 2, 3] * 53 + [1]


def test_empty_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Loop(np.zeros(0, dtype=np.int16))


@pytest.mark.parametrize(("ms", "frames"), [(0, 0), (20, 1), (50, 3), (1000, 50)])
def test_silence_lasts_whole_frames(ms: int, frames: int) -> None:
    got = drain(Silence(ms))
    assert len(got) == frames
    assert all(not f.any() for f in got)


def test_endless_silence() -> None:
    silence = Silence(None)
    assert all(silence.read() is not None for _ in range(1000))
    assert not silence.done


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        Silence(-1)


def test_tone_has_the_right_pitch_length_and_no_clicks() -> None:
    tone = Tone(425, 1000, level_dbfs=-6)
    frames = drain(tone)
    assert len(frames) == 50
    signal = np.concatenate(frames).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal))
    assert np.argmax(spectrum) * 8000 / len(signal) == pytest.approx(425, abs=1)
    assert signal.max() == pytest.approx(32767 * 10 ** (-6 / 20), rel=0.01)
    expected = np.rint(32767 * 10 ** (-6 / 20) * np.sin(2 * np.pi * 425 * np.arange(8000) / 8000))
    assert np.max(np.abs(signal - expected)) <= 1  # continuous phase across frame boundaries


def test_tone_bad_parameters() -> None:
    with pytest.raises(ValueError, match="frequency"):
        Tone(5000, 100)
    with pytest.raises(ValueError, match="dBFS"):
        Tone(440, 100, level_dbfs=3)


def test_playlist_plays_in_order() -> None:
    playlist = Playlist([Clip(ramp(100)), Silence(40), Clip(np.full(160, 7, dtype=np.int16))])
    frames = drain(playlist)
    assert len(frames) == 4
    assert frames[0][:100].tolist() == ramp(100).tolist()
    assert not frames[1].any() and not frames[2].any()
    assert frames[3].tolist() == [7] * 160
    assert playlist.done


def test_playlist_skips_empty_sources_and_accepts_more() -> None:
    playlist = Playlist([Clip(np.zeros(0, dtype=np.int16)), Silence(0)])
    assert playlist.done
    assert playlist.read() is None
    playlist.append(Clip(ramp(160)))
    assert not playlist.done
    assert len(drain(playlist)) == 1


def test_greeting_then_music_on_hold_never_ends() -> None:
    playlist = Playlist([Clip(ramp(320)), Loop(np.full(100, 3, dtype=np.int16))])
    frames = [playlist.read() for _ in range(100)]
    assert frames[0] is not None and frames[0][0] == 1
    assert all(f is not None and (f == 3).all() for f in frames[2:])
    assert not playlist.done


def test_playlist_nests() -> None:
    inner = Playlist([Clip(ramp(160)), Clip(ramp(160))])
    outer = Playlist([inner, Silence(20)])
    assert len(drain(outer)) == 3


def test_sources_satisfy_the_protocol() -> None:
    for source in (
        Clip(ramp(1)),
        Loop(ramp(1)),
        Silence(20),
        Tone(440, 20),
        Playlist(),
    ):
        assert isinstance(source, FrameSource)
