"""The registrar service: authenticates REGISTERs, keeps bindings, answers location lookups.

Bindings live in memory (lookups on every call, thousands of refreshes per second) and are
written behind to the `registrations` table in batches, so a restart keeps phones reachable
without a database round trip on the REGISTER path. Phones are qualified with OPTIONS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import delete, select

from pomelo.pbx.location import Contact
from pomelo.pbx.models import Registration
from pomelo.pbx.sipcache import AccountInfo, SipConfigCache, TenantInfo
from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenger,
    DigestOutcome,
)
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest
from pomelo.sip.registrar import Binding, RegistrarPolicy, process_register
from pomelo.sip.registrar import Source as BindingSource
from pomelo.sip.transaction import ServerTransaction, new_tag
from pomelo.sip.transport import Connection, Target
from pomelo.sip.uri import NameAddr, SipUri, parse_uri
from pomelo.storage.db import Database

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2


class AuthHooks(Protocol):
    """What the registrar tells the security layer (bans, allow-lists)."""

    def auth_failed(self, ip: str, tenant_id: str | None, username: str) -> None: ...

    def auth_succeeded(self, ip: str) -> None: ...

    def account_allows(self, account: AccountInfo, ip: str) -> bool: ...


class NoHooks:
    def auth_failed(self, ip: str, tenant_id: str | None, username: str) -> None:
        return None

    def auth_succeeded(self, ip: str) -> None:
        return None

    def account_allows(self, account: AccountInfo, ip: str) -> bool:
        return True


@dataclass(slots=True)
class _Live:
    """An account's bindings plus the live connections they registered over."""

    bindings: list[Binding]
    connections: dict[str, Connection]
    reachable: dict[str, bool]


class RegistrarService:
    def __init__(
        self,
        cache: SipConfigCache,
        db: Database,
        secret: bytes,
        *,
        hooks: AuthHooks | None = None,
        policy: RegistrarPolicy | None = None,
        clock: Callable[[], float] = time.time,
        qualify_seconds: float = 30.0,
        algorithms: tuple[str, ...] = ("MD5",),
    ) -> None:
        self._cache = cache
        self._db = db
        self._secret = secret
        self.hooks: AuthHooks = hooks or NoHooks()
        self.policy = policy or RegistrarPolicy()
        self._clock = clock
        self._qualify_seconds = qualify_seconds
        #: Challenges offered, in order (see `sip_digest_algorithms` in configuration.md).
        self._algorithms = tuple(DigestAlgorithm.from_token(a) for a in algorithms)
        self._challengers: dict[str, DigestChallenger] = {}
        self._live: dict[str, _Live] = {}
        self._tenant_of: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.endpoint: SipEndpoint | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, endpoint: SipEndpoint | None = None) -> None:
        self.endpoint = endpoint
        await self._load()
        self._tasks.append(asyncio.create_task(self._flush_forever()))
        if endpoint is not None and self._qualify_seconds > 0:
            self._tasks.append(asyncio.create_task(self._qualify_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.flush()

    # -- Location ---------------------------------------------------------------------------

    def contacts(self, account_id: str) -> list[Contact]:
        live = self._live.get(account_id)
        if live is None:
            return []
        now = self._clock()
        found = [
            Contact(
                uri=b.contact,
                transport=b.transport,
                source=(b.source_host, b.source_port),
                connection=_open(live.connections.get(b.contact)),
                expires_at=b.expires_at,
            )
            for b in live.bindings
            if b.expires_at > now and live.reachable.get(b.contact, True)
        ]
        return sorted(found, key=lambda c: c.expires_at, reverse=True)

    def bindings(self) -> list[tuple[str, Binding, bool]]:
        """Every live binding with its account id and reachability (for the API)."""
        now = self._clock()
        return [
            (account_id, b, live.reachable.get(b.contact, True))
            for account_id, live in self._live.items()
            for b in live.bindings
            if b.expires_at > now
        ]

    # -- REGISTER ---------------------------------------------------------------------------

    def handle_register(self, tx: ServerTransaction) -> None:
        request = tx.request
        ip = tx.source.remote[0]
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or not to_uri.user:
            tx.reply(400, "Bad To Header")
            return
        tenant = self._cache.tenant_for_domain(to_uri.host)
        if tenant is None:
            tx.reply(404, "Domain Not Served")
            return
        challenger = self._challenger(tenant)
        header = request.header("Authorization")
        if header is None:
            self._challenge(tx, challenger, stale=False)
            return
        account = self._cache.account(tenant.id, to_uri.user)
        if account is not None and not self.hooks.account_allows(account, ip):
            # Checked before the password, so a refused network cannot even guess it.
            tx.reply(403, "Forbidden")
            return
        outcome = challenger.verify_header("REGISTER", header, _ha1_lookup(account))
        if outcome is DigestOutcome.STALE:
            self._challenge(tx, challenger, stale=True)
            return
        if outcome is not DigestOutcome.OK or account is None:
            self.hooks.auth_failed(ip, tenant.id, to_uri.user)
            self._challenge(tx, challenger, stale=False)
            return
        if not account.enabled:
            tx.reply(403, "Forbidden")
            return
        self.hooks.auth_succeeded(ip)
        self._register(tx, tenant, account)

    def _register(self, tx: ServerTransaction, tenant: TenantInfo, account: AccountInfo) -> None:
        request = tx.request
        live = self._live.setdefault(account.id, _Live([], {}, {}))
        self._tenant_of[account.id] = tenant.id
        source = BindingSource(tx.source.transport.name, *tx.source.remote)
        policy = self.policy
        if account.max_contacts != policy.max_contacts:
            policy = RegistrarPolicy(
                policy.min_expires, policy.max_expires, policy.default_expires, account.max_contacts
            )
        outcome = process_register(
            request, live.bindings, now=self._clock(), policy=policy, source=source
        )
        if outcome.status != 200:
            tx.reply(outcome.status, outcome.reason, headers=outcome.headers)
            return
        if outcome.changed:
            self._apply(account.id, live, outcome.bindings, request, tx.source.connection)
        headers = [*outcome.headers, ("Date", _http_date(self._clock()))]
        tx.reply(200, headers=headers)

    def _apply(
        self,
        account_id: str,
        live: _Live,
        bindings: list[Binding],
        request: SipRequest,
        connection: Connection | None,
    ) -> None:
        live.bindings = bindings
        kept = {b.contact for b in bindings}
        live.connections = {c: conn for c, conn in live.connections.items() if c in kept}
        live.reachable = {c: r for c, r in live.reachable.items() if c in kept}
        if connection is not None:
            for contact in request.contacts:
                uri = str(contact.uri)
                if uri in kept:
                    live.connections[uri] = connection
                    live.reachable[uri] = True
        self._dirty.add(account_id)

    def _challenger(self, tenant: TenantInfo) -> DigestChallenger:
        challenger = self._challengers.get(tenant.sip_domain)
        if challenger is None:
            challenger = DigestChallenger(
                tenant.sip_domain, self._secret, algorithms=self._algorithms
            )
            self._challengers[tenant.sip_domain] = challenger
        return challenger

    def _challenge(
        self, tx: ServerTransaction, challenger: DigestChallenger, *, stale: bool
    ) -> None:
        headers = [("WWW-Authenticate", value) for value in challenger.challenge(stale=stale)]
        tx.reply(401, "Unauthorized", headers=headers)

    # -- persistence ------------------------------------------------------------------------

    async def _load(self) -> None:
        now = datetime.now(UTC)
        async with self._db.session() as session:
            rows = list(
                await session.scalars(select(Registration).where(Registration.expires_at > now))
            )
        for row in rows:
            live = self._live.setdefault(row.account_id, _Live([], {}, {}))
            self._tenant_of[row.account_id] = row.tenant_id
            live.bindings.append(
                Binding(
                    contact=row.contact,
                    expires_at=row.expires_at.timestamp(),
                    call_id=row.call_id,
                    cseq=row.cseq,
                    transport=row.transport,
                    source_host=row.source_host,
                    source_port=row.source_port,
                    user_agent=row.user_agent,
                    q=row.q,
                )
            )
            live.reachable[row.contact] = row.reachable

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:
                log.exception("could not persist registrations; will retry")

    async def flush(self) -> None:
        """Write the changed accounts' bindings (the whole set per account: idempotent)."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        try:
            async with self._db.session() as session, session.begin():
                await session.execute(
                    delete(Registration).where(Registration.account_id.in_(dirty))
                )
                for account_id in dirty:
                    live = self._live.get(account_id)
                    if live is None or account_id not in self._tenant_of:
                        continue
                    for b in live.bindings:
                        session.add(
                            _row(
                                self._tenant_of[account_id],
                                account_id,
                                b,
                                live.reachable.get(b.contact, True),
                            )
                        )
        except Exception:
            self._dirty |= dirty
            raise

    # -- qualify ----------------------------------------------------------------------------

    async def _qualify_forever(self) -> None:
        while True:
            await asyncio.sleep(self._qualify_seconds)
            try:
                await self.qualify_all()
            except Exception:
                log.exception("qualify round failed")

    async def qualify_all(self) -> None:
        """OPTIONS every live contact (bounded concurrency); mark who answers."""
        limit = asyncio.Semaphore(50)
        jobs = [(account_id, b) for account_id, b, _ in self.bindings()]

        async def one(account_id: str, binding: Binding) -> None:
            async with limit:
                reachable = await self.qualify(account_id, binding)
            live = self._live.get(account_id)
            if live is not None and live.reachable.get(binding.contact, True) != reachable:
                live.reachable[binding.contact] = reachable
                self._dirty.add(account_id)

        await asyncio.gather(*(one(a, b) for a, b in jobs))

    async def qualify(self, account_id: str, binding: Binding) -> bool:
        if self.endpoint is None:
            return True
        account = self._cache.account_by_id(account_id)
        tenant = self._cache.tenant(account.tenant_id) if account else None
        if account is None or tenant is None:
            return False
        request = _options(binding.contact, account, tenant)
        target = await self._target(binding, self._live[account_id])
        response = await self.endpoint.request(request, target=target)
        # Any answer, even an error, proves the phone is there; only silence (a synthetic 408)
        # or a transport failure (503) does not.
        return response.status not in (408, 503)

    async def _target(self, binding: Binding, live: _Live) -> Target:
        assert self.endpoint is not None
        connection = _open(live.connections.get(binding.contact))
        transport = self.endpoint.transports.get(binding.transport)
        if transport is None:
            transport = self.endpoint.transports.get("UDP")
        assert transport is not None
        return Target(transport, (binding.source_host, binding.source_port), connection)


def _row(tenant_id: str, account_id: str, b: Binding, reachable: bool) -> Registration:
    return Registration(
        tenant_id=tenant_id,
        account_id=account_id,
        contact=b.contact[:512],
        expires_at=datetime.fromtimestamp(b.expires_at, UTC),
        call_id=b.call_id[:255],
        cseq=b.cseq,
        transport=b.transport,
        source_host=b.source_host,
        source_port=b.source_port,
        user_agent=b.user_agent,
        q=b.q,
        reachable=reachable,
        updated_at=datetime.now(UTC),
    )


def _ha1_lookup(account: AccountInfo | None) -> Callable[[str, str, DigestAlgorithm], str | None]:
    def lookup(username: str, realm: str, family: DigestAlgorithm) -> str | None:
        if account is None or username != account.extension or realm != account.realm:
            return None
        return account.ha1_sha256 if family is DigestAlgorithm.SHA256 else account.ha1_md5

    return lookup


def _open(connection: Connection | None) -> Connection | None:
    return connection if connection is not None and not connection.closed else None


def _options(contact: str, account: AccountInfo, tenant: TenantInfo) -> SipRequest:
    local = NameAddr(SipUri(tenant.sip_domain, user="pomelo"), params={"tag": new_tag()})
    return SipRequest(
        "OPTIONS",
        parse_uri(contact),
        from_=local,
        to=NameAddr(SipUri(tenant.sip_domain, user=account.extension)),
        call_id=f"qualify-{new_tag()}",
        cseq=1,
        max_forwards=70,
    )


def _http_date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
