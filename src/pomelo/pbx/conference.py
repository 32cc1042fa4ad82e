"""Conference rooms: every call to a room's number is answered by the PBX and mixed with the
others in that room (N parties, each hearing everybody but himself).

A room exists while someone is in it. Its audio runs on one
:class:`~pomelo.media.bridge.MixBridge`; when recording is on, the room's full mix (what an
outside listener would hear: everyone) is written to both channels of one recording, which
is catalogued when the last participant leaves, with every employee who took part.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from pomelo.media.bridge import MixBridge
from pomelo.pbx.anchor import media_of
from pomelo.pbx.call_media import catalogue_recording
from pomelo.recordings.service import NewRecording

if TYPE_CHECKING:
    from pomelo.media.recorder import StereoRecorder
    from pomelo.pbx.calls import Call, CallService

__all__ = ["ConferenceRoom", "Conferences"]

log = logging.getLogger(__name__)


class ConferenceRoom:
    __slots__ = (
        "bridge",
        "call_ids",
        "id",
        "key",
        "recorder",
        "recording_started",
        "service",
        "tick",
        "user_ids",
    )

    def __init__(self, service: CallService, key: tuple[str, str]) -> None:
        engine = service.media
        assert engine is not None
        self.service = service
        self.key = key
        self.id = f"conf-{key[1]}-{int(time.time())}"
        self.bridge = MixBridge(engine.clock)
        self.bridge.on_mix = self._record
        self.call_ids: set[str] = set()
        self.user_ids: set[str] = set()
        self.recorder: StereoRecorder | None = None
        self.recording_started = service.clock.now()
        self.tick = 0

    def join(self, call: Call) -> None:
        media = media_of(call.a)
        if media is None:
            return
        self.call_ids.add(call.id)
        route = call.route
        if route.caller is not None and route.caller.user_id:
            self.user_ids.add(route.caller.user_id)
        self.bridge.add(call.id, media.session)

    def leave(self, call: Call) -> bool:
        """True when the room is now empty (and has been closed)."""
        self.bridge.remove(call.id)
        self.call_ids.discard(call.id)
        return not self.call_ids

    def _record(self, total: np.typing.NDArray[np.int16]) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        self.tick += 1
        now = time.monotonic()
        recorder.add(0, total, self.tick * 160, 1, now)
        recorder.add(1, total, self.tick * 160, 1, now)


class Conferences:
    """The rooms of this node, by (tenant, room name)."""

    __slots__ = ("rooms", "service")

    def __init__(self, service: CallService) -> None:
        self.service = service
        self.rooms: dict[tuple[str, str], ConferenceRoom] = {}

    async def join(self, call: Call, room_name: str) -> ConferenceRoom:
        key = (call.route.tenant_id, room_name)
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = ConferenceRoom(self.service, key)
            await self._start_recording(room)
        room.join(call)
        return room

    def leave(self, call: Call, room: ConferenceRoom) -> None:
        if room.leave(call) and self.rooms.get(room.key) is room:
            del self.rooms[room.key]
            self._finish_recording(room)

    async def _start_recording(self, room: ConferenceRoom) -> None:
        service, engine = self.service, self.service.media
        if service.recordings is None or engine is None:
            return
        try:
            path = await service.recordings.allocate_path(
                room.key[0], room.id, room.recording_started
            )
        except (OSError, ValueError) as exc:
            log.error("conference %s not recorded: %s", room.id, exc)
            return
        room.recorder = engine.start_recording(path)

    def _finish_recording(self, room: ConferenceRoom) -> None:
        service, engine, recorder = self.service, self.service.media, room.recorder
        room.recorder = None
        if recorder is None or engine is None or service.recordings is None:
            return
        catalogue_recording(
            service,
            engine.finish_recording(recorder),
            NewRecording(
                tenant_id=room.key[0],
                call_id=room.id,
                path=recorder.path,
                started_at=room.recording_started,
                ended_at=max(service.clock.now(), room.recording_started),
                duration_s=0.0,
                size_bytes=0,
                sample_rate=8000,
                channels=2,
                from_number="conference",
                to_number=room.key[1],
                user_ids=tuple(sorted(room.user_ids)),
            ),
        )
