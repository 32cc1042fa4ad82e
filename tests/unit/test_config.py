"""Configuration layering and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from pomelo.config import DEMO_SECRET, load_settings
from pomelo.core.errors import ConfigError

SECRET = "unit-test-secret-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("POMELO_CONFIG", "POMELO_HTTP_PORT", "POMELO_SECRET_KEY", "POMELO_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_follow_the_demo_contract() -> None:
    s = load_settings(mode="demo")
    assert (s.http_host, s.http_port, s.sip_host, s.sip_port) == (
        "127.0.0.1",
        8080,
        "127.0.0.1",
        5060,
    )
    assert (s.rtp_port_min, s.rtp_port_max) == (20000, 29999)
    assert s.effective_database_url == "sqlite+aiosqlite:///var/pomelo.db"


def test_layers_file_then_env_then_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pomelo.toml").write_text(
        f'secret_key = "{SECRET}"\nhttp_port = 9001\nsip_port = 5070\nlog_level = "debug"\n'
    )
    assert load_settings().http_port == 9001
    monkeypatch.setenv("POMELO_HTTP_PORT", "9002")
    s = load_settings()
    assert (s.http_port, s.sip_port, s.log_level) == (9002, 5070, "debug")
    assert load_settings(http_port=9003).http_port == 9003


def test_demo_secret_refused_outside_demo_mode() -> None:
    with pytest.raises(ConfigError, match="demo secret"):
        load_settings()
    with pytest.raises(ConfigError, match="demo secret"):
        load_settings(mode="production", secret_key=DEMO_SECRET)
    assert load_settings(secret_key=SECRET).mode == "production"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"http_port": 70000}, "http_port"),
        ({"rtp_port_min": 30000, "rtp_port_max": 20000}, "rtp_port_min"),
        ({"secret_key": "short"}, "16 characters"),
        ({"log_level": "loud"}, "log_level"),
    ],
)
def test_invalid_values_name_the_option(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(mode="demo", **overrides)


def test_unknown_keys_and_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("mode = 'demo'\nbogus = 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = 'demo\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
