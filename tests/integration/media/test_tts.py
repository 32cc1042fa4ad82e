"""Text-to-speech with the real espeak-ng: audio, caching, and the failure modes."""

from __future__ import annotations

import asyncio
import shutil
import stat
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pomelo.media.tts import TextToSpeech, TtsUnavailable
from pomelo.media.wav import read_prompt

ESPEAK = shutil.which("espeak-ng")
pytestmark = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed")


def rms(pcm: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def counting_espeak(tmp_path: Path) -> tuple[str, Path]:
    """A wrapper that logs each synthesis run (not version checks), then runs espeak-ng."""
    log = tmp_path / "runs.log"
    body = f'[ "$1" = "--version" ] || echo run >> "{log}"\nexec "{ESPEAK}" "$@"\n'
    return script(tmp_path / "espeak-wrapper", body), log


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


async def test_english_prompt_is_audible_speech(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    pcm = await tts.prompt("Hello, you have reached Pomelo. Please hold the line.", "en")
    assert pcm.dtype == np.int16
    assert 1.5 < len(pcm) / 8000 < 8.0  # a short sentence at 160 words per minute
    assert rms(pcm) > 500
    assert not pcm[-800:].any() or rms(pcm[-800:]) < rms(pcm)  # ends, not cut mid-word


async def test_russian_prompt_is_audible_speech(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    pcm = await tts.prompt("Здравствуйте! Вы позвонили в компанию Помело.", "ru")
    assert 1.5 < len(pcm) / 8000 < 8.0
    assert rms(pcm) > 500


async def test_rendered_file_is_an_8k_prompt(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    path = await tts.render("Thank you for calling.", "en")
    assert path.parent == tmp_path / "cache" and path.suffix == ".wav"
    np.testing.assert_array_equal(read_prompt(path), await tts.prompt("Thank you for calling."))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


async def test_second_render_comes_from_the_cache(tmp_path: Path) -> None:
    binary, log = counting_espeak(tmp_path)
    tts = TextToSpeech(tmp_path / "cache", binary=binary)
    first = await tts.render("Your call is important to us.", "en")
    mtime = first.stat().st_mtime_ns
    second = await tts.render("Your call is important to us.", "en")
    restarted = TextToSpeech(tmp_path / "cache", binary=binary)  # a new process, same cache
    third = await restarted.render("Your call is important to us.", "en")
    assert first == second == third
    assert first.stat().st_mtime_ns == mtime
    assert runs(log) == 1


async def test_concurrent_requests_share_one_run(tmp_path: Path) -> None:
    binary, log = counting_espeak(tmp_path)
    tts = TextToSpeech(tmp_path / "cache", binary=binary)
    paths = await asyncio.gather(*(tts.render("All operators are busy.", "en") for _ in range(8)))
    assert len(set(paths)) == 1
    assert runs(log) == 1


async def test_caller_hanging_up_does_not_cancel_the_shared_render(tmp_path: Path) -> None:
    binary, log = counting_espeak(tmp_path)
    tts = TextToSpeech(tmp_path / "cache", binary=binary)
    impatient = asyncio.create_task(tts.render("Please stay on the line.", "en"))
    patient = asyncio.create_task(tts.render("Please stay on the line.", "en"))
    await asyncio.sleep(0)
    impatient.cancel()
    path = await patient
    assert impatient.cancelled()
    assert read_prompt(path).size > 0
    assert runs(log) == 1


async def test_voice_rate_and_text_each_get_their_own_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    slow, fast = TextToSpeech(cache, rate_wpm=120), TextToSpeech(cache, rate_wpm=220)
    paths = {
        await slow.render("One two three", "en"),
        await fast.render("One two three", "en"),
        await slow.render("One two three", "ru"),
        await slow.render("One two four", "en"),
    }
    assert len(paths) == 4
    slow_pcm, fast_pcm = await slow.prompt("One two three"), await fast.prompt("One two three")
    assert len(slow_pcm) > len(fast_pcm)


async def test_text_is_spoken_not_parsed_as_options(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    pcm = await tts.prompt("-v xx --help; rm -rf $HOME `id` \x00 done", "en")
    assert rms(pcm) > 500
    assert Path.home().exists()


async def test_missing_binary_explains_what_to_install(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache", binary=str(tmp_path / "no-such-espeak"))
    assert not tts.available()
    with pytest.raises(TtsUnavailable, match=r"espeak-ng.*apt-get install espeak-ng"):
        tts.require()
    with pytest.raises(TtsUnavailable, match="apt-get install espeak-ng"):
        await tts.render("hello")
    assert not (tmp_path / "cache").exists()


async def test_installed_binary_passes_the_startup_check(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    assert tts.available()
    tts.require()


async def test_unknown_language_and_empty_text_are_refused(tmp_path: Path) -> None:
    tts = TextToSpeech(tmp_path / "cache")
    with pytest.raises(ValueError, match="no text-to-speech voice for 'tlh'"):
        await tts.render("Qapla'", "tlh")
    with pytest.raises(ValueError, match="empty"):
        await tts.render("  \n ", "en")
    with pytest.raises(ValueError, match="limit"):
        await tts.render("word " * 2000, "en")


async def test_engine_failure_reports_its_error_output(tmp_path: Path) -> None:
    body = (
        '[ "$1" = "--version" ] && { echo fake 1.0; exit 0; }\n'
        'echo "voice data missing" >&2\n'
        "exit 3\n"
    )
    tts = TextToSpeech(tmp_path / "cache", binary=script(tmp_path / "broken", body))
    with pytest.raises(RuntimeError, match=r"exit code 3.*voice data missing"):
        await tts.render("hello")
    assert not list((tmp_path / "cache").glob("*.wav"))


async def test_hung_engine_is_killed_after_the_timeout(tmp_path: Path) -> None:
    body = '[ "$1" = "--version" ] && { echo fake 1.0; exit 0; }\nexec sleep 60\n'
    tts = TextToSpeech(tmp_path / "cache", binary=script(tmp_path / "hung", body), timeout_s=0.3)
    with pytest.raises(RuntimeError, match="did not finish"):
        await tts.render("hello")


async def test_failed_render_is_retried_next_time(tmp_path: Path) -> None:
    flag = tmp_path / "broken-once"
    flag.touch()
    body = (
        f'if [ "$1" != "--version" ] && [ -e "{flag}" ]; then rm "{flag}"; exit 1; fi\n'
        f'exec "{ESPEAK}" "$@"\n'
    )
    tts = TextToSpeech(tmp_path / "cache", binary=script(tmp_path / "flaky", body))
    with pytest.raises(RuntimeError, match="exit code 1"):
        await tts.render("Please try again.")
    assert (await tts.render("Please try again.")).is_file()
