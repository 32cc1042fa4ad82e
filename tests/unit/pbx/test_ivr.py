"""Voice menu definitions (validation names the field at fault), key presses carried in SIP
INFO bodies, and where a menu's prompt audio comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pomelo.media.wav import write_wav
from pomelo.pbx.ivr import MenuPlan, ScenarioError, dtmf_of_info, load_prompt, parse_menu

GOOD: dict[str, Any] = {
    "type": "menu",
    "prompt": {"text": "Press one for sales", "lang": "ru"},
    "options": {"1": {"group": "g-sales"}, "#": {"group": "g-support"}},
    "default": {"group": "g-sales"},
    "timeout": 4,
    "retries": 2,
}


def test_a_valid_menu_becomes_a_plan() -> None:
    plan = parse_menu(GOOD)
    assert plan.options == {"1": "g-sales", "#": "g-support"}
    assert (plan.default, plan.lang, plan.timeout, plan.retries) == ("g-sales", "ru", 4.0, 2)
    assert plan.prompt_file is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "queue"}, "type"),
        ({"prompt": {"lang": "en"}}, "prompt.text"),
        ({"prompt": {"text": "x", "lang": "fr"}}, "prompt.lang"),
        ({"prompt": {"text": "x", "file": "../../etc/passwd"}}, "prompt.file"),
        ({"prompt": {"text": "x", "file": "hello.mp3"}}, "prompt.file"),
        ({"options": {"12": {"group": "g"}}}, "options.12"),
        ({"options": {"1": "g"}}, "options.1"),
        ({"options": ["1"]}, "options"),
        ({"default": {"queue": "g"}}, "default"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"retries": 9}, "retries"),
    ],
)
def test_invalid_menus_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^{field}"):
        parse_menu({**GOOD, **change})


@pytest.mark.parametrize(
    ("body", "content_type", "digit"),
    [
        (b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay", "5"),
        (b"Signal= #\r\n", "Application/DTMF-Relay; charset=x", "#"),
        (b"signal=a\r\n", "application/dtmf-relay", "A"),
        (b"7", "application/dtmf", "7"),
        (b"Duration=160\r\n", "application/dtmf-relay", None),
        (b"Signal=5", "text/plain", None),
        (b"55", "application/dtmf", None),
    ],
)
def test_key_presses_in_sip_info(body: bytes, content_type: str, digit: str | None) -> None:
    assert dtmf_of_info(body, content_type) == digit


class FakeTts:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[tuple[str, str]] = []

    async def prompt(self, text: str, lang: str = "en") -> np.ndarray[Any, Any]:
        self.asked.append((text, lang))
        if self.fail:
            raise RuntimeError("espeak-ng crashed")
        return np.full(800, 7, dtype=np.int16)


async def test_a_recorded_prompt_is_played_resampled_instead_of_speech(tmp_path: Path) -> None:
    write_wav(tmp_path / "welcome.wav", np.full(16000, 1000, dtype=np.int16), rate=16000)
    plan = MenuPlan("spoken instead", "en", {}, None, prompt_file="welcome.wav")
    tts = FakeTts()
    audio = await load_prompt(plan, tts, tmp_path)  # type: ignore[arg-type]
    assert len(audio) == 8000  # one second at 8 kHz
    assert tts.asked == []


async def test_a_missing_prompt_file_falls_back_to_speech(tmp_path: Path) -> None:
    plan = MenuPlan("say this", "ru", {}, None, prompt_file="gone.wav")
    tts = FakeTts()
    audio = await load_prompt(plan, tts, tmp_path)  # type: ignore[arg-type]
    assert len(audio) == 800 and tts.asked == [("say this", "ru")]


async def test_no_prompt_at_all_is_silence_and_the_menu_still_listens() -> None:
    plan = MenuPlan("say this", "en", {}, None)
    assert len(await load_prompt(plan, FakeTts(fail=True), None)) == 0  # type: ignore[arg-type]
    assert len(await load_prompt(plan, None, None)) == 0
