"""Behaviour of SIP digest authentication: vectors, round trips, and hostile input."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pomelo.sip.digest import (
    DigestAlgorithm,
    DigestChallenge,
    DigestChallenger,
    DigestCredentials,
    DigestError,
    DigestOutcome,
    NonceTracker,
    answer_challenge,
    digest_response,
    format_auth_header,
    ha1,
    parse_auth_header,
    select_challenge,
)

REALM = "pomelo.example.com"
SECRET = b"0123456789abcdef0123456789abcdef"
USERS = {"alice": "correct horse", "bob": "battery staple"}
URI = "sip:pomelo.example.com"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lookup(username: str, realm: str, algorithm: DigestAlgorithm) -> str | None:
    password = USERS.get(username)
    return None if password is None else ha1(username, realm, password, algorithm)


def make_challenger(clock: FakeClock | None = None, **kwargs: object) -> DigestChallenger:
    return DigestChallenger(REALM, SECRET, clock=clock or FakeClock(), **kwargs)  # type: ignore[arg-type]


def answer(challenger: DigestChallenger, index: int = 0, **kwargs: object) -> str:
    options: dict[str, object] = {"username": "alice", "password": USERS["alice"]}
    options.update(kwargs)
    return answer_challenge(challenger.challenge()[index], "REGISTER", URI, **options)  # type: ignore[arg-type]


# -- known-answer vectors ---------------------------------------------------------------------


def test_rfc2617_md5_vector() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = answer_challenge(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    params = parse_auth_header(header).params
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["nc"] == "00000001"
    assert params["qop"] == "auth"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


def test_rfc2617_vector_via_low_level_functions() -> None:
    key = ha1("Mufasa", "testrealm@host.com", "Circle Of Life", DigestAlgorithm.MD5)
    response = digest_response(
        DigestAlgorithm.MD5,
        key,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        "auth",
        "00000001",
        "0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


RFC7616_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    header = answer_challenge(
        RFC7616_CHALLENGE.format(alg=algorithm),
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        nc=1,
    )
    credentials = DigestCredentials.parse(header)
    assert credentials.response == expected
    assert credentials.algorithm.value == algorithm


def test_legacy_rfc2069_response_without_qop() -> None:
    # RFC 2069 form: H(HA1:nonce:H(method:uri)); cross-checked by hand with hashlib.
    key = ha1("Mufasa", "testrealm@host.com", "Circle Of Life", DigestAlgorithm.MD5)
    ha2 = hashlib.md5(b"GET:/dir/index.html", usedforsecurity=False).hexdigest()
    expected = hashlib.md5(f"{key}:abc:{ha2}".encode(), usedforsecurity=False).hexdigest()
    assert digest_response(DigestAlgorithm.MD5, key, "abc", "GET", "/dir/index.html") == expected


def test_ha1_per_family_and_session_variants_share_it() -> None:
    md5 = ha1("u", "r", "p", DigestAlgorithm.MD5)
    sha = ha1("u", "r", "p", DigestAlgorithm.SHA256)
    assert len(md5) == 32
    assert len(sha) == 64
    assert ha1("u", "r", "p", DigestAlgorithm.MD5_SESS) == md5
    assert ha1("u", "r", "p", DigestAlgorithm.SHA256_SESS) == sha


# -- header grammar ---------------------------------------------------------------------------


def test_parse_quoted_escapes_tokens_and_case() -> None:
    header = parse_auth_header(
        'Digest REALM="a\\"b\\\\c", nonce="n", ,, algorithm=sha-256 ,qop="auth"'
    )
    assert header.scheme == "Digest"
    assert header.is_digest
    assert dict(header.params) == {
        "realm": 'a"b\\c',
        "nonce": "n",
        "algorithm": "sha-256",
        "qop": "auth",
    }


def test_parse_unfolds_continuation_lines() -> None:
    header = parse_auth_header('Digest realm="r",\r\n nonce="n"')
    assert dict(header.params) == {"realm": "r", "nonce": "n"}


def test_parse_accepts_utf8_and_empty_values() -> None:
    header = parse_auth_header('Digest username="José", opaque=""')
    assert header.params["username"] == "José"
    assert header.params["opaque"] == ""


def test_parse_scheme_without_params() -> None:
    header = parse_auth_header("Digest")
    assert header.is_digest
    assert dict(header.params) == {}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        '"Digest"',
        'Digest realm="unterminated',
        'Digest realm="a" realm="b"',
        'Digest realm="a", realm="b"',
        'Digest realm="a", REALM="b"',
        "Digest realm",
        "Digest realm=",
        'Digest =x, realm="a"',
        'Digest realm="a"; nonce="b"',
        'Digest realm="a", Basic foo="bar"',
        'Digest realm="a\r\nInjected: yes"',
        'Digest realm="a"\r\nX: y',
        'Digest realm="a\x00"',
        'Digest,realm="a"',
        "Basic dXNlcjpwYXNz",
        'Digest realm="a\\\x01"',
        'Digest realm="\ud800"',
        "Digest realm=" + "x" * 9000,
    ],
)
def test_parse_rejects_garbage(value: str) -> None:
    with pytest.raises(DigestError):
        parse_auth_header(value)


def test_parse_rejects_parameter_floods() -> None:
    value = "Digest " + ", ".join(f"p{i}=x" for i in range(100))
    with pytest.raises(DigestError):
        parse_auth_header(value)


def test_error_messages_do_not_echo_header_content() -> None:
    with pytest.raises(DigestError) as caught:
        parse_auth_header('Digest response="s3cret" garbage')
    assert "s3cret" not in str(caught.value)


def test_format_quotes_and_escapes_round_trip() -> None:
    value = format_auth_header(
        "Digest",
        {"username": 'we"ird\\name', "algorithm": "MD5", "cnonce": None},
        tokens={"algorithm"},
    )
    assert value == 'Digest username="we\\"ird\\\\name", algorithm=MD5'
    assert parse_auth_header(value).params["username"] == 'we"ird\\name'


@pytest.mark.parametrize(
    ("params", "tokens"),
    [
        ({"username": "a\r\nVia: evil"}, ()),
        ({"username": "a\nb"}, ()),
        ({"bad name": "x"}, ()),
        ({"algorithm": "MD5 extra"}, ("algorithm",)),
        ({"algorithm": ""}, ("algorithm",)),
    ],
)
def test_format_refuses_header_injection(params: dict[str, str], tokens: tuple[str, ...]) -> None:
    with pytest.raises(DigestError):
        format_auth_header("Digest", params, tokens=tokens)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_random_text_only_raises_digest_error(value: str) -> None:
    for parse in (parse_auth_header, DigestCredentials.parse, DigestChallenge.parse):
        with contextlib.suppress(DigestError):
            parse(value)
    with contextlib.suppress(DigestError):
        answer_challenge(value, "REGISTER", URI, "alice", "pw")


_header_alphabet = st.sampled_from(list('Digest realm=nonce"\\,\t =abcAZ09-/+:\r\n\x00é'))


@settings(max_examples=300)
@given(st.text(alphabet=_header_alphabet, max_size=120))
def test_header_like_text_never_escapes_verification(value: str) -> None:
    challenger = make_challenger()
    assert isinstance(challenger.verify_header("REGISTER", value, lookup), DigestOutcome)
    for prefix in ("Digest ", 'Digest username="alice", '):
        with contextlib.suppress(DigestError):
            parse_auth_header(prefix + value)


_param_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_param_values = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Cc"]) | st.just("\t"), max_size=40
)


@given(st.dictionaries(_param_names, _param_values, max_size=8))
def test_format_then_parse_round_trips(params: dict[str, str]) -> None:
    header = parse_auth_header(format_auth_header("Digest", params))
    assert dict(header.params) == params


# -- server: round trips ----------------------------------------------------------------------


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    challenges = [DigestChallenge.parse(h) for h in make_challenger().challenge()]
    assert [c.algorithm for c in challenges] == [DigestAlgorithm.SHA256, DigestAlgorithm.MD5]
    assert all(c.realm == REALM and c.qop == ("auth",) and not c.stale for c in challenges)
    assert challenges[0].nonce == challenges[1].nonce


def test_nonces_are_unique() -> None:
    challenger = make_challenger()
    assert len({challenger.new_nonce() for _ in range(1000)}) == 1000


@pytest.mark.parametrize("algorithm", list(DigestAlgorithm))
def test_round_trip_every_algorithm(algorithm: DigestAlgorithm) -> None:
    challenger = make_challenger(algorithms=[algorithm])
    header = answer(challenger)
    assert DigestCredentials.parse(header).algorithm is algorithm
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.OK


@pytest.mark.parametrize("index", [0, 1])
def test_round_trip_default_algorithms(index: int) -> None:
    challenger = make_challenger()
    assert challenger.verify_header("REGISTER", answer(challenger, index), lookup) is (
        DigestOutcome.OK
    )


def test_lookup_receives_the_hash_family() -> None:
    seen: list[DigestAlgorithm] = []

    def spy(username: str, realm: str, algorithm: DigestAlgorithm) -> str | None:
        seen.append(algorithm)
        return lookup(username, realm, algorithm)

    challenger = make_challenger(algorithms=[DigestAlgorithm.SHA256_SESS])
    assert challenger.verify_header("REGISTER", answer(challenger), spy) is DigestOutcome.OK
    assert seen == [DigestAlgorithm.SHA256]


def test_verify_with_preparsed_credentials_for_async_lookups() -> None:
    challenger = make_challenger()
    credentials = DigestCredentials.parse(answer(challenger))
    stored = lookup(credentials.username, credentials.realm, credentials.algorithm.base)
    assert challenger.verify("REGISTER", credentials, stored) is DigestOutcome.OK


def test_non_ascii_username_and_password() -> None:
    challenger = make_challenger()
    header = answer(challenger, username="José", password="pässwörd")

    def local(username: str, realm: str, algorithm: DigestAlgorithm) -> str | None:
        return ha1("José", realm, "pässwörd", algorithm) if username == "José" else None

    assert challenger.verify_header("REGISTER", header, local) is DigestOutcome.OK


def test_method_and_uri_are_covered_by_the_response() -> None:
    challenger = make_challenger()
    header = answer(challenger)
    assert challenger.verify_header("INVITE", header, lookup) is DigestOutcome.BAD_RESPONSE
    forged = header.replace(f'uri="{URI}"', 'uri="sip:other@example.com"')
    assert challenger.verify_header("REGISTER", forged, lookup) is DigestOutcome.BAD_RESPONSE


def test_uppercase_hex_response_is_accepted() -> None:
    challenger = make_challenger()
    credentials = DigestCredentials.parse(answer(challenger))
    shouting = DigestCredentials.parse(
        credentials.to_header().replace(credentials.response, credentials.response.upper())
    )
    stored = lookup("alice", REALM, DigestAlgorithm.SHA256)
    assert challenger.verify("REGISTER", shouting, stored) is DigestOutcome.OK
    assert challenger.verify("REGISTER", shouting, stored) is DigestOutcome.REPLAY


# -- server: failures -------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    challenger = make_challenger()
    wrong = answer(challenger, password="guess")
    unknown = answer(challenger, username="mallory", password="guess")
    assert challenger.verify_header("REGISTER", wrong, lookup) is DigestOutcome.BAD_RESPONSE
    assert challenger.verify_header("REGISTER", unknown, lookup) is DigestOutcome.BAD_RESPONSE


def test_unknown_user_is_rejected_even_if_response_matches_the_dummy_key() -> None:
    challenger = make_challenger(algorithms=[DigestAlgorithm.MD5])
    nonce = challenger.new_nonce()
    response = digest_response(
        DigestAlgorithm.MD5, "0" * 32, nonce, "REGISTER", URI, "auth", "00000001", "c"
    )
    credentials = DigestCredentials(
        "ghost", REALM, nonce, URI, response, DigestAlgorithm.MD5, "auth", "00000001", "c"
    )
    assert challenger.verify("REGISTER", credentials, None) is DigestOutcome.BAD_RESPONSE


def test_stale_nonce_with_right_password() -> None:
    clock = FakeClock()
    challenger = make_challenger(clock)
    header = answer(challenger)
    clock.now += 301
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.STALE
    fresh = challenger.challenge(stale=True)
    assert all(DigestChallenge.parse(h).stale for h in fresh)
    assert "stale=true" in fresh[0]
    retry = answer_challenge(fresh[0], "REGISTER", URI, "alice", USERS["alice"])
    assert challenger.verify_header("REGISTER", retry, lookup) is DigestOutcome.OK


def test_stale_nonce_with_wrong_password_is_not_reported_stale() -> None:
    # stale=true tells the client its credentials were right (RFC 7616 §3.3).
    clock = FakeClock()
    challenger = make_challenger(clock)
    header = answer(challenger, password="guess")
    clock.now += 301
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.BAD_RESPONSE


def test_nonce_ttl_is_configurable_and_boundary_inclusive() -> None:
    clock = FakeClock()
    challenger = make_challenger(clock, nonce_ttl=30)
    header = answer(challenger)
    clock.now += 30
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.OK
    clock.now += 0.01
    assert challenger.verify_header("REGISTER", answer(challenger), lookup) is DigestOutcome.OK
    late = answer(challenger)
    clock.now += 31
    assert challenger.verify_header("REGISTER", late, lookup) is DigestOutcome.STALE


def test_nonce_from_a_node_far_in_the_future_is_stale() -> None:
    ahead, here = FakeClock(1_700_000_100.0), FakeClock(1_700_000_000.0)
    header = answer(make_challenger(ahead))
    assert make_challenger(here).verify_header("REGISTER", header, lookup) is DigestOutcome.STALE


def test_nonce_verifies_on_another_node_with_the_same_secret() -> None:
    clock = FakeClock()
    header = answer(make_challenger(clock))
    other_node = make_challenger(clock)
    assert other_node.verify_header("REGISTER", header, lookup) is DigestOutcome.OK


def test_replayed_nc_is_rejected() -> None:
    challenger = make_challenger()
    header = answer(challenger)
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.OK
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.REPLAY


def test_increasing_nc_on_one_nonce_is_accepted_and_lower_nc_replays() -> None:
    challenger = make_challenger()
    challenge = challenger.challenge()[0]

    def with_nc(nc: int) -> str:
        return answer_challenge(challenge, "INVITE", URI, "alice", USERS["alice"], nc=nc)

    for nc in (1, 2, 3, 10):
        assert challenger.verify_header("INVITE", with_nc(nc), lookup) is DigestOutcome.OK
    # Out of order within the window: parallel requests that crossed on the wire.
    assert challenger.verify_header("INVITE", with_nc(7), lookup) is DigestOutcome.OK
    assert challenger.verify_header("INVITE", with_nc(7), lookup) is DigestOutcome.REPLAY
    assert challenger.verify_header("INVITE", with_nc(2), lookup) is DigestOutcome.REPLAY
    # A huge jump is fine and does not allocate a huge bitmap; anything below is now too old.
    assert challenger.verify_header("INVITE", with_nc(0xFFFFFFFF), lookup) is DigestOutcome.OK
    assert challenger.verify_header("INVITE", with_nc(11), lookup) is DigestOutcome.REPLAY


def test_failed_attempts_do_not_burn_nonce_counters() -> None:
    challenger = make_challenger()
    challenge = challenger.challenge()[0]
    attack = answer_challenge(challenge, "REGISTER", URI, "alice", "guess", nc=0xFFFFFF)
    assert challenger.verify_header("REGISTER", attack, lookup) is DigestOutcome.BAD_RESPONSE
    legit = answer_challenge(challenge, "REGISTER", URI, "alice", USERS["alice"], nc=1)
    assert challenger.verify_header("REGISTER", legit, lookup) is DigestOutcome.OK


def _tamper(nonce: str) -> str:
    raw = bytearray(base64.b64decode(nonce))
    raw[0] ^= 0x01  # move the timestamp, e.g. to make an old nonce look fresh
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    "mutate",
    [_tamper, lambda n: n[:-4] + "AAAA", lambda n: n[:-1], lambda n: "x" + n, lambda n: "é" * 48],
)
def test_tampered_or_foreign_nonce_is_rejected(mutate: Callable[[str], str]) -> None:
    challenger = make_challenger()
    nonce = DigestChallenge.parse(challenger.challenge()[0]).nonce
    forged = DigestChallenge(REALM, mutate(nonce), DigestAlgorithm.SHA256, ("auth",))
    header = forged.answer("REGISTER", URI, "alice", USERS["alice"]).to_header()
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.BAD_RESPONSE


def test_nonce_is_bound_to_realm_and_secret() -> None:
    clock = FakeClock()
    other_realm = DigestChallenger("other.example.com", SECRET, clock=clock)
    other_secret = DigestChallenger(REALM, b"another secret of 32 bytes......", clock=clock)
    challenger = make_challenger(clock)
    for foreign in (other_realm, other_secret):
        nonce = foreign.new_nonce()
        header = DigestChallenge(REALM, nonce, DigestAlgorithm.SHA256, ("auth",)).answer(
            "REGISTER", URI, "alice", USERS["alice"]
        )
        assert challenger.verify("REGISTER", header, lookup("alice", REALM, header.algorithm)) is (
            DigestOutcome.BAD_RESPONSE
        )


def test_secret_rotation_accepts_nonces_of_previous_secret() -> None:
    clock = FakeClock()
    old = DigestChallenger(REALM, b"old secret, at least 16 bytes", clock=clock)
    header = answer(old)
    new = DigestChallenger(
        REALM, SECRET, clock=clock, previous_secrets=[b"old secret, at least 16 bytes"]
    )
    assert new.verify_header("REGISTER", header, lookup) is DigestOutcome.OK
    assert DigestChallenge.parse(new.challenge()[0]).nonce != DigestChallenge.parse(header).nonce


def test_unknown_realm() -> None:
    challenger = make_challenger()
    foreign = DigestChallenger("other.example.com", SECRET, clock=FakeClock())
    header = answer(foreign)
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.UNKNOWN_REALM


def test_algorithm_not_offered_is_malformed() -> None:
    sha_only = make_challenger(algorithms=[DigestAlgorithm.SHA256])
    md5 = DigestChallenge(REALM, sha_only.new_nonce(), DigestAlgorithm.MD5, ("auth",))
    header = md5.answer("REGISTER", URI, "alice", USERS["alice"]).to_header()
    assert sha_only.verify_header("REGISTER", header, lookup) is DigestOutcome.MALFORMED


def _legacy_header(challenger: DigestChallenger, algorithm: DigestAlgorithm) -> str:
    legacy = DigestChallenge(REALM, challenger.new_nonce(), algorithm)
    return legacy.answer("REGISTER", URI, "alice", USERS["alice"]).to_header()


def test_no_qop_is_refused_by_default() -> None:
    challenger = make_challenger()
    header = _legacy_header(challenger, DigestAlgorithm.MD5)
    assert "qop" not in parse_auth_header(header).params
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.MALFORMED


def test_legacy_md5_without_qop_is_single_use_when_allowed() -> None:
    challenger = make_challenger(allow_legacy_no_qop=True)
    header = _legacy_header(challenger, DigestAlgorithm.MD5)
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.OK
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.STALE
    sha = _legacy_header(challenger, DigestAlgorithm.SHA256)
    assert challenger.verify_header("REGISTER", sha, lookup) is DigestOutcome.MALFORMED


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Basic dXNlcjpwYXNz",
        'Basic realm="pomelo.example.com"',
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}"',
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="zz"',
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        "qop=auth",
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        'qop=auth, nc=00000000, cnonce="c"',
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        'qop=auth, nc=123456789, cnonce="c"',
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        "nc=00000001",
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        "algorithm=SHA-512-256",
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        "userhash=true",
        f'Digest username="alice", realm="{REALM}", nonce="n", uri="{URI}", response="ab", '
        "algorithm=MD5-sess",
    ],
)
def test_malformed_credentials(header: str) -> None:
    assert make_challenger().verify_header("REGISTER", header, lookup) is DigestOutcome.MALFORMED


def test_auth_int_is_not_accepted() -> None:
    challenger = make_challenger()
    credentials = DigestCredentials.parse(answer(challenger))
    header = credentials.to_header().replace("qop=auth", "qop=auth-int")
    assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.MALFORMED


def test_surrogates_in_method_are_malformed_not_a_crash() -> None:
    challenger = make_challenger()
    assert challenger.verify_header("REG\udcffISTER", answer(challenger), lookup) is (
        DigestOutcome.MALFORMED
    )


def test_stored_ha1_of_wrong_family_is_a_programming_error() -> None:
    challenger = make_challenger()
    credentials = DigestCredentials.parse(answer(challenger))  # SHA-256
    with pytest.raises(ValueError, match="HA1"):
        challenger.verify("REGISTER", credentials, ha1("alice", REALM, "x", DigestAlgorithm.MD5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"algorithms": []},
        {"algorithms": [DigestAlgorithm.MD5, DigestAlgorithm.MD5]},
        {"nonce_ttl": 0},
        {"previous_secrets": [b"short"]},
    ],
)
def test_challenger_configuration_is_validated(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"secret": SECRET}
    options.update(kwargs)
    with pytest.raises(ValueError):
        DigestChallenger(REALM, **options)  # type: ignore[arg-type]


# -- replay memory bound ----------------------------------------------------------------------


def test_replay_memory_is_bounded_and_eviction_never_reopens_a_nonce() -> None:
    clock = FakeClock()
    tracker = NonceTracker(max_entries=50)
    challenger = make_challenger(clock, tracker=tracker, algorithms=[DigestAlgorithm.MD5])
    first = answer(challenger)
    assert challenger.verify_header("REGISTER", first, lookup) is DigestOutcome.OK
    for _ in range(500):
        clock.now += 0.01
        assert challenger.verify_header("REGISTER", answer(challenger), lookup) is (
            DigestOutcome.OK
        )
    assert len(tracker) <= 50
    # The record of `first` was evicted, yet replaying it must not succeed.
    assert challenger.verify_header("REGISTER", first, lookup) is DigestOutcome.STALE
    # A nonce issued after the eviction horizon works as usual.
    clock.now += 0.01
    assert challenger.verify_header("REGISTER", answer(challenger), lookup) is DigestOutcome.OK


def test_expired_records_are_dropped() -> None:
    clock = FakeClock()
    tracker = NonceTracker()
    challenger = make_challenger(clock, tracker=tracker, nonce_ttl=10)
    for _ in range(20):
        assert challenger.verify_header("REGISTER", answer(challenger), lookup) is (
            DigestOutcome.OK
        )
    clock.now += 11
    assert challenger.verify_header("REGISTER", answer(challenger), lookup) is DigestOutcome.OK
    assert len(tracker) == 1


def test_tracker_can_be_shared_between_realms() -> None:
    clock = FakeClock()
    tracker = NonceTracker(max_entries=10)
    a = DigestChallenger("a.example", SECRET, clock=clock, tracker=tracker)
    b = DigestChallenger("b.example", SECRET, clock=clock, tracker=tracker)
    for challenger in (a, b):
        header = answer(challenger)
        assert challenger.verify_header("REGISTER", header, lookup) is DigestOutcome.OK
    assert len(tracker) == 2


# -- client helpers ---------------------------------------------------------------------------


def test_client_prefers_auth_and_echoes_opaque() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth-int, auth", opaque="o\\"x"'
    credentials = DigestCredentials.parse(
        answer_challenge(challenge, "REGISTER", "sip:r", "u", "p")
    )
    assert credentials.qop == "auth"
    assert credentials.opaque == 'o"x'
    assert credentials.cnonce
    assert credentials.nc == "00000001"


def test_client_generates_fresh_cnonces() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth"'
    cnonces = {
        DigestCredentials.parse(answer_challenge(challenge, "REGISTER", "sip:r", "u", "p")).cnonce
        for _ in range(50)
    }
    assert len(cnonces) == 50


def test_client_formats_nc_as_eight_hex_digits() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth"'
    header = answer_challenge(challenge, "REGISTER", "sip:r", "u", "p", nc=0x1A)
    assert "nc=0000001a" in header


@pytest.mark.parametrize(
    ("challenge", "nc"),
    [
        ('Digest realm="r", nonce="n", qop="auth-int"', 1),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', 1),
        ('Digest realm="r"', 1),
        ('Basic realm="r"', 1),
        ('Digest realm="r", nonce="n", qop="auth"', 0),
        ('Digest realm="r", nonce="n", qop="auth"', 2**32),
    ],
)
def test_client_refuses_what_it_cannot_answer(challenge: str, nc: int) -> None:
    with pytest.raises(DigestError):
        answer_challenge(challenge, "REGISTER", "sip:r", "u", "p", nc=nc)


def test_client_refuses_credentials_that_would_inject_headers() -> None:
    with pytest.raises(DigestError):
        answer_challenge('Digest realm="r", nonce="n"', "REGISTER", "sip:r", "u\r\nX: y", "p")


def test_select_challenge_takes_the_topmost_supported() -> None:
    headers = [
        'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
        'Basic realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth-int"',
        'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"',
    ]
    assert select_challenge(headers) == headers[3]
    with pytest.raises(DigestError):
        select_challenge(headers[:3])


def test_algorithm_tokens() -> None:
    assert DigestAlgorithm.from_token(None) is DigestAlgorithm.MD5
    assert DigestAlgorithm.from_token("sha-256-SESS") is DigestAlgorithm.SHA256_SESS
    assert DigestAlgorithm.SHA256_SESS.session
    assert DigestAlgorithm.SHA256_SESS.base is DigestAlgorithm.SHA256
    assert not DigestAlgorithm.MD5.session
    with pytest.raises(DigestError):
        DigestAlgorithm.from_token("SHA-1")
