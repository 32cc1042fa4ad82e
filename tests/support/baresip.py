"""Drive a real baresip (Debian `baresip-core`) as a phone in tests, over its ctrl_tcp module.

ctrl_tcp speaks JSON in netstrings (`<len>:<json>,`): commands `{"command", "params",
"token"}` get a response with the same token; events (`"event": true`) report registration and
call progress (CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED, …). baresip 1.0 registers before
the control connection exists, so registration is read with the `reginfo` command instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from tests.conftest import require_tool

CONFIG = """poll_method\t\tepoll
sip_listen\t\t127.0.0.1:{sip_port}
audio_player\t\taubridge,{device}
audio_source\t\tausine,{tone}
audio_alert\t\taufile,/dev/null
ausrc_srate\t\t48000
auplay_srate\t\t48000
ausrc_channels\t\t2
auplay_channels\t\t2
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taufile.so
module\t\t\taubridge.so
module\t\t\tsndfile.so
snd_path\t\t{record_dir}
module\t\t\taccount.so
module\t\t\tctrl_tcp.so
module_app\t\tmenu.so
ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}
"""


#: reginfo paints the state: green "OK " or red "ERR".
_REG_STATE = re.compile(r"\x1b\[3[12]m(OK|ERR)")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Baresip:
    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        domain: str,
        password: str,
        proxy: tuple[str, int],
        auto_answer: bool = False,
        tone: int = 440,
    ) -> None:
        self.dir = workdir
        self.user = user
        self.domain = domain
        self.password = password
        self.proxy = proxy
        self.auto_answer = auto_answer
        self.tone = tone
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._responses: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tokens = itertools.count(1)
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self) -> Baresip:
        binary = require_tool("baresip", "baresip-core")
        self.dir.mkdir(parents=True, exist_ok=True)
        ctrl_port = _free_port(socket.SOCK_STREAM)
        (self.dir / "config").write_text(
            CONFIG.format(
                sip_port=_free_port(socket.SOCK_DGRAM),
                ctrl_port=ctrl_port,
                device=f"null{ctrl_port}",  # a private bridge: what the phone hears goes nowhere
                record_dir=self.dir,  # sndfile writes both directions of each call here
                tone=self.tone,
            )
        )
        answer = ";answermode=auto" if self.auto_answer else ""
        host, port = self.proxy
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{self.domain};transport=udp>;auth_pass={self.password};"
            f'regint=300;outbound="sip:{host}:{port};transport=udp"{answer}\n'
        )
        # Line-buffered, with a SIP trace, so baresip.log explains a failing test.
        prefix = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        self._log = (self.dir / "baresip.log").open("wb")
        self._process = await asyncio.create_subprocess_exec(
            *prefix,
            binary,
            "-s",
            "-f",
            str(self.dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(100):
            try:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", ctrl_port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            await self.stop()
            raise RuntimeError("baresip's control port never opened")
        self._reader_task = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int((await reader.readuntil(b":"))[:-1])
                message = json.loads((await reader.readexactly(length + 1))[:-1])
                if message.get("event"):
                    await self.events.put(message)
                elif (token := message.get("token")) in self._responses:
                    self._responses.pop(token).set_result(message)

    async def command(self, command: str, params: str = "") -> dict[str, Any]:
        assert self._writer is not None
        token = str(next(self._tokens))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = future
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(str(len(payload)).encode() + b":" + payload + b",")
        await self._writer.drain()
        return await asyncio.wait_for(future, 10)

    async def registration(self, timeout: float = 15) -> str:
        """ "OK" once registered, "ERR" once refused (polls `reginfo`)."""
        async with asyncio.timeout(timeout):
            while True:
                info = str((await self.command("reginfo")).get("data", ""))
                found = _REG_STATE.search(info)
                if found:
                    return found.group(1)
                await asyncio.sleep(0.1)

    async def wait_for(self, *types: str, timeout: float = 15) -> dict[str, Any]:
        """The next event of one of `types` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event.get("type") in types:
                    return event

    async def stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.command("quit"), 2)
            self._writer.close()
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()
