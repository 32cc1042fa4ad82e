"""A burst of failed REGISTERs from one address gets it banned at the threshold, over real SIP,
while a legitimate phone from another address keeps registering."""

from __future__ import annotations

import asyncio

import httpx

from pomelo.sip.digest import answer_challenge
from pomelo.sip.endpoint import SipEndpoint
from pomelo.sip.message import SipRequest, SipResponse
from pomelo.sip.transport import Target
from pomelo.sip.uri import NameAddr
from tests.conftest import Server, TenantFixture
from tests.integration.pbx.test_registrar import account


class Phone:
    def __init__(self, host: str, domain: str, user: str) -> None:
        self.endpoint = SipEndpoint(lambda tx: tx.reply(200))
        self.host = host
        self.domain = domain
        self.user = user
        self.cseq = 0

    async def start(self, server_port: int) -> Phone:
        transport = await self.endpoint.listen("UDP", self.host, 0)
        self.port = transport.local_address[1]
        self.target = Target(transport, ("127.0.0.1", server_port))
        return self

    def request(self, authorization: str | None = None) -> SipRequest:
        self.cseq += 1
        aor = f"sip:{self.user}@{self.domain}"
        headers = [("Expires", "300")]
        if authorization:
            headers.append(("Authorization", authorization))
        return SipRequest(
            "REGISTER",
            f"sip:{self.domain}",
            from_=NameAddr(aor, params={"tag": f"t{self.cseq}"}),
            to=NameAddr(aor),
            call_id=f"ban-{self.host}-{self.user}",
            cseq=self.cseq,
            contacts=[NameAddr(f"{aor[: -len(self.domain)]}{self.host}:{self.port}")],
            headers=headers,
        )

    async def register(self, password: str, timeout: float = 2.0) -> SipResponse | None:
        """The final answer, or None when the server stays silent (banned)."""
        try:
            async with asyncio.timeout(timeout):
                challenge = await self.endpoint.request(self.request(), target=self.target)
                if challenge.status != 401:
                    return challenge
                header = challenge.header_values("WWW-Authenticate")[0]
                answer = answer_challenge(
                    header, "REGISTER", f"sip:{self.domain}", self.user, password
                )
                return await self.endpoint.request(self.request(answer), target=self.target)
        except TimeoutError:
            return None

    async def close(self) -> None:
        await self.endpoint.close()


async def test_failed_registers_ban_the_source_not_the_others(
    server: Server, tenant: TenantFixture
) -> None:
    await account(server, tenant, "501", "long-sip-password-501")
    domain = f"{tenant.slug}.sip"
    port = server.platform.sip_server.port
    attacker = await Phone("127.0.0.2", domain, "501").start(port)
    owner = await Phone("127.0.0.1", domain, "501").start(port)
    admin = tenant["administrator"].headers
    try:
        for attempt in range(5):
            answer = await attacker.register("guess-" + str(attempt))
            assert answer is not None
            assert answer.status == 401, answer.status
        # The fifth failure banned it: the very next request gets no answer at all.
        assert await attacker.register("guess-5", timeout=1.0) is None
        assert await attacker.register("long-sip-password-501", timeout=1.0) is None
        legit = await owner.register("long-sip-password-501")
        assert legit is not None
        assert legit.status == 200
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            bans = (await http.get("/api/v1/sip/bans", headers=admin)).json()["items"]
            assert [b["ip"] for b in bans if b["ip"] == "127.0.0.2"] == ["127.0.0.2"]
            attempts = (await http.get("/api/v1/sip/attempts", headers=admin)).json()["items"]
            assert sum(a["ip"] == "127.0.0.2" and a["username"] == "501" for a in attempts) >= 5
            metrics = (await http.get("/metrics")).text
            assert "pomelo_sip_bans_total" in metrics
            lifted = await http.delete("/api/v1/sip/bans/127.0.0.2", headers=admin)
            assert lifted.status_code == 204
        again = await attacker.register("long-sip-password-501")
        assert again is not None
        assert again.status == 200
    finally:
        await attacker.close()
        await owner.close()
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            await http.delete("/api/v1/sip/bans/127.0.0.2", headers=admin)
