"""Composition root: builds the object graph once, wires it into the HTTP app.

Nothing else in Pomelo constructs services; everything receives what it needs from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pomelo import __version__
from pomelo.api import audit as audit_api
from pomelo.api import calls as calls_api
from pomelo.api import directory as directory_api
from pomelo.api import keys as keys_api
from pomelo.api import pbx as pbx_api
from pomelo.api import phone as phone_api
from pomelo.api import problems
from pomelo.api import recordings as recordings_api
from pomelo.api import sip_security as sip_security_api
from pomelo.api import stream as stream_api
from pomelo.api import system as system_api
from pomelo.api.limits import RequestGuard
from pomelo.auth.credentials import CredentialService
from pomelo.auth.passwords import PasswordHasher
from pomelo.auth.service import DirectoryService
from pomelo.config import Settings
from pomelo.core.bus import EventBus, MemoryEventBus
from pomelo.core.clock import Clock, SystemClock
from pomelo.core.errors import ConfigError
from pomelo.core.secrets import SecretBox
from pomelo.media.engine import MediaEngine
from pomelo.media.tts import TextToSpeech
from pomelo.media.wav import MediaFileError, read_prompt
from pomelo.observability import Metrics
from pomelo.pbx.calls import CallService, CallSettings
from pomelo.pbx.cdr import CallRecorder
from pomelo.pbx.ivr import hold_music
from pomelo.pbx.media_metrics import MediaCollector
from pomelo.pbx.registrar import RegistrarService
from pomelo.pbx.routing import DbCallDirectory, Router
from pomelo.pbx.security import SipSecurity, SipSecurityConfig
from pomelo.pbx.server import SipServer
from pomelo.pbx.service import PbxConfigService
from pomelo.pbx.session_timer import SessionTimerPolicy
from pomelo.pbx.sipcache import SipConfigCache
from pomelo.pbx.trunks import TrunkRegistrations
from pomelo.recordings.retention import run_retention
from pomelo.recordings.service import RecordingCatalog
from pomelo.sip.digest import DigestAlgorithm
from pomelo.sip.registrar import RegistrarPolicy
from pomelo.storage.db import Database
from pomelo.storage.uow import EventDispatcher, UnitOfWork
from pomelo.stream.hub import StreamHub
from pomelo.stream.log import EventLogReader
from pomelo.stream.sections import default_sections
from pomelo.webrtc.gateway import WebRtcGateway

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    clock: Clock
    db: Database
    bus: EventBus
    dispatcher: EventDispatcher
    metrics: Metrics
    directory: DirectoryService
    credentials: CredentialService
    pbx: PbxConfigService
    sip_cache: SipConfigCache
    sip_server: SipServer
    registrar: RegistrarService
    sip_security: SipSecurity
    trunk_registrations: TrunkRegistrations
    calls: CallService
    call_recorder: CallRecorder
    media: MediaEngine
    hub: StreamHub
    event_log: EventLogReader
    recordings: RecordingCatalog
    webrtc: WebRtcGateway
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db, self.dispatcher, self.clock)

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await self.db.migrate()
        await self.dispatcher.start()
        self.bus.subscribe(self.metrics.on_event)
        self.hub.start()
        self._tasks.append(asyncio.create_task(self._poll_foreign_events()))
        self._tasks.append(asyncio.create_task(run_retention(self.recordings, self.clock)))
        if self.settings.sip_enabled:
            await self.sip_cache.start()
            await self.sip_server.start()
            await self.registrar.start(self.sip_server.endpoint)
            self.trunk_registrations.start(self.sip_server.endpoint, self.sip_server.port)
            await self.webrtc.start(self.sip_server.host, self.sip_server.port)
            if self.webrtc.address is not None:
                self.sip_server.trusted_sources.add(self.webrtc.address)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.settings.sip_enabled:
            await self.webrtc.stop()
            await self.calls.stop()
            await self.media.stop()
            await self.call_recorder.stop()
            await self.trunk_registrations.stop()
            await self.registrar.stop()
            await self.sip_server.stop()
            self.sip_cache.stop()
        await self.sip_security.close()
        self.hub.stop()
        await self.bus.close()
        await self.db.dispose()

    async def _poll_foreign_events(self) -> None:
        """Pick up events committed by other processes (the CLI, other nodes) from the log."""
        while True:
            await asyncio.sleep(self.settings.event_poll_seconds)
            try:
                await self.dispatcher.catch_up()
            except Exception:
                log.exception("event log catch-up failed")


def build_platform(settings: Settings, clock: Clock | None = None) -> Platform:
    clock = clock or SystemClock()
    db = Database(settings.effective_database_url)
    bus = MemoryEventBus()
    dispatcher = EventDispatcher(db, bus)
    hasher = PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_kib=settings.password_hash_memory_kib,
    )

    def uow() -> UnitOfWork:
        return UnitOfWork(db, dispatcher, clock)

    metrics = Metrics()
    sip_cache = SipConfigCache(db, bus)
    sip_security = build_sip_security(settings, metrics, sip_cache, uow)
    sip_server = SipServer(
        settings.sip_host,
        settings.sip_port,
        gate=sip_security,
        transports=tuple(settings.sip_transports),
        tls=sip_tls(settings),
        ws_port=settings.sip_ws_port,
    )
    registrar = RegistrarService(
        sip_cache,
        db,
        derive_key(settings, "sip-nonce"),
        policy=RegistrarPolicy(
            min_expires=settings.sip_min_expires,
            max_expires=settings.sip_max_expires,
            default_expires=settings.sip_max_expires,
        ),
        qualify_seconds=settings.sip_qualify_seconds,
        algorithms=settings.sip_digest_algorithms,
        hooks=sip_security,
    )
    sip_server.route("REGISTER", registrar.handle_register)
    box = SecretBox(settings.secret_key.get_secret_value())
    trunk_registrations = TrunkRegistrations(
        sip_cache,
        lambda trunk: box.open(trunk.password_sealed) if trunk.password_sealed else None,
        contact_host=settings.sip_host,
    )
    sip_cache.on_reload(trunk_registrations.reconcile)
    call_directory = DbCallDirectory(db)
    call_recorder = CallRecorder(uow, call_directory)
    recordings = RecordingCatalog(
        uow, settings.effective_recordings_dir, retention_days=settings.recording_retention_days
    )
    media = MediaEngine(
        settings.effective_media_host,
        settings.rtp_port_min,
        settings.rtp_port_max,
        rtp_timeout=settings.rtp_timeout_seconds,
    )
    metrics.registry.register(MediaCollector(media))
    calls = CallService(
        sip_server.endpoint,
        Router(
            sip_cache,
            call_directory,
            secret=derive_key(settings, "sip-invite-nonce"),
            algorithms=tuple(DigestAlgorithm.from_token(a) for a in settings.sip_digest_algorithms),
        ),
        registrar,
        call_recorder,
        clock=clock,
        settings=call_settings(settings),
        trunk_password=lambda t: box.open(t.password_sealed) if t.password_sealed else None,
        media=media if settings.media_anchor else None,
        tts=TextToSpeech(settings.data_dir / "tts"),
        recordings=recordings if settings.recordings_enabled else None,
        music_on_hold=load_music_on_hold(settings.music_on_hold_file),
        prompts_dir=settings.data_dir / "prompts",
    )
    calls.install(sip_server)

    return Platform(
        settings=settings,
        clock=clock,
        db=db,
        bus=bus,
        dispatcher=dispatcher,
        metrics=metrics,
        directory=DirectoryService(uow, hasher, demo_mode=settings.is_demo),
        credentials=CredentialService(uow, hasher, timedelta(hours=settings.session_ttl_hours)),
        pbx=PbxConfigService(uow, box, demo_mode=settings.is_demo),
        sip_cache=sip_cache,
        sip_server=sip_server,
        registrar=registrar,
        sip_security=sip_security,
        trunk_registrations=trunk_registrations,
        calls=calls,
        call_recorder=call_recorder,
        media=media,
        hub=StreamHub(db, bus, default_sections(), settings.stream_queue_size),
        event_log=EventLogReader(db),
        recordings=recordings,
        webrtc=WebRtcGateway(sip_cache, call_directory.accounts_of_user, media.open_session),
    )


def sip_tls(settings: Settings) -> tuple[int, ssl.SSLContext] | None:
    if settings.sip_tls_cert is None or settings.sip_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.sip_tls_cert, settings.sip_tls_key)
    return settings.sip_tls_port, context


def load_music_on_hold(path: Path | None) -> npt.NDArray[np.int16]:
    """The configured hold music, or the built-in tune; a bad file stops the start-up."""
    if path is None:
        return hold_music()
    try:
        return read_prompt(path)
    except MediaFileError as exc:
        raise ConfigError(f"music_on_hold_file: {exc}") from None


def call_settings(settings: Settings) -> CallSettings:
    return CallSettings(
        ring_timeout=settings.call_ring_timeout_seconds,
        outbound_ring_timeout=settings.call_outbound_ring_timeout_seconds,
        max_duration=settings.call_max_duration_seconds,
        session_timers=SessionTimerPolicy(
            enabled=settings.call_session_timers,
            interval=settings.call_session_interval_seconds,
            min_se=settings.call_session_min_se_seconds,
        ),
        max_calls=settings.call_max_concurrent,
    )


def build_sip_security(
    settings: Settings, metrics: Metrics, cache: SipConfigCache, uow: Callable[[], UnitOfWork]
) -> SipSecurity:
    config = SipSecurityConfig(
        rate=settings.sip_rate_per_second,
        burst=settings.sip_rate_burst,
        max_failures=settings.sip_ban_failures,
        window=settings.sip_ban_window_seconds,
        ban_time=settings.sip_ban_seconds,
        escalation=settings.sip_ban_escalation,
        max_ban_time=settings.sip_ban_max_seconds,
    )

    def tenant_of_domain(domain: str) -> str | None:
        tenant = cache.tenant_for_domain(domain)
        return None if tenant is None else tenant.id

    security = SipSecurity(metrics.registry, uow, config=config, tenant_of_domain=tenant_of_domain)
    configured = list(settings.sip_exempt_networks)
    # Carriers' trunks and the configured networks are never rate-limited or banned.
    cache.on_reload(lambda: security.set_exempt([*configured, *cache.peer_networks()]))
    security.set_exempt(configured)
    return security


def derive_key(settings: Settings, purpose: str) -> bytes:
    """A per-purpose key from secret_key, so no two subsystems share key material."""
    secret = settings.secret_key.get_secret_value().encode()
    return hashlib.sha256(b"pomelo:" + purpose.encode() + b":" + secret).digest()


def create_app(platform: Platform) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    app = FastAPI(
        title="Pomelo",
        version=__version__,
        summary="Contact center and virtual PBX API",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    problems.install(app)
    # Routers carry their own "/api/v1" prefix so each route knows its full path (metrics labels).
    for router in (
        directory_api.router,
        keys_api.router,
        pbx_api.router,
        calls_api.router,
        phone_api.router,
        recordings_api.router,
        sip_security_api.router,
        audit_api.router,
        stream_api.router,
        system_api.router,
    ):
        app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=platform.metrics)
    app.add_middleware(RequestGuard, max_bytes=platform.settings.max_request_bytes)
    return app


class RequestMetrics:
    """Counts and times requests per route template (not per raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_latency.labels(method, route).observe(time.perf_counter() - started)
