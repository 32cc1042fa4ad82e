"""Voice menus: the PBX answers the caller, plays a prompt, and routes by the key pressed.

The menu runs inside the call's task like everything else of a call. The caller's leg is
answered by the PBX itself (its media is anchored, so no other party is needed); key presses
arrive as RFC 4733 events, as SIP INFO (``application/dtmf-relay``), or as tones in the audio
(Goertzel), whichever the phone or trunk uses. When a choice is made (or the caller waits out
the retries) the call continues as if it had been dialled to the chosen group: the phones ring,
the caller hears a ringback tone, and the first to answer is joined to the caller's session —
no re-INVITE of the caller is needed because the PBX kept his media all along.

The definition (JSON, stored in ``scenarios``) is validated here; an invalid one names the
field at fault. The routing issue grows this into a scenario graph.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pomelo.media.player import Tone
from pomelo.media.relay import Playback
from pomelo.media.tts import TextToSpeech, TtsUnavailable
from pomelo.media.wav import MediaFileError, read_prompt
from pomelo.pbx.anchor import media_of

if TYPE_CHECKING:
    from pomelo.pbx.calls import Call
    from pomelo.sip.transaction import ServerTransaction, TimerHandle

__all__ = ["Ivr", "MenuPlan", "ScenarioError", "dtmf_of_info", "parse_menu"]

log = logging.getLogger(__name__)

_DIGITS = frozenset("0123456789*#")
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.wav")
_SIGNAL = re.compile(rb"^\s*Signal\s*=\s*([0-9*#A-Da-d])\s*$", re.MULTILINE | re.IGNORECASE)


class ScenarioError(ValueError):
    """The scenario definition cannot be run; the message names the field."""


@dataclass(frozen=True, slots=True)
class MenuPlan:
    prompt_text: str
    lang: str
    options: Mapping[str, str]
    """Key → group id."""
    default: str | None
    """Group for no (or a wrong) choice after the retries; None hangs up."""
    timeout: float = 5.0
    retries: int = 1
    prompt_file: str | None = None
    """A recorded prompt (WAV, any common PCM rate) under the prompts directory, played
    instead of speaking ``prompt_text``."""


def parse_menu(definition: Mapping[str, Any]) -> MenuPlan:
    if definition.get("type") != "menu":
        raise ScenarioError("type: only 'menu' is supported")
    prompt = definition.get("prompt")
    if not isinstance(prompt, Mapping) or not isinstance(prompt.get("text"), str):
        raise ScenarioError("prompt.text: a text to speak (or to show, with prompt.file)")
    prompt_file = prompt.get("file")
    if prompt_file is not None and not (
        isinstance(prompt_file, str) and _SAFE_FILE.fullmatch(prompt_file)
    ):
        raise ScenarioError("prompt.file: a file name in the prompts directory (name.wav)")
    lang = prompt.get("lang", "en")
    if lang not in ("en", "ru"):
        raise ScenarioError("prompt.lang: 'en' or 'ru'")
    options: dict[str, str] = {}
    raw = definition.get("options", {})
    if not isinstance(raw, Mapping):
        raise ScenarioError("options: an object of key → target")
    for key, target in raw.items():
        if key not in _DIGITS:
            raise ScenarioError(f"options.{key}: not a phone key")
        options[key] = _group(target, f"options.{key}")
    default = definition.get("default")
    timeout = definition.get("timeout", 5)
    retries = definition.get("retries", 1)
    if not isinstance(timeout, int | float) or not 1 <= timeout <= 60:
        raise ScenarioError("timeout: seconds between 1 and 60")
    if not isinstance(retries, int) or not 0 <= retries <= 5:
        raise ScenarioError("retries: 0 to 5")
    return MenuPlan(
        prompt["text"],
        lang,
        options,
        _group(default, "default") if default is not None else None,
        float(timeout),
        retries,
        prompt_file,
    )


def _group(target: Any, where: str) -> str:
    if isinstance(target, Mapping) and isinstance(target.get("group"), str):
        return str(target["group"])
    raise ScenarioError(f"{where}: expected {{'group': <group id>}}")


def dtmf_of_info(body: bytes, content_type: str | None) -> str | None:
    """The key of a SIP INFO ``application/dtmf-relay`` (or ``application/dtmf``) body."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/dtmf-relay":
        match = _SIGNAL.search(body)
        return match.group(1).decode().upper() if match else None
    if kind == "application/dtmf":
        text = body.strip().decode(errors="replace")
        return text.upper() if len(text) == 1 and text.upper() in _DIGITS | set("ABCD") else None
    return None


def ringback() -> np.typing.NDArray[np.int16]:
    """425 Hz, 1 s on, 4 s off (the ringback tone of Russia and most of Europe)."""
    tone = Tone(425, 1000)
    frames = []
    while (frame := tone.read()) is not None:
        frames.append(frame)
    return np.concatenate([*frames, np.zeros(4 * 8000, dtype=np.int16)])


def hold_music() -> np.typing.NDArray[np.int16]:
    """A quiet built-in tune (a C-major arpeggio, 8 s loop) for when no file is configured:
    the held caller must hear that the line is alive."""
    rate = 8000
    notes = [261.63, 329.63, 392.0, 523.25, 392.0, 329.63, 293.66, 349.23]
    t = np.arange(int(0.5 * rate)) / rate
    envelope = np.minimum(1.0, np.minimum(t / 0.03, (0.5 - t) / 0.12))
    level = 32767 * 10 ** (-20 / 20)
    phrase = np.concatenate([level * envelope * np.sin(2 * np.pi * f * t) for f in notes * 2])
    return phrase.astype(np.int16)


async def load_prompt(
    plan: MenuPlan, tts: TextToSpeech | None, prompts_dir: Path | None, call_id: str = "-"
) -> np.typing.NDArray[np.int16]:
    """The menu's prompt as 8 kHz audio: its recorded file, else its text spoken. A prompt
    that cannot be had is logged and replaced by silence — the menu still listens."""
    if plan.prompt_file is not None and prompts_dir is not None:
        try:
            return await asyncio.to_thread(read_prompt, prompts_dir / plan.prompt_file)
        except MediaFileError as exc:
            log.error("call %s: menu prompt file unusable: %s", call_id, exc)
    if tts is not None:
        try:
            return await tts.prompt(plan.prompt_text, plan.lang)
        except (TtsUnavailable, RuntimeError) as exc:
            log.error("call %s: menu prompt not rendered: %s", call_id, exc)
    return np.zeros(0, dtype=np.int16)


class Ivr:
    """One menu run on one call."""

    __slots__ = ("attempt", "call", "chosen", "plan", "playback", "timer")

    def __init__(self, call: Call, plan: MenuPlan) -> None:
        self.call = call
        self.plan = plan
        self.playback: Playback | None = None
        self.timer: TimerHandle | None = None
        self.attempt = 0
        self.chosen: str | None = None

    @property
    def listening(self) -> bool:
        return self.chosen is None

    async def start(self, tts: TextToSpeech | None) -> None:
        call = self.call
        media = media_of(call.a)
        if media is None:
            raise ScenarioError("menus need anchored media")
        session = media.session
        session.on_dtmf = lambda digit: call.post(self.on_digit, digit)
        session.detect_inband(True)
        prompt = await load_prompt(self.plan, tts, call.service.prompts_dir, call.id)
        if not self.listening or not call.a.confirmed:
            return
        self._play(prompt)
        self._arm(len(prompt) / 8000)

    def _play(self, pcm: np.typing.NDArray[np.int16], *, loop: bool = False) -> None:
        self._stop_playback()
        media = media_of(self.call.a)
        engine = self.call.service.media
        if media is None or engine is None:
            return
        self.playback = Playback(
            media.session, engine.clock, pcm, loop=loop, recorder=self.call.media.recorder
        ).start()

    def _arm(self, prompt_seconds: float) -> None:
        call = self.call
        if self.timer is not None:
            self.timer.cancel()
        self.timer = call.service.call_later(
            prompt_seconds + self.plan.timeout, lambda: call.post(self.on_timeout)
        )

    async def on_digit(self, digit: str) -> None:
        if not self.listening:
            return
        group = self.plan.options.get(digit)
        log.info("call %s: menu key %s → %s", self.call.id, digit, group)
        if group is None:
            return  # a key the menu does not know: keep listening until the timeout
        await self._choose(digit, group)

    async def on_info(self, tx: ServerTransaction) -> None:
        request = tx.request
        digit = dtmf_of_info(request.body, request.content_type)
        tx.reply(200 if digit is not None else 415)
        if digit is not None:
            await self.on_digit(digit)

    async def on_timeout(self) -> None:
        self.timer = None
        if not self.listening:
            return
        if self.attempt < self.plan.retries:
            self.attempt += 1
            self._replay()
            return
        if self.plan.default is None:
            await self.call.give_up("menu-no-choice")
            return
        await self._choose("", self.plan.default)

    def _replay(self) -> None:
        playback = self.playback
        if playback is not None:
            self._play(playback.pcm)
            self._arm(playback.seconds)

    async def _choose(self, digit: str, group_id: str) -> None:
        self.chosen = digit or "timeout"
        self.stop_listening()
        self._play(ringback(), loop=True)
        await self.call.ring_group(group_id)

    def stop_listening(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        media = media_of(self.call.a)
        if media is not None:
            media.session.on_dtmf = None
            media.session.detect_inband(False)

    def _stop_playback(self) -> None:
        if self.playback is not None:
            self.playback.stop()
            self.playback = None

    def stop(self) -> None:
        self.stop_listening()
        self._stop_playback()
