"""Conference mixer and supervision: who hears whom, saturation, silence, changes mid-call.

Each speaker talks on his own frequency (multiples of 50 Hz fall on exact FFT bins of a
160-sample frame at 8 kHz), so what a listener hears is read off his output spectrum.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.mixer import FRAME_SAMPLES, Mixer, SupervisorMode, supervise

RATE = 8000
TONES = {"alice": 400.0, "bob": 1000.0, "carol": 1800.0, "dave": 2600.0, "eve": 3200.0}

Frame = npt.NDArray[np.int16]


def tone(freq: float, amplitude: float = 4000.0, tick: int = 0) -> Frame:
    n = np.arange(tick * FRAME_SAMPLES, (tick + 1) * FRAME_SAMPLES)
    return np.rint(amplitude * np.sin(2 * np.pi * freq * n / RATE)).astype(np.int16)


def heard(frame: Frame) -> set[str]:
    """Speakers whose tone carries real energy in the frame."""
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64))) / (FRAME_SAMPLES / 2)
    return {
        name for name, freq in TONES.items() if spectrum[round(freq * FRAME_SAMPLES / RATE)] > 100
    }


def everyone_talks(mixer: Mixer, tick: int = 0) -> dict[str, Frame | None]:
    return {pid: tone(TONES[pid], tick=tick) for pid in mixer.participants}


def hearing(mixer: Mixer, tick: int = 0) -> dict[str, set[str]]:
    return {pid: heard(frame) for pid, frame in mixer.mix(everyone_talks(mixer, tick)).items()}


def conference(*names: str) -> Mixer:
    mixer = Mixer()
    for name in names:
        mixer.add(name)
    return mixer


# -- open conference -------------------------------------------------------------------


def test_everyone_hears_everyone_else_but_not_himself() -> None:
    mixer = conference("alice", "bob", "carol", "dave")
    assert hearing(mixer) == {
        "alice": {"bob", "carol", "dave"},
        "bob": {"alice", "carol", "dave"},
        "carol": {"alice", "bob", "dave"},
        "dave": {"alice", "bob", "carol"},
    }


def test_mix_is_the_exact_sum_of_the_others() -> None:
    mixer = conference("alice", "bob", "carol")
    bob, carol = tone(TONES["bob"]), tone(TONES["carol"])
    out = mixer.mix({"alice": tone(TONES["alice"]), "bob": bob, "carol": carol})
    expected = bob.astype(np.int32) + carol.astype(np.int32)
    assert np.array_equal(out["alice"], expected.astype(np.int16))
    assert all(frame.dtype == np.int16 and frame.shape == (160,) for frame in out.values())


def test_alone_in_the_room_hears_silence() -> None:
    mixer = conference("alice")
    out = mixer.mix({"alice": tone(400)})
    assert np.array_equal(out["alice"], np.zeros(FRAME_SAMPLES, dtype=np.int16))


def test_empty_mixer_mixes_nothing() -> None:
    assert Mixer().mix({}) == {}


# -- silence ---------------------------------------------------------------------------


def test_silent_or_missing_speakers_contribute_nothing() -> None:
    mixer = conference("alice", "bob", "carol")
    out = mixer.mix({"alice": tone(400), "bob": None})  # carol: no packet at all
    assert heard(out["bob"]) == {"alice"}
    assert heard(out["carol"]) == {"alice"}
    assert heard(out["alice"]) == set()
    assert not out["alice"].any()


def test_nobody_talking_gives_every_participant_a_zero_frame() -> None:
    mixer = conference("alice", "bob")
    out = mixer.mix({"alice": None})
    assert set(out) == {"alice", "bob"}
    assert all(not frame.any() and frame.shape == (FRAME_SAMPLES,) for frame in out.values())


def test_listener_with_nothing_to_hear_gets_zero_frame_in_custom_matrix() -> None:
    mixer = conference("alice", "bob", "carol")
    mixer.set_hearing("carol", "alice", False)
    mixer.set_hearing("carol", "bob", False)
    out = mixer.mix(everyone_talks(mixer))
    assert not out["carol"].any()
    assert heard(out["alice"]) == {"bob", "carol"}


# -- saturation ------------------------------------------------------------------------


def test_loud_speakers_saturate_instead_of_wrapping() -> None:
    mixer = conference("alice", "bob", "carol")
    loud = np.full(FRAME_SAMPLES, 30000, dtype=np.int16)
    out = mixer.mix({"bob": loud, "carol": loud})
    assert np.all(out["alice"] == 32767)
    assert np.array_equal(out["bob"], loud)  # bob hears only carol: no clipping needed
    out = mixer.mix({"bob": -loud, "carol": np.full(FRAME_SAMPLES, -32768, dtype=np.int16)})
    assert np.all(out["alice"] == -32768)


def test_saturation_also_in_custom_matrix() -> None:
    mixer = conference("alice", "bob", "carol")
    mixer.set_hearing("bob", "carol", False)
    loud = np.full(FRAME_SAMPLES, 25000, dtype=np.int16)
    out = mixer.mix({"alice": loud, "bob": loud, "carol": loud})
    assert np.all(out["alice"] == 32767)
    assert np.array_equal(out["bob"], loud)
    assert np.all(out["carol"] == 32767)


def test_many_full_scale_speakers_do_not_overflow() -> None:
    names = [f"p{i}" for i in range(200)]
    mixer = conference(*names)
    low = np.full(FRAME_SAMPLES, -32768, dtype=np.int16)
    out = mixer.mix(dict.fromkeys(names, low))
    assert all(np.all(frame == -32768) for frame in out.values())


# -- arbitrary matrices ----------------------------------------------------------------


def test_custom_matrix_matches_a_naive_mix() -> None:
    rng = np.random.default_rng(7)
    names = list(TONES)
    mixer = conference(*names)
    for listener, speaker in itertools.permutations(names, 2):
        mixer.set_hearing(listener, speaker, bool(rng.random() < 0.5))
    frames = {
        pid: rng.integers(-20000, 20000, FRAME_SAMPLES).astype(np.int16) for pid in names[:-1]
    }
    out = mixer.mix(frames)
    for listener in names:
        total = np.zeros(FRAME_SAMPLES, dtype=np.int64)
        for speaker, frame in frames.items():
            if mixer.hears(listener, speaker):
                total += frame
        assert np.array_equal(out[listener], np.clip(total, -32768, 32767).astype(np.int16))


def test_one_way_hearing() -> None:
    mixer = conference("alice", "bob")
    mixer.set_hearing("alice", "bob", False)
    assert hearing(mixer) == {"alice": set(), "bob": {"alice"}}
    assert not mixer.hears("alice", "bob")
    assert mixer.hears("bob", "alice")


def test_restoring_the_matrix_gives_the_conference_back() -> None:
    mixer = conference("alice", "bob", "carol")
    mixer.set_hearing("alice", "bob", False)
    mixer.set_hearing("alice", "bob", True)
    assert hearing(mixer)["alice"] == {"bob", "carol"}


def test_nobody_can_be_made_to_hear_himself() -> None:
    mixer = conference("alice", "bob")
    assert not mixer.hears("alice", "alice")
    with pytest.raises(ValueError, match="himself"):
        mixer.set_hearing("alice", "alice", True)
    mixer.set_hearing("alice", "alice", False)  # already so: accepted
    assert hearing(mixer)["alice"] == {"bob"}


# -- mute ------------------------------------------------------------------------------


def test_muted_participant_is_heard_by_nobody_but_still_hears() -> None:
    mixer = conference("alice", "bob", "carol")
    mixer.mute("bob")
    assert mixer.is_muted("bob")
    assert hearing(mixer) == {
        "alice": {"carol"},
        "bob": {"alice", "carol"},
        "carol": {"alice"},
    }
    mixer.mute("bob", False)
    assert hearing(mixer)["alice"] == {"bob", "carol"}


def test_unmute_restores_the_matrix_not_the_conference() -> None:
    mixer = conference("sup", "alice", "bob")
    supervise(mixer, "sup", "alice", "bob", SupervisorMode.LISTEN)
    mixer.mute("sup")
    supervise(mixer, "sup", "alice", "bob", SupervisorMode.WHISPER)
    mixer.mute("sup", False)
    out = mixer.mix({"sup": tone(2600)})
    assert heard(out["bob"]) == {"dave"}  # sup speaks on dave's frequency
    assert not out["alice"].any()


# -- membership ------------------------------------------------------------------------


def test_removal_mid_call_keeps_the_others_talking() -> None:
    mixer = conference("alice", "bob", "carol")
    assert hearing(mixer, tick=0)["alice"] == {"bob", "carol"}
    mixer.remove("bob")
    assert mixer.participants == ("alice", "carol")
    frames = everyone_talks(mixer, tick=1) | {"bob": tone(1000, tick=1)}  # bob's last packet
    out = mixer.mix(frames)
    assert set(out) == {"alice", "carol"}
    assert heard(out["alice"]) == {"carol"}
    assert heard(out["carol"]) == {"alice"}


def test_removal_keeps_custom_relations_between_the_others() -> None:
    mixer = conference("alice", "bob", "carol", "dave")
    mixer.set_hearing("dave", "carol", False)
    mixer.remove("alice")
    assert not mixer.hears("dave", "carol")
    assert hearing(mixer) == {
        "bob": {"carol", "dave"},
        "carol": {"bob", "dave"},
        "dave": {"bob"},
    }


def test_rejoining_after_removal_starts_in_the_open_conference() -> None:
    mixer = conference("alice", "bob")
    mixer.set_hearing("alice", "bob", False)
    mixer.mute("bob")
    mixer.remove("bob")
    mixer.add("bob")
    assert not mixer.is_muted("bob")
    assert hearing(mixer) == {"alice": {"bob"}, "bob": {"alice"}}


def test_unknown_participants_are_errors_for_control_but_ignored_in_frames() -> None:
    mixer = conference("alice", "bob")
    with pytest.raises(KeyError, match="zoe"):
        mixer.set_hearing("alice", "zoe", True)
    with pytest.raises(KeyError, match="zoe"):
        mixer.hears("zoe", "alice")
    with pytest.raises(KeyError, match="zoe"):
        mixer.mute("zoe")
    with pytest.raises(KeyError, match="zoe"):
        mixer.remove("zoe")
    out = mixer.mix({"zoe": tone(400), "bob": tone(1000)})
    assert set(out) == {"alice", "bob"}
    assert heard(out["alice"]) == {"bob"}


def test_adding_twice_is_an_error() -> None:
    mixer = conference("alice")
    with pytest.raises(ValueError, match="already"):
        mixer.add("alice")


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(80, dtype=np.int16),
        np.zeros(FRAME_SAMPLES, dtype=np.float32),
        np.zeros((2, FRAME_SAMPLES), dtype=np.int16),
    ],
)
def test_malformed_frames_are_rejected(bad: npt.NDArray[np.generic]) -> None:
    mixer = conference("alice", "bob")
    with pytest.raises(ValueError, match="alice"):
        mixer.mix({"alice": bad})  # type: ignore[dict-item]


def test_other_frame_sizes_for_wideband() -> None:
    mixer = Mixer(frame_samples=320)
    mixer.add("a")
    mixer.add("b")
    out = mixer.mix({"a": np.full(320, 7, dtype=np.int16)})
    assert np.all(out["b"] == 7)
    with pytest.raises(ValueError, match="positive"):
        Mixer(frame_samples=0)


# -- supervision -----------------------------------------------------------------------
# client = alice, employee = bob, supervisor = carol


def supervised(mode: SupervisorMode) -> Mixer:
    mixer = conference("alice", "bob")
    supervise(mixer, "carol", "alice", "bob", mode)
    return mixer


EXPECTED = {
    SupervisorMode.LISTEN: {"alice": {"bob"}, "bob": {"alice"}, "carol": {"alice", "bob"}},
    SupervisorMode.WHISPER: {
        "alice": {"bob"},
        "bob": {"alice", "carol"},
        "carol": {"alice", "bob"},
    },
    SupervisorMode.BARGE: {
        "alice": {"bob", "carol"},
        "bob": {"alice", "carol"},
        "carol": {"alice", "bob"},
    },
}


@pytest.mark.parametrize("mode", list(SupervisorMode))
def test_each_mode_decides_who_hears_the_supervisor(mode: SupervisorMode) -> None:
    mixer = supervised(mode)
    assert "carol" in mixer
    assert hearing(mixer) == EXPECTED[mode]


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(list(SupervisorMode), 2)))
def test_switching_modes_mid_call(first: SupervisorMode, second: SupervisorMode) -> None:
    mixer = supervised(first)
    assert hearing(mixer, tick=0) == EXPECTED[first]
    supervise(mixer, "carol", "alice", "bob", second)
    assert hearing(mixer, tick=1) == EXPECTED[second]


@pytest.mark.parametrize("mode", list(SupervisorMode))
def test_switching_to_the_same_mode_is_idempotent(mode: SupervisorMode) -> None:
    mixer = supervised(mode)
    before = mixer.mix(everyone_talks(mixer))
    supervise(mixer, "carol", "alice", "bob", mode)
    supervise(mixer, "carol", "alice", "bob", mode)
    after = mixer.mix(everyone_talks(mixer))
    assert all(np.array_equal(before[pid], after[pid]) for pid in before)
    assert mixer.participants == ("alice", "bob", "carol")


def test_listen_mode_leaks_nothing_of_the_supervisor_even_when_he_shouts() -> None:
    mixer = supervised(SupervisorMode.LISTEN)
    shout = np.full(FRAME_SAMPLES, 32767, dtype=np.int16)
    out = mixer.mix({"carol": shout, "alice": None, "bob": None})
    assert not out["alice"].any()
    assert not out["bob"].any()


def test_supervisor_leaving_returns_the_call_to_two_parties() -> None:
    mixer = supervised(SupervisorMode.WHISPER)
    mixer.remove("carol")
    assert hearing(mixer) == {"alice": {"bob"}, "bob": {"alice"}}


def test_supervise_repairs_a_call_where_the_parties_could_not_hear_each_other() -> None:
    mixer = conference("alice", "bob")
    mixer.set_hearing("alice", "bob", False)
    supervise(mixer, "carol", "alice", "bob", SupervisorMode.LISTEN)
    assert hearing(mixer) == EXPECTED[SupervisorMode.LISTEN]


def test_supervise_leaves_other_participants_alone() -> None:
    mixer = conference("alice", "bob", "dave")
    mixer.set_hearing("dave", "alice", False)
    supervise(mixer, "carol", "alice", "bob", SupervisorMode.BARGE)
    assert not mixer.hears("dave", "alice")
    assert mixer.hears("dave", "carol")


def test_supervise_needs_three_distinct_parties() -> None:
    mixer = conference("alice", "bob")
    with pytest.raises(ValueError, match="different"):
        supervise(mixer, "alice", "alice", "bob", SupervisorMode.LISTEN)
    assert mixer.participants == ("alice", "bob")
