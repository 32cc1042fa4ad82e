"""WebSocket `/api/v1/stream`: register, receive a snapshot with its sequence, then events.

Protocol (JSON text frames):
- client → `{"type": "register"}` (optionally `"api_key": "pk_…"` when no session cookie);
- server → `{"type": "snapshot", "seq": S, "data": {...}}`;
- server → `{"type": "event", "seq": N, "kind": "...", "data": {...}}` for each visible event
  with N > S, in order; a new `snapshot` whenever the viewer's own rights changed or he fell
  behind; client → `{"type": "ping"}` gets `{"type": "pong"}`.
Close codes: 4400 bad protocol, 4401 not authenticated, 4403 account disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from pomelo.api.deps import get_platform, resolve_actor
from pomelo.auth.access import Actor
from pomelo.core.errors import DomainError
from pomelo.stream.hub import Subscription, ends_session, needs_resync, visible_to

if TYPE_CHECKING:
    from pomelo.app import Platform

router = APIRouter(prefix="/api/v1")

REGISTER_TIMEOUT = 10.0


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    platform = get_platform(ws)
    await ws.accept()
    actor = await _register(ws, platform)
    if actor is None:
        return
    hub = platform.hub
    sub = hub.subscribe(actor)
    platform.metrics.stream_connections.inc()
    try:
        async with asyncio.TaskGroup() as tasks:
            pump = tasks.create_task(_pump(ws, platform, actor, sub))
            tasks.create_task(_listen(ws, pump))
    except* (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        sub.close()
        platform.metrics.stream_connections.dec()


async def _register(ws: WebSocket, platform: Platform) -> Actor | None:
    try:
        async with asyncio.timeout(REGISTER_TIMEOUT):
            message = json.loads(await ws.receive_text())
    except (TimeoutError, ValueError, WebSocketDisconnect):
        await _close(ws, 4400, "expected a register message")
        return None
    if not isinstance(message, dict) or message.get("type") != "register":
        await _close(ws, 4400, "expected a register message")
        return None
    if isinstance(message.get("api_key"), str):
        ws.scope.setdefault("headers", []).append(
            (b"authorization", f"Bearer {message['api_key']}".encode())
        )
    try:
        return await resolve_actor(ws, platform)
    except DomainError as exc:
        await ws.send_json({"type": "error", "error_id": exc.error_id, "detail": exc.detail})
        await _close(ws, 4401, exc.error_id)
        return None


async def _pump(ws: WebSocket, platform: Platform, actor: Actor, sub: Subscription) -> None:
    seq = await _send_snapshot(ws, platform, actor)
    while True:
        published = await sub.queue.get()
        if sub.overflowed:
            sub.drain()
            seq = await _send_snapshot(ws, platform, actor)
            continue
        event = published.event
        if published.seq <= seq or not visible_to(actor, event):
            continue
        if ends_session(actor, event):
            await _close(ws, 4403, "account-disabled")
            return
        if needs_resync(actor, event):
            actor = await platform.credentials.actor_for_user(actor.user_id or "")
            seq = await _send_snapshot(ws, platform, actor)
            continue
        await ws.send_json(published.to_wire())


async def _send_snapshot(ws: WebSocket, platform: Platform, actor: Actor) -> int:
    seq, data = await platform.hub.snapshot(actor)
    await ws.send_json({"type": "snapshot", "seq": seq, "data": data})
    return seq


async def _listen(ws: WebSocket, pump: asyncio.Task[None]) -> None:
    while not pump.done():
        try:
            message = json.loads(await ws.receive_text())
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "ping":
            await ws.send_json({"type": "pong"})


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close(code=code, reason=reason)
