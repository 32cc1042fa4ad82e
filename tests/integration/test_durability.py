"""Crash safety: `kill -9` of `pomelo serve` in the middle of a stream of writes loses no
acknowledged write and leaves a database the restarted server serves from."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

POMELO = Path(sys.executable).with_name("pomelo")
SECRET = "durability-secret-0123456789abcd"
PASSWORD = "correct horse battery"
WRITERS = 4
WRITE_SECONDS = 1.5
READY_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pomelo_env(database_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMELO_")}
    env.update(
        {
            "POMELO_DATABASE_URL": database_url,
            "POMELO_SECRET_KEY": SECRET,
            "POMELO_DATA_DIR": str(tmp / "var"),
            "POMELO_LOG_LEVEL": "warning",
            "POMELO_SIP_PORT": "0",  # never the shared default 5060
            "POMELO_PASSWORD_HASH_TIME_COST": "1",
            "POMELO_PASSWORD_HASH_MEMORY_KIB": "8",
        }
    )
    return env


async def run_cli(env: dict[str, str], cwd: Path, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(POMELO),
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, f"pomelo {' '.join(args)}: {out.decode()}"


class ServeProcess:
    """`pomelo serve` on a loopback port, its output kept in a file for failure messages."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int, log: Path) -> None:
        self.env, self.cwd, self.port, self.log = env, cwd, port, log
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(POMELO),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
            )
        deadline = time.monotonic() + READY_DEADLINE
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while True:
                if self.proc.returncode is not None:
                    pytest.fail(f"pomelo serve exited {self.proc.returncode}:\n{self.output()}")
                try:
                    if (await client.get("/api/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"pomelo serve not healthy in {READY_DEADLINE}s:\n{self.output()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
        if self.proc is not None:
            await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


async def write_groups(client: httpx.AsyncClient, writer: int, acked: list[str]) -> int:
    """Create groups until the server dies; record each id the server acknowledged with 201."""
    for n in itertools.count():
        try:
            response = await client.post("/api/v1/groups", json={"name": f"w{writer}-{n}"})
        except httpx.TransportError:
            return n
        assert response.status_code == 201, response.text
        acked.append(response.json()["id"])
    raise AssertionError("unreachable")


async def all_group_ids(client: httpx.AsyncClient) -> tuple[set[str], int]:
    ids: set[str] = set()
    total = 0
    while True:
        page = await client.get("/api/v1/groups", params={"limit": 500, "offset": len(ids)})
        assert page.status_code == 200, page.text
        body = page.json()
        total = body["total"]
        ids.update(g["id"] for g in body["items"])
        if not body["items"] or len(ids) >= total:
            return ids, total


@pytest.mark.slow
async def test_kill_9_during_writes_loses_no_acknowledged_write(
    fresh_database: Any, tmp_path: Path
) -> None:
    url = await fresh_database()
    env = pomelo_env(url, tmp_path)
    await run_cli(env, tmp_path, "tenant", "create", "crash", "--name", "Crash Test")
    await run_cli(
        env, tmp_path, "user", "create", "--tenant", "crash", "boss",
        "--role", "administrator", "--password", PASSWORD,
    )  # fmt: skip
    server = ServeProcess(env, tmp_path, free_port(), tmp_path / "serve.log")
    try:
        await server.start()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            login = await client.post(
                "/api/v1/auth/login",
                json={"tenant": "crash", "username": "boss", "password": PASSWORD},
            )
            assert login.status_code == 200, login.text
            created = await client.post("/api/v1/api-keys", json={"name": "durability"})
            assert created.status_code == 201, created.text
            headers = {"Authorization": f"Bearer {created.json()['secret']}"}

        acked: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=10) as c:
            writers = [asyncio.create_task(write_groups(c, w, acked)) for w in range(WRITERS)]
            try:
                await asyncio.sleep(WRITE_SECONDS)
                for writer in writers:
                    if writer.done():  # a writer must not stop while the server is up
                        raise AssertionError(f"writer stopped early: {writer.result()} writes")
                server.kill()
                async with asyncio.timeout(15):
                    await asyncio.gather(*writers)
            finally:
                for writer in writers:
                    writer.cancel()
        assert server.proc is not None
        assert await server.proc.wait() == -signal.SIGKILL
        assert len(acked) >= 20, f"only {len(acked)} writes before the kill: test proves little"

        await server.start()  # same database, same port
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=10) as c:
            ready = await c.get("/api/ready")
            assert ready.status_code == 200, ready.text
            ids, total = await all_group_ids(c)
            lost = set(acked) - ids
            assert not lost, f"{len(lost)} of {len(acked)} acknowledged groups lost"
            assert total >= len(acked) == len(set(acked))
            sample = await asyncio.gather(*(c.get(f"/api/v1/groups/{i}") for i in acked[-10:]))
            assert [r.status_code for r in sample] == [200] * len(sample)
            # The database still takes writes (no stale lock or half-applied transaction).
            after = await c.post("/api/v1/groups", json={"name": "after the crash"})
            assert after.status_code == 201, after.text
    finally:
        await server.stop()

    if url.startswith("sqlite"):
        database = make_url(url).database
        assert database
        with contextlib.closing(sqlite3.connect(database)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
