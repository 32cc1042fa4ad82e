"""Text-to-speech prompts with espeak-ng, cached on disk as 8 kHz WAV.

IVR scenarios say the same sentences all day, so each (engine version, voice, rate, text)
is synthesised once and kept as a ready-to-play 8 kHz mono file; later calls only read it.
A newer espeak-ng changes the key, so an upgrade re-renders rather than mixing voices.

espeak-ng runs as a subprocess (never through a shell; the text is one argument after
``--`` so a leading dash is spoken, not parsed) under a timeout. Concurrent requests for the
same sentence share one run. The cache write is a temp file + rename, so a crash or a second
process never leaves a half-written prompt behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from pomelo.media.wav import MEDIA_RATE, decode_prompt, read_prompt, write_wav

__all__ = ["VOICES", "TextToSpeech", "TtsUnavailable"]

# Pomelo language code -> espeak-ng voice. Only voices shipped with Debian's espeak-ng-data.
VOICES: Final[dict[str, str]] = {
    "en": "en",
    "en-gb": "en-gb",
    "en-us": "en-us",
    "ru": "ru",
    "uk": "uk",
    "de": "de",
    "fr": "fr-fr",
    "es": "es",
    "it": "it",
    "pl": "pl",
    "pt": "pt",
}
MAX_TEXT_CHARS: Final = 4000
_CONTROL: Final = {c: " " for c in range(32) if chr(c) not in "\n\t"} | {127: " "}


class TtsUnavailable(RuntimeError):
    """Raised when the TTS engine cannot be run at all (not installed, not executable)."""

    def __init__(self, binary: str, reason: str = "not found") -> None:
        super().__init__(
            f"text-to-speech needs espeak-ng ({binary!r}: {reason}); "
            "install the Debian package: apt-get install espeak-ng"
        )
        self.binary = binary


class TextToSpeech:
    """Renders text to cached WAV prompts; one instance per process (composition root)."""

    __slots__ = ("_binary", "_cache_dir", "_inflight", "_rate_wpm", "_timeout", "_version")

    def __init__(
        self,
        cache_dir: Path,
        binary: str = "espeak-ng",
        rate_wpm: int = 160,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        if not 80 <= rate_wpm <= 450:
            raise ValueError(f"speech rate must be 80-450 words per minute, got {rate_wpm}")
        self._cache_dir = cache_dir
        self._binary = binary
        self._rate_wpm = rate_wpm
        self._timeout = timeout_s
        self._version: str | None = None
        self._inflight: dict[str, asyncio.Task[Path]] = {}

    def available(self) -> bool:
        return shutil.which(self._binary) is not None

    def require(self) -> None:
        """Fail at start-up, not on the first call, when a scenario needs speech."""
        if not self.available():
            raise TtsUnavailable(self._binary)

    async def prompt(self, text: str, lang: str = "en") -> npt.NDArray[np.int16]:
        """The sentence as 8 kHz mono int16, ready for :class:`pomelo.media.player.Clip`."""
        path = await self.render(text, lang)
        return await asyncio.to_thread(read_prompt, path)

    async def render(self, text: str, lang: str = "en") -> Path:
        """Path of the cached 8 kHz WAV for this sentence, synthesising it if needed."""
        voice = voice_for(lang)
        spoken = clean_text(text)
        key = self._key(await self._engine_version(), voice, spoken)
        path = self._cache_dir / f"{key}.wav"
        task = self._inflight.get(key)
        if task is None:  # no await between the lookup and the insert: one run per key
            task = asyncio.create_task(self._ensure(voice, spoken, path), name=key)
            self._inflight[key] = task
            task.add_done_callback(self._forget)
        # Shield: one caller giving up (hang-up) must not cancel the render others wait for.
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Path]) -> None:
        self._inflight.pop(task.get_name(), None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have hung up already

    def _key(self, version: str, voice: str, text: str) -> str:
        material = "\x00".join((version, voice, str(self._rate_wpm), text))
        return hashlib.sha256(material.encode()).hexdigest()

    async def _engine_version(self) -> str:
        if self._version is None:
            output, _ = await self._run("--version")
            self._version = output.decode(errors="replace").strip()
        return self._version

    async def _ensure(self, voice: str, text: str, path: Path) -> Path:
        if await asyncio.to_thread(path.is_file):
            return path
        return await self._synthesise(voice, text, path)

    async def _synthesise(self, voice: str, text: str, path: Path) -> Path:
        args = ("-v", voice, "-s", str(self._rate_wpm), "--stdout", "--", text)
        wav, stderr = await self._run(*args)
        if not wav:
            detail = stderr.decode(errors="replace").strip() or "no audio produced"
            raise RuntimeError(f"espeak-ng produced no audio: {detail}")
        await asyncio.to_thread(_store, wav, path)
        return path

    async def _run(self, *args: str) -> tuple[bytes, bytes]:
        try:
            process = await asyncio.create_subprocess_exec(
                self._binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except (FileNotFoundError, NotADirectoryError):
            raise TtsUnavailable(self._binary) from None
        except PermissionError:
            raise TtsUnavailable(self._binary, "not executable") from None
        try:
            async with asyncio.timeout(self._timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            await _kill(process)
            raise RuntimeError(f"espeak-ng did not finish within {self._timeout:g} s") from None
        except asyncio.CancelledError:
            await _kill(process)
            raise
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip() or "no error output"
            raise RuntimeError(f"espeak-ng failed (exit code {process.returncode}): {detail}")
        return stdout, stderr


def voice_for(lang: str) -> str:
    """espeak-ng voice for a language code; ValueError names the supported ones."""
    voice = VOICES.get(lang.strip().lower().replace("_", "-"))
    if voice is None:
        raise ValueError(f"no text-to-speech voice for {lang!r}; known: {', '.join(VOICES)}")
    return voice


def clean_text(text: str) -> str:
    """Control characters become spaces (a NUL cannot even be passed as an argument)."""
    spoken = text.translate(_CONTROL).strip()
    if not spoken:
        raise ValueError("nothing to say: the text is empty")
    if len(spoken) > MAX_TEXT_CHARS:
        raise ValueError(f"text is {len(spoken)} characters, the limit is {MAX_TEXT_CHARS}")
    return spoken


def _store(wav: bytes, path: Path) -> None:
    """Convert espeak-ng's output to the media rate once, so every later read is cheap."""
    pcm = decode_prompt(wav, "espeak-ng output")
    write_wav(path, pcm, rate=MEDIA_RATE)


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
