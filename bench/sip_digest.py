"""Digest verifications per second, SHA-256 and MD5, as one JSON line.

Measures what a registrar pays per authenticated request: header parsing, nonce MAC check,
response hashing and the replay table update (``verify_header``), plus the same with
pre-parsed credentials (``verify``). Each algorithm is timed for about half a second per
mode, so the whole bench stays under 10 s.
"""

from __future__ import annotations

import json
import platform
import sys
import time

from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenger,
    DigestCredentials,
    DigestOutcome,
    digest_response,
    ha1,
)

REALM = "bench.pomelo.example"
URI = "sip:bench.pomelo.example"
BATCH = 2_000
SECONDS = 0.5


def _headers(challenger: DigestChallenger, algorithm: DigestAlgorithm, count: int) -> list[str]:
    # One nonce per 1000 requests with increasing nc, as a busy trunk would send them. Built
    # with digest_response directly: the client helper would dominate the bench's wall time.
    key = ha1("alice", REALM, "secret", algorithm)
    headers: list[str] = []
    while len(headers) < count:
        nonce = challenger.new_nonce()
        for nc in range(1, 1001):
            nc_text = f"{nc:08x}"
            response = digest_response(
                algorithm, key, nonce, "INVITE", URI, "auth", nc_text, "c0ffee"
            )
            headers.append(
                f'Digest username="alice", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
                f'response="{response}", algorithm={algorithm.value}, cnonce="c0ffee", '
                f"qop=auth, nc={nc_text}"
            )
    return headers[:count]


def _rate(algorithm: DigestAlgorithm, preparsed: bool) -> float:
    challenger = DigestChallenger(REALM, b"b" * 32, algorithms=[algorithm], nonce_ttl=3600)
    stored = ha1("alice", REALM, "secret", algorithm)

    def lookup(username: str, realm: str, family: DigestAlgorithm) -> str | None:
        return stored if username == "alice" else None

    done, elapsed = 0, 0.0
    while elapsed < SECONDS:
        headers = _headers(challenger, algorithm, BATCH)
        if preparsed:
            creds = [DigestCredentials.parse(h) for h in headers]
            start = time.perf_counter()
            outcomes = [challenger.verify("INVITE", c, stored) for c in creds]
        else:
            start = time.perf_counter()
            outcomes = [challenger.verify_header("INVITE", h, lookup) for h in headers]
        elapsed += time.perf_counter() - start
        assert all(o is DigestOutcome.OK for o in outcomes), "bench verified something wrong"
        done += len(headers)
    return done / elapsed


def main() -> None:
    started = time.perf_counter()
    result: dict[str, object] = {"bench": "sip_digest"}
    for name, algorithm in (("sha256", DigestAlgorithm.SHA256), ("md5", DigestAlgorithm.MD5)):
        result[f"{name}_verify_header_per_s"] = round(_rate(algorithm, preparsed=False))
        result[f"{name}_verify_per_s"] = round(_rate(algorithm, preparsed=True))
    result["python"] = platform.python_version()
    result["wall_s"] = round(time.perf_counter() - started, 2)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
