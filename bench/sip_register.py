"""REGISTER/s with digest authentication against a real `pomelo serve` process.

The server runs in its own process (one core); this script is the load client on the other
core: every registration is REGISTER → 401 challenge → REGISTER with credentials → 200, so each
counted registration costs the server two transactions and one digest verification. Run for
SHA-256 and for MD5. Prints one JSON line. Loopback only; bounded in time; stops its server.

    .venv/bin/python bench/sip_register.py [--seconds 10] [--accounts 500] [--windows 25 50]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from pomelo.sip.digest import answer_challenge

ROOT = Path(__file__).resolve().parent.parent
POMELO = Path(sys.executable).with_name("pomelo")
SECRET = "bench-secret-0123456789abcdef"
_STATUS = re.compile(rb"^SIP/2.0 (\d{3})")
_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i):\s*(\S+)", re.IGNORECASE)
_AUTH = re.compile(rb"\r\nWWW-Authenticate:\s*([^\r\n]+)", re.IGNORECASE)


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(tmp: Path, algorithms: str) -> tuple[subprocess.Popen[bytes], int, int]:
    http_port, sip_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    env = {
        **os.environ,
        "POMELO_SECRET_KEY": SECRET,
        "POMELO_DATA_DIR": str(tmp),
        "POMELO_SIP_PORT": str(sip_port),
        "POMELO_SIP_TRANSPORTS": '["UDP"]',
        "POMELO_SIP_QUALIFY_SECONDS": "0",
        # All load comes from one address, like an SBC in front: exempt it from the per-source
        # rate limit (50/s by default), which would otherwise be what this measures.
        "POMELO_SIP_EXEMPT_NETWORKS": '["127.0.0.1/32"]',
        "POMELO_SIP_DIGEST_ALGORITHMS": algorithms,
        "POMELO_LOG_LEVEL": "warning",
        "POMELO_PASSWORD_HASH_TIME_COST": "1",
        "POMELO_PASSWORD_HASH_MEMORY_KIB": "8",
    }
    for args in (
        ["tenant", "create", "bench", "--name", "Bench"],
        [
            "user",
            "create",
            "--tenant",
            "bench",
            "--role",
            "administrator",
            "admin",
            "--password",
            "bench-admin-password",
        ],
    ):
        subprocess.run([str(POMELO), *args], env=env, cwd=tmp, check=True, capture_output=True)
    server = subprocess.Popen(
        ["taskset", "-c", "0", str(POMELO), "serve", "--port", str(http_port)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return server, http_port, sip_port


async def create_accounts(http_port: int, count: int) -> list[tuple[str, str]]:
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for _ in range(200):
            try:
                if (await http.get("/api/health")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        login = {"tenant": "bench", "username": "admin", "password": "bench-admin-password"}
        assert (await http.post("/api/v1/auth/login", json=login)).status_code == 200
        created = await http.post(
            "/api/v1/sip-accounts/bulk", json={"first_extension": "10000", "count": count}
        )
        created.raise_for_status()
        await asyncio.sleep(1.5)  # the SIP config cache reloads on the committed event
        return [(a["extension"], a["password"]) for a in created.json()]


class Client(asyncio.DatagramProtocol):
    def __init__(self, sip_port: int, accounts: list[tuple[str, str]], algorithm: str) -> None:
        self.server = ("127.0.0.1", sip_port)
        self.accounts = accounts
        self.algorithm = algorithm
        self.waiters: dict[bytes, asyncio.Future[bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.errors: collections.Counter[str] = collections.Counter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's own UDP class)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        m = _CALL_ID.search(data)
        if m and (waiter := self.waiters.pop(m.group(1), None)) and not waiter.done():
            waiter.set_result(data)

    async def send(self, call_id: str, text: str) -> bytes:
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiters[call_id.encode()] = waiter
        assert self.transport is not None
        self.transport.sendto(text.encode(), self.server)
        return await asyncio.wait_for(waiter, 4)

    def request(self, ext: str, call_id: str, cseq: int, auth: str | None) -> str:
        auth_line = f"Authorization: {auth}\r\n" if auth else ""
        return (
            f"REGISTER sip:bench.sip SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{call_id}{cseq};rport\r\n"
            f"From: <sip:{ext}@bench.sip>;tag=t{ext}\r\nTo: <sip:{ext}@bench.sip>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{ext}@127.0.0.1:{self.port}>\r\nExpires: 3600\r\n{auth_line}"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )

    async def register(self, index: int, cseq: int) -> tuple[bool, float]:
        ext, password = self.accounts[index]
        call_id = f"bench-{ext}"
        started = time.perf_counter()
        challenge = await self.send(call_id, self.request(ext, call_id, cseq, None))
        offered = [h.decode() for h in _AUTH.findall(challenge)]
        header = next((h for h in offered if self.algorithm in h), None)
        if header is None:
            self.errors[
                _STATUS.match(challenge).group(1).decode() if _STATUS.match(challenge) else "?"
            ] += 1
            return False, 0.0
        answer = answer_challenge(header, "REGISTER", "sip:bench.sip", ext, password)
        final = await self.send(call_id, self.request(ext, call_id, cseq + 1, answer))
        m = _STATUS.match(final)
        if not (m and m.group(1) == b"200"):
            self.errors["final " + (m.group(1).decode() if m else "?")] += 1
            return False, 0.0
        return True, time.perf_counter() - started


async def load(
    sip_port: int, accounts: list[tuple[str, str]], algorithm: str, seconds: float, window: int
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        lambda: Client(sip_port, accounts, algorithm), local_addr=("127.0.0.1", 0)
    )
    client.connection_made(transport)  # uvloop may call it only after we start sending
    ok = failed = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    cseq = [1] * len(accounts)

    async def worker(slot: int) -> None:
        nonlocal ok, failed
        index = slot
        while time.perf_counter() < deadline:
            try:
                success, latency = await client.register(index, cseq[index])
            except TimeoutError:
                success, latency = False, 0.0
            cseq[index] += 2
            if success:
                ok += 1
                latencies.append(latency)
            else:
                failed += 1
            index = (index + window) % len(accounts)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(min(window, len(accounts)))))
    elapsed = time.perf_counter() - started
    assert client.transport is not None
    client.transport.close()
    latencies.sort()
    return {
        "registrations_per_s": round(ok / elapsed, 1),
        "requests_per_s": round(2 * ok / elapsed, 1),
        "failed": failed,
        "failures_by_status": dict(client.errors),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
        if latencies
        else None,
    }


async def run_one(algorithm: str, args: argparse.Namespace) -> dict[str, object]:
    order = '["SHA-256", "MD5"]' if algorithm == "SHA-256" else '["MD5", "SHA-256"]'
    with tempfile.TemporaryDirectory() as tmp:
        server, http_port, sip_port = start_server(Path(tmp), order)
        try:
            accounts = await create_accounts(http_port, args.accounts)
            runs = {}
            for window in args.windows:
                runs[str(window)] = await load(sip_port, accounts, algorithm, args.seconds, window)
            clean = [
                float(str(r["registrations_per_s"])) for r in runs.values() if r["failed"] == 0
            ]
            return {
                "best_registrations_per_s_with_0_failures": max(clean, default=None),
                "by_window": runs,
            }
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument(
        "--windows",
        type=int,
        nargs="+",
        default=[25, 50, 100, 200],
        help="concurrent registrations in flight, one run each",
    )
    args = parser.parse_args()
    result: dict[str, object] = {
        "bench": "sip_register",
        "seconds": args.seconds,
        "accounts": args.accounts,
        "windows": args.windows,
        "server_cores": 1,
        "client": "this script, on the other core",
    }
    for algorithm in ("SHA-256", "MD5"):
        result[algorithm] = await run_one(algorithm, args)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
