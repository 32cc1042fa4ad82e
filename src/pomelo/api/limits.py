"""Request guards applied while reading: the body size limit (a lying Content-Length cannot
bypass it) and the refusal of NUL characters, which PostgreSQL cannot store in text and which no
legitimate client sends."""

from __future__ import annotations

import json
import re

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: A JSON `\u0000` escape: an odd run of backslashes means the last one really escapes the `u`.
_JSON_NUL = re.compile(rb"(\\+)u0000")
NUL_DETAIL = "text must not contain NUL characters"


class BodyTooLarge(StarletteHTTPException):
    """An HTTPException, so the app's own handler answers 413 when the body is read mid-route."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request bodies are limited to {max_bytes} bytes")


class NulCharacter(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(422, NUL_DETAIL)


def has_nul(data: bytes) -> bool:
    if b"\x00" in data:
        return True
    return any(len(m.group(1)) % 2 == 1 for m in _JSON_NUL.finditer(data))


class RequestGuard:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            await _problem(send, 422, "invalid-request", "Invalid request", NUL_DETAIL)
            return
        seen = 0
        tail = b""
        started = False

        async def guarded_receive() -> Message:
            nonlocal seen, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
                if has_nul(tail + chunk):
                    raise NulCharacter
                tail = chunk[-16:]  # an escape split across chunks is still seen
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await _problem(
            send,
            413,
            "request-too-large",
            "Request too large",
            f"request bodies are limited to {self.max_bytes} bytes",
        )


async def _problem(send: Send, status: int, error_id: str, title: str, detail: str) -> None:
    body = json.dumps(
        {
            "type": f"/problems/{error_id}",
            "title": title,
            "status": status,
            "detail": detail,
            "error_id": error_id,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
