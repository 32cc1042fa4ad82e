"""A real browser phone call: Chromium (Playwright) → WebRTC gateway → B2BUA → baresip.

The test page logs in with the operator's API key over the phone WebSocket, takes the fake
microphone (Chromium's beep), calls extension 102 — a baresip that answers by itself, plays a
440 Hz tone and records what it hears — and measures what comes back with a WebAudio
AnalyserNode. Audio must have crossed both ways: the page hears baresip's 440 Hz, and
baresip's recording holds the browser's beeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.conftest import Server, TenantFixture, require_tool
from tests.integration.pbx.test_registrar import account
from tests.integration.webrtc.harness import dominant_frequency
from tests.support.baresip import Baresip

pytestmark = pytest.mark.slow

PAGE = Path(__file__).with_name("phone_page.html")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    executable = require_tool("chromium", "chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def baresip_102(
    server: Server, tenant: TenantFixture, tmp_path: Path
) -> AsyncIterator[Baresip]:
    password = "long-sip-password-102"
    await account(server, tenant, "102", password)
    phone = Baresip(
        tmp_path / "baresip",
        user="102",
        domain=f"{tenant.slug}.sip",
        password=password,
        proxy=("127.0.0.1", server.platform.sip_server.port),
        auto_answer=True,
        tone=440,
    )
    await phone.start()
    try:
        assert await phone.registration() == "OK"
        yield phone
    finally:
        await phone.stop()


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The test page, served from loopback: Chromium lets a page reach a loopback WebSocket
    only when the page itself came from the local network (Local Network Access)."""
    body = (await asyncio.to_thread(PAGE.read_bytes)).replace(b"\n", b"\r\n")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
    response = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        writer.close()

    http = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = http.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/phone.html"
    finally:
        http.close()
        await http.wait_closed()


def read_recording(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """A WAV file as mono int16 and its rate."""
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        data = wav.readframes(wav.getnframes())
    assert width == 2, f"{path.name}: {width * 8}-bit samples"
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels).mean(axis=1)
    return samples.astype(np.int16), rate


def loud_stretch(samples: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    """Every 10 ms block that carries sound, joined (the beep is intermittent)."""
    block = rate // 100
    blocks = samples[: len(samples) // block * block].reshape(-1, block).astype(np.float64)
    levels = np.sqrt((blocks**2).mean(axis=1))
    loud: npt.NDArray[np.int16] = blocks[levels > 300].reshape(-1).astype(np.int16)
    return loud


async def test_browser_calls_baresip_and_audio_crosses_both_ways(
    server: Server, tenant: TenantFixture, chromium: Any, baresip_102: Baresip, page_url: str
) -> None:
    page = await chromium.new_page()
    await page.goto(page_url)
    ws_url = server.base_url.replace("http://", "ws://") + "/api/v1/phone"

    started = await page.evaluate(
        "([url, key, to]) => startCall(url, key, to)", [ws_url, tenant["operator"].api_key, "102"]
    )
    assert started["registered"]["extension"] == "101"
    established = await baresip_102.wait_for("CALL_ESTABLISHED")
    assert established["peeruri"] == f"sip:101@{tenant.slug}.sip"

    heard = await page.evaluate("measure(3000)")
    hung_up = await page.evaluate("hangup()")
    await baresip_102.wait_for("CALL_CLOSED")

    # The page heard baresip's tone.
    assert heard["rms"] > 0.01, heard
    assert heard["peakHz"] == pytest.approx(440, abs=15), heard
    assert hung_up["ended"]["reason"] == "hangup"
    assert hung_up["seen"][:4] == ["registered", "calling", "answer", "ringing"]

    # baresip heard the browser: its recording of the decoded stream holds the fake
    # microphone's beeps (Chromium's fake capture device beeps at 400 Hz), not silence and
    # not an echo of its own 440 Hz.
    recordings = sorted(baresip_102.dir.glob("dump-*-dec.wav"))
    assert recordings, sorted(p.name for p in baresip_102.dir.iterdir())
    samples, rate = await asyncio.to_thread(read_recording, recordings[-1])
    beeps = loud_stretch(samples, rate)
    assert len(beeps) > rate // 10, "less than 100 ms of sound reached baresip"
    assert dominant_frequency(beeps, rate) == pytest.approx(400, abs=15)
