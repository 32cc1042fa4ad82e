"""Routing decisions: who is calling (trunk or authenticated extension) and where to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import pytest

from pomelo.pbx.routing import (
    ExtensionOrigin,
    Refusal,
    Route,
    Router,
    TrunkOrigin,
    dial_string,
    normalize_dialled,
)
from pomelo.pbx.sipcache import AccountInfo, NumberInfo, TenantInfo, TrunkInfo
from pomelo.sip.digest import DigestAlgorithm, answer_challenge, ha1
from pomelo.sip.message import SipRequest
from pomelo.sip.uri import NameAddr, parse_name_addr

DOMAIN = "acme.sip"
T = TenantInfo("t1", "acme", DOMAIN)
OTHER = TenantInfo("t2", "other", "other.sip")


def account(
    ext: str, user: str | None = None, *, tenant: TenantInfo = T, **kw: object
) -> AccountInfo:
    password = f"pw-{ext}"
    values: dict[str, object] = {
        "id": f"acc-{tenant.id}-{ext}",
        "tenant_id": tenant.id,
        "extension": ext,
        "user_id": user,
        "realm": tenant.sip_domain,
        "ha1_md5": ha1(ext, tenant.sip_domain, password, DigestAlgorithm.MD5),
        "ha1_sha256": ha1(ext, tenant.sip_domain, password, DigestAlgorithm.SHA256),
        "enabled": True,
        "allowed_networks": (),
        "allowed_countries": frozenset(),
        "max_contacts": 5,
        "caller_id_name": None,
    }
    values.update(kw)
    return AccountInfo(**values)  # type: ignore[arg-type]


def trunk(name: str = "carrier", tenant: TenantInfo = T, **kw: object) -> TrunkInfo:
    values: dict[str, object] = {
        "id": f"trunk-{tenant.id}-{name}",
        "tenant_id": tenant.id,
        "name": name,
        "kind": "peer",
        "host": "203.0.113.5",
        "port": 5060,
        "transport": "udp",
        "inbound_networks": (ipaddress.ip_network("203.0.113.0/24"),),
        "username": None,
        "password_sealed": None,
        "register_expires": 300,
        "caller_id": None,
        "strip_digits": 0,
        "prefix": "",
        "enabled": True,
    }
    values.update(kw)
    return TrunkInfo(**values)  # type: ignore[arg-type]


class FakeCache:
    def __init__(self) -> None:
        self.tenants = {T.id: T, OTHER.id: OTHER}
        self.accounts = {
            a.id: a
            for a in (
                account("101", "u1"),
                account("102", "u2"),
                account("103", "u2"),
                account("104", enabled=False),
                account("105", "u3", allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)),
                account("101", "x1", tenant=OTHER),
            )
        }
        self.trunks = {t.id: t for t in (trunk(), trunk("z-backup"))}
        self.numbers = {
            n.number: n
            for n in (
                NumberInfo("n1", T.id, "+74950000001", "trunk-t1-carrier", "extension", "102"),
                NumberInfo("n2", T.id, "+74950000002", None, "group", "g1"),
                NumberInfo("n3", T.id, "+74950000003", None, "employee", "u2"),
                NumberInfo("n4", T.id, "+74950000004", None, "hangup", None),
                NumberInfo("n5", T.id, "+74950000005", None, "scenario", "s1"),
                NumberInfo("n6", T.id, "+74950000006", None, "group", "empty"),
                NumberInfo("n7", OTHER.id, "+74950000007", None, "extension", "101"),
            )
        }

    def tenant_for_domain(self, domain: str) -> TenantInfo | None:
        return next((t for t in self.tenants.values() if t.sip_domain == domain.lower()), None)

    def tenant(self, tenant_id: str) -> TenantInfo | None:
        return self.tenants.get(tenant_id)

    def account(self, tenant_id: str, extension: str) -> AccountInfo | None:
        return self.accounts.get(f"acc-{tenant_id}-{extension}")

    def account_by_id(self, account_id: str) -> AccountInfo | None:
        return self.accounts.get(account_id)

    def number(self, e164: str) -> NumberInfo | None:
        return self.numbers.get(e164)

    def trunks_of(self, tenant_id: str) -> list[TrunkInfo]:
        return [t for t in self.trunks.values() if t.tenant_id == tenant_id and t.enabled]

    def numbers_of(self, tenant_id: str) -> list[NumberInfo]:
        return [n for n in self.numbers.values() if n.tenant_id == tenant_id]

    def trunk(self, trunk_id: str) -> TrunkInfo | None:
        return self.trunks.get(trunk_id)

    def trunks_for_source(self, ip: str) -> list[TrunkInfo]:
        address = ipaddress.ip_address(ip)
        return [
            t for t in self.trunks.values() if any(address in net for net in t.inbound_networks)
        ]


SCENARIOS: dict[str, dict[str, Any]] = {
    "s1": {
        "type": "menu",
        "prompt": {"text": "Press one", "lang": "en"},
        "options": {"1": {"group": "g1"}},
        "default": {"group": "g1"},
    },
    "bad": {"type": "menu", "options": {"1": {"group": "g1"}}},
}


class FakeDirectory:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def accounts_of_user(self, tenant_id: str, user_id: str) -> list[str]:
        self.calls.append(("user", user_id))
        return [a.id for a in FakeCache().accounts.values() if a.user_id == user_id]

    async def scenario(self, tenant_id: str, scenario_id: str) -> dict[str, Any] | None:
        return SCENARIOS.get(scenario_id)

    async def accounts_of_group(self, tenant_id: str, group_id: str) -> list[str]:
        self.calls.append(("group", group_id))
        members = {"g1": ["u1", "u2"], "empty": []}[group_id]
        cache = FakeCache()
        return [a.id for a in cache.accounts.values() if a.user_id in members]

    async def groups_of_users(
        self, tenant_id: str, user_ids: Iterable[str]
    ) -> dict[str, frozenset[str]]:
        return {u: frozenset() for u in user_ids}


@pytest.fixture
def router() -> Router:
    return Router(
        FakeCache(),
        FakeDirectory(),
        secret=b"s" * 32,
        algorithms=(DigestAlgorithm.MD5, DigestAlgorithm.SHA256),
    )


def invite(ruri: str, from_: str = f"sip:101@{DOMAIN}", **headers: str) -> SipRequest:
    return SipRequest(
        "INVITE",
        ruri,
        from_=_from(from_),
        to=NameAddr(ruri),
        call_id="call-1",
        contacts=[NameAddr("sip:101@192.0.2.1:5060")],
        headers=[(name.replace("_", "-"), value) for name, value in headers.items()],
    )


def _from(text: str) -> NameAddr:
    value = parse_name_addr(text if "<" in text else f"<{text}>")
    value.tag = "f"
    return value


def authorized(router: Router, request: SipRequest, user: str, password: str) -> SipRequest:
    challenge = router.identify(request, "192.0.2.1")
    assert isinstance(challenge, Refusal) and challenge.status == 407
    header = dict(challenge.headers)["Proxy-Authenticate"]
    answer = answer_challenge(header, "INVITE", str(request.uri), user, password)
    request.add_header("Proxy-Authorization", answer)
    return request


# -- identification ----------------------------------------------------------------------


def test_extension_is_challenged_then_identified(router: Router) -> None:
    request = authorized(router, invite(f"sip:102@{DOMAIN}"), "101", "pw-101")
    origin = router.identify(request, "192.0.2.1")
    assert isinstance(origin, ExtensionOrigin)
    assert origin.account.extension == "101" and origin.tenant is T


def test_sha256_answer_is_accepted(router: Router) -> None:
    request = invite(f"sip:102@{DOMAIN}")
    challenge = router.identify(request, "192.0.2.1")
    assert isinstance(challenge, Refusal)
    sha = next(v for n, v in challenge.headers if "SHA-256" in v)
    answer = answer_challenge(sha, "INVITE", str(request.uri), "101", "pw-101")
    request.add_header("Proxy-Authorization", answer)
    assert isinstance(router.identify(request, "192.0.2.1"), ExtensionOrigin)


def test_unknown_and_known_users_get_the_same_kind_of_refusal(router: Router) -> None:
    wrong = router.identify(authorized(router, invite("sip:102@acme.sip"), "101", "bad"), "1.2.3.4")
    unknown = router.identify(authorized(router, invite("sip:102@acme.sip"), "999", "x"), "1.2.3.4")
    assert isinstance(wrong, Refusal) and isinstance(unknown, Refusal)
    assert (wrong.status, wrong.headers) == (unknown.status, unknown.headers) == (403, ())
    first = router.identify(invite("sip:102@acme.sip"), "1.2.3.4")
    second = router.identify(invite("sip:999@acme.sip", from_="sip:999@acme.sip"), "1.2.3.4")
    assert isinstance(first, Refusal) and isinstance(second, Refusal)
    assert first.status == second.status == 407
    assert [n for n, _ in first.headers] == [n for n, _ in second.headers]


def test_replayed_credentials_are_challenged_again(router: Router) -> None:
    request = authorized(router, invite(f"sip:102@{DOMAIN}"), "101", "pw-101")
    assert isinstance(router.identify(request, "192.0.2.1"), ExtensionOrigin)
    replay = router.identify(request, "192.0.2.1")
    assert isinstance(replay, Refusal) and replay.status == 407


def test_disabled_account_and_network_restrictions(router: Router) -> None:
    def from_(ext: str) -> SipRequest:
        request = invite("sip:102@acme.sip", from_=f"sip:{ext}@acme.sip")
        return authorized(router, request, ext, f"pw-{ext}")

    disabled = router.identify(from_("104"), "192.0.2.1")
    assert isinstance(disabled, Refusal) and disabled.status == 403
    refused = router.identify(from_("105"), "192.0.2.1")
    assert isinstance(refused, Refusal) and refused.status == 403
    assert isinstance(router.identify(from_("105"), "10.1.2.3"), ExtensionOrigin)


def test_unknown_domain_is_404(router: Router) -> None:
    refused = router.identify(invite("sip:102@nowhere.example", "sip:1@nowhere.example"), "1.2.3.4")
    assert isinstance(refused, Refusal) and refused.status == 404


def test_trusted_trunk_to_a_did(router: Router) -> None:
    for ruri in ("sip:+74950000001@10.0.0.1", "sip:74950000001@10.0.0.1"):
        origin = router.identify(invite(ruri, "sip:+79161234567@203.0.113.5"), "203.0.113.5")
        assert isinstance(origin, TrunkOrigin)
        assert origin.number.number == "+74950000001"
        assert origin.trunk.name == "carrier"  # the number's own trunk


def test_trunk_call_to_unknown_number_is_404_not_a_crash(router: Router) -> None:
    for ruri in ("sip:+74959999999@10.0.0.1", "sip:garbage%00@10.0.0.1", "sip:10.0.0.1"):
        refused = router.identify(invite(ruri, "sip:x@203.0.113.5"), "203.0.113.5")
        assert isinstance(refused, Refusal) and refused.status == 404


def test_trunk_cannot_deliver_another_tenants_number(router: Router) -> None:
    refused = router.identify(invite("sip:+74950000007@10.0.0.1", "sip:x@h"), "203.0.113.5")
    assert isinstance(refused, Refusal) and refused.status == 404


def test_untrusted_source_to_a_did_must_authenticate(router: Router) -> None:
    refused = router.identify(invite("sip:+74950000001@acme.sip"), "198.51.100.1")
    assert isinstance(refused, Refusal) and refused.status == 407


# -- routing ------------------------------------------------------------------------------


async def route_from_101(router: Router, dialled: str) -> Route | Refusal:
    caller = FakeCache().account(T.id, "101")
    return await router.route_dialled(T, caller, dialled)


async def test_extension_to_extension(router: Router) -> None:
    route = await route_from_101(router, "102")
    assert isinstance(route, Route)
    assert route.direction == "internal"
    assert [a.extension for a in route.accounts] == ["102"]
    assert route.callee_user_id == "u2" and route.from_number == "101"


async def test_unknown_and_disabled_extensions(router: Router) -> None:
    unknown = await route_from_101(router, "199")
    assert isinstance(unknown, Refusal) and unknown.status == 404
    disabled = await route_from_101(router, "104")
    assert isinstance(disabled, Refusal) and disabled.status == 480


async def test_other_tenants_extension_is_not_reachable(router: Router) -> None:
    route = await router.route_dialled(OTHER, None, "102")
    assert isinstance(route, Refusal) and route.status == 404


async def test_outside_number_goes_through_the_first_trunk_with_rewriting(router: Router) -> None:
    router._cache.trunks = {  # type: ignore[attr-defined]
        t.id: t
        for t in (
            trunk("b", strip_digits=1, prefix="00", caller_id="+74951112233"),
            trunk("c"),
        )
    }
    route = await route_from_101(router, "+79161234567")
    assert isinstance(route, Route) and route.outbound is not None
    assert route.direction == "outbound" and route.outbound.trunk.name == "b"
    assert route.outbound.dial == "0079161234567"
    assert route.outbound.caller_id == "+74951112233"
    assert route.trunk is route.outbound.trunk


async def test_an_employee_with_his_own_line_calls_out_through_its_trunk(router: Router) -> None:
    """+74950000001 (on trunk "carrier") rings extension 102: 102's outside calls leave
    through that trunk showing that number, even though "a-first" sorts first."""
    router._cache.trunks = {  # type: ignore[attr-defined]
        t.id: t for t in (trunk("a-first", caller_id="+74959999999"), trunk("carrier"))
    }
    route = await router.route_dialled(T, router._cache.account(T.id, "102"), "+79161234567")  # type: ignore[attr-defined]
    assert isinstance(route, Route) and route.outbound is not None
    assert route.outbound.trunk.name == "carrier"
    assert route.outbound.caller_id == "+74950000001"
    other = await route_from_101(router, "+79161234567")  # no line of his own: the first trunk
    assert isinstance(other, Route) and other.outbound is not None
    assert other.outbound.trunk.name == "a-first"
    assert other.outbound.caller_id == "+74959999999"


async def test_outside_number_without_trunk_is_503(router: Router) -> None:
    router._cache.trunks = {}  # type: ignore[attr-defined]
    refused = await route_from_101(router, "89161234567")
    assert isinstance(refused, Refusal) and refused.status == 503


async def test_caller_id_falls_back_to_the_extension(router: Router) -> None:
    route = await route_from_101(router, "89161234567")
    assert isinstance(route, Route) and route.outbound is not None
    assert route.outbound.caller_id == "101"


async def test_own_did_dialled_internally_follows_its_route(router: Router) -> None:
    route = await route_from_101(router, "+74950000001")
    assert isinstance(route, Route)
    assert route.did == "+74950000001" and [a.extension for a in route.accounts] == ["102"]


async def inbound(router: Router, did: str) -> Route | Refusal:
    request = invite(f"sip:{did}@10.0.0.1", '"Ivan" <sip:+79161234567@203.0.113.5>')
    origin = router.identify(request, "203.0.113.5")
    assert isinstance(origin, TrunkOrigin)
    return await router.route(origin, request)


async def test_did_to_extension(router: Router) -> None:
    route = await inbound(router, "+74950000001")
    assert isinstance(route, Route)
    assert route.direction == "inbound" and route.did == "+74950000001"
    assert route.from_number == "+79161234567" and route.trunk is not None
    assert [a.extension for a in route.accounts] == ["102"]


async def test_did_to_group_rings_every_members_extension(router: Router) -> None:
    route = await inbound(router, "+74950000002")
    assert isinstance(route, Route)
    assert sorted(a.extension for a in route.accounts) == ["101", "102", "103"]
    assert route.group_id == "g1"


async def test_did_to_employee_rings_his_extensions(router: Router) -> None:
    route = await inbound(router, "+74950000003")
    assert isinstance(route, Route)
    assert sorted(a.extension for a in route.accounts) == ["102", "103"]
    assert route.callee_user_id == "u2"


@pytest.mark.parametrize(
    ("did", "status"),
    [("+74950000004", 480), ("+74950000006", 480)],
)
async def test_did_refusals(router: Router, did: str, status: int) -> None:
    refused = await inbound(router, did)
    assert isinstance(refused, Refusal) and refused.status == status


async def test_did_to_scenario_runs_its_menu_then_rings_the_chosen_group(router: Router) -> None:
    route = await inbound(router, "+74950000005")
    assert isinstance(route, Route)
    assert route.menu is not None and route.menu.options == {"1": "g1"}
    assert not route.accounts
    chosen = await router.to_group(route, "g1")
    assert isinstance(chosen, Route)
    assert chosen.group_id == "g1" and chosen.menu is None
    assert sorted(a.extension for a in chosen.accounts) == ["101", "102", "103"]


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("+74950000001", "+74950000001"),
        ("74950000001", "+74950000001"),
        ("0074950000001", "+74950000001"),
        ("+7 (495) 000-00-01", "+74950000001"),
        ("+7%20495%200000001", "+74950000001"),
        ("101", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_dialled(text: str | None, e164: str | None) -> None:
    assert normalize_dialled(text) == e164


def test_dial_string() -> None:
    assert dial_string(trunk(strip_digits=2, prefix="9"), "+79161234567") == "99161234567"
