"""WebSocket `/api/v1/phone`: the browser phone of the logged-in employee (WebRTC ↔ SIP).

Protocol (JSON text frames):
- client → `{"type": "register"}` first (optionally `"api_key": "pk_…"` when there is no
  session cookie, and `"extension"` to pick one of several SIP accounts); the server
  registers the employee's SIP account for this page and answers
  `{"type": "registered", "extension": "101", "domain": "acme.sip"}`.
- outgoing call: client → `{"type": "call", "to": "102"}` then `{"type": "offer", "sdp": …}`
  (or the `sdp` inside `call`); server → `calling`, `answer` (our SDP, with all ICE
  candidates: gather before offering, no trickle), `ringing`, `answered`, `ended`.
- incoming call: server → `{"type": "incoming", "call": id, "from": "101", "name": …}`;
  client → `{"type": "answer"}` and its `offer` (or `{"type": "decline"}`: the caller hears
  busy); server → `answer`, `answered` … `ended`.
- client → `{"type": "hangup"}`, `{"type": "dtmf", "digit": "1"}`, `{"type": "ping"}`;
  server → `{"type": "dtmf", "digit": …}` for key presses from the far end.
- `ended` carries `reason` (hangup, remote-hangup, busy, declined, cancelled, not-found,
  forbidden, unavailable, no-answer, incompatible, media-failed, bad-offer, page-closed,
  failed) and the SIP `status` when one decided it. A message the server cannot honour gets
  `{"type": "error", "error_id": …, "detail": …}` and the connection stays up.
Close codes: 4400 bad protocol, 4401 not authenticated, 4403 SIP registration refused,
4404 the employee has no SIP account, 4503 telephony not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from pomelo.api.deps import get_platform, resolve_actor
from pomelo.core.errors import DomainError
from pomelo.webrtc.gateway import (
    GatewayUnavailable,
    NoSipAccount,
    PhoneSession,
    RegistrationFailed,
)

if TYPE_CHECKING:
    from pomelo.app import Platform

router = APIRouter(prefix="/api/v1")

REGISTER_TIMEOUT = 10.0
_CLOSE_CODES: dict[type[DomainError], int] = {
    NoSipAccount: 4404,
    RegistrationFailed: 4403,
    GatewayUnavailable: 4503,
}


@router.websocket("/phone")
async def phone(ws: WebSocket) -> None:
    platform = get_platform(ws)
    await ws.accept()
    session = await _register(ws, platform)
    if session is None:
        return
    try:
        await ws.send_json(
            {
                "type": "registered",
                "extension": session.account.extension,
                "domain": session.domain,
            }
        )
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(_read(ws, session))
            tasks.create_task(_write(ws, session, reader))
    except* (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        await session.close()


async def _register(ws: WebSocket, platform: Platform) -> PhoneSession | None:
    try:
        async with asyncio.timeout(REGISTER_TIMEOUT):
            message = json.loads(await ws.receive_text())
    except (TimeoutError, ValueError, KeyError, WebSocketDisconnect):
        await _close(ws, 4400, "expected a register message")
        return None
    if not isinstance(message, dict) or message.get("type") != "register":
        await _close(ws, 4400, "expected a register message")
        return None
    if isinstance(message.get("api_key"), str):
        ws.scope.setdefault("headers", []).append(
            (b"authorization", f"Bearer {message['api_key']}".encode())
        )
    extension = message.get("extension")
    try:
        actor = await resolve_actor(ws, platform)
        if actor.user_id is None:
            raise NoSipAccount("only an employee can use the phone")
        return await platform.webrtc.open_session(
            actor.tenant_id, actor.user_id, extension if isinstance(extension, str) else None
        )
    except DomainError as exc:
        await ws.send_json({"type": "error", "error_id": exc.error_id, "detail": exc.detail})
        await _close(ws, _CLOSE_CODES.get(type(exc), 4401), exc.error_id)
        return None


async def _read(ws: WebSocket, session: PhoneSession) -> None:
    while True:
        frame = await ws.receive()
        if frame["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(frame.get("code", 1000))
        message = _parse(frame.get("text"))
        if message is None:
            session.error("malformed-json", "send JSON objects as text frames")
            continue
        await session.handle(message)


def _parse(text: object) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        message = json.loads(text)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


async def _write(ws: WebSocket, session: PhoneSession, reader: asyncio.Task[None]) -> None:
    while not reader.done():
        event = await session.events.get()
        await ws.send_json(event)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close(code=code, reason=reason)
