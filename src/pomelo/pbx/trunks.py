"""Pomelo registering itself to providers: the client side of `register` trunks.

One task per enabled registering trunk keeps its registration fresh (re-REGISTER at 80 % of the
granted lifetime; back off on failure), answering the provider's digest challenge with the
trunk's sealed password. The set of tasks follows the configuration cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from pomelo.pbx.sipcache import SipConfigCache, TrunkInfo
from pomelo.sip.digest import DigestError, answer_challenge, select_challenge
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.transaction import new_tag
from pomelo.sip.uri import NameAddr, SipUri

log = logging.getLogger(__name__)

MIN_RETRY = 5.0
MAX_RETRY = 300.0
_EXPIRES = re.compile(r";\s*expires\s*=\s*(\d+)", re.IGNORECASE)


@dataclass(slots=True)
class TrunkRegistrationState:
    status: str = "pending"  # pending | registered | failed
    detail: str = ""
    expires_in: int = 0
    attempts: int = 0


class TrunkRegistrations:
    def __init__(
        self,
        cache: SipConfigCache,
        password_of: Callable[[TrunkInfo], str | None],
        *,
        contact_host: str,
    ) -> None:
        self._cache = cache
        self._password_of = password_of
        self._contact_host = contact_host
        self._endpoint: SipEndpoint | None = None
        self._contact_port = 0
        self._tasks: dict[str, tuple[TrunkInfo, asyncio.Task[None]]] = {}
        self.states: dict[str, TrunkRegistrationState] = {}

    def start(self, endpoint: SipEndpoint, contact_port: int) -> None:
        self._endpoint = endpoint
        self._contact_port = contact_port
        self.reconcile()

    async def stop(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reconcile(self) -> None:
        """Start, restart or stop tasks so they match the enabled registering trunks."""
        if self._endpoint is None:
            return
        wanted = {t.id: t for t in self._all_trunks() if t.kind == "register" and t.enabled}
        for trunk_id, (trunk, task) in list(self._tasks.items()):
            if wanted.get(trunk_id) != trunk:
                task.cancel()
                del self._tasks[trunk_id]
                self.states.pop(trunk_id, None)
        for trunk_id, trunk in wanted.items():
            if trunk_id not in self._tasks:
                self.states[trunk_id] = TrunkRegistrationState()
                task = asyncio.get_running_loop().create_task(self._keep_registered(trunk))
                self._tasks[trunk_id] = (trunk, task)

    def _all_trunks(self) -> list[TrunkInfo]:
        trunks: list[TrunkInfo] = []
        for tenant_id in self._cache.tenant_ids():
            trunks.extend(self._cache.trunks_of(tenant_id))
        return trunks

    async def _keep_registered(self, trunk: TrunkInfo) -> None:
        state = self.states[trunk.id]
        call_id = f"trunk-{trunk.id}-{new_tag()}"
        cseq = 0
        retry = MIN_RETRY
        while True:
            state.attempts += 1
            try:
                cseq, granted = await self._register(trunk, call_id, cseq)
            except Exception as exc:  # a provider's nonsense must not kill the loop
                log.warning("trunk %s registration failed: %s", trunk.name, exc)
                state.status, state.detail, granted = "failed", str(exc)[:200], 0
            if granted > 0:
                state.status, state.detail, state.expires_in = "registered", "", granted
                retry = MIN_RETRY
                await asyncio.sleep(max(granted * 0.8, 1.0))
            else:
                state.status = "failed"
                await asyncio.sleep(retry)
                retry = min(retry * 2, MAX_RETRY)

    async def _register(self, trunk: TrunkInfo, call_id: str, cseq: int) -> tuple[int, int]:
        assert self._endpoint is not None
        cseq += 1
        response = await self._endpoint.request(self._request(trunk, call_id, cseq, None))
        if response.status in (401, 407):
            password = self._password_of(trunk)
            if password is None or trunk.username is None:
                raise RuntimeError("the provider asks for credentials the trunk does not have")
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            try:
                challenge = select_challenge(response.header_values(header))
                answer = answer_challenge(
                    challenge, "REGISTER", self._uri(trunk), trunk.username, password
                )
            except DigestError as exc:
                raise RuntimeError(f"cannot answer the provider's challenge: {exc}") from exc
            auth = "Authorization" if response.status == 401 else "Proxy-Authorization"
            cseq += 1
            response = await self._endpoint.request(
                self._request(trunk, call_id, cseq, (auth, answer))
            )
        if response.status != 200:
            raise RuntimeError(f"provider answered {response.status} {response.reason or ''}")
        return cseq, _granted(response, trunk.register_expires)

    def _uri(self, trunk: TrunkInfo) -> str:
        return f"sip:{trunk.host}:{trunk.port};transport={trunk.transport}"

    def _request(
        self, trunk: TrunkInfo, call_id: str, cseq: int, auth: tuple[str, str] | None
    ) -> SipRequest:
        user = trunk.username or "pomelo"
        aor = SipUri(trunk.host, user=user)
        contact = SipUri(self._contact_host, user=user, port=self._contact_port)
        headers = [("Expires", str(trunk.register_expires)), ("User-Agent", "Pomelo")]
        if auth is not None:
            headers.append(auth)
        return SipRequest(
            "REGISTER",
            self._uri(trunk),
            from_=NameAddr(aor, params={"tag": new_tag()}),
            to=NameAddr(aor),
            call_id=call_id,
            cseq=cseq,
            contacts=[NameAddr(contact)],
            max_forwards=70,
            headers=headers,
        )


def _granted(response: SipResponse, asked: int) -> int:
    """The lifetime the provider granted: the Contact's expires, else Expires, else ours."""
    for value in response.header_values("Contact"):
        found = _EXPIRES.search(value)
        if found:
            return int(found.group(1))
    expires = response.header("Expires")
    if expires is not None and expires.strip().isdigit():
        return int(expires.strip())
    return asked
