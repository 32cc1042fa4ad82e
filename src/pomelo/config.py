"""Typed configuration: defaults → pomelo.toml → POMELO_* environment → command-line flags.

Every option is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pomelo.core.errors import ConfigError

#: The well-known secret of demo mode. Refused in any other mode.
DEMO_SECRET = "pomelo-demo-secret-do-not-use-in-production"  # noqa: S105
DEFAULT_CONFIG_FILE = Path("pomelo.toml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POMELO_", extra="forbid", frozen=True)

    mode: Literal["production", "demo"] = "production"
    data_dir: Path = Path("var")
    database_url: str = ""
    secret_key: SecretStr = SecretStr(DEMO_SECRET)

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    sip_enabled: bool = True
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5060, ge=0, le=65535)
    sip_transports: tuple[Literal["UDP", "TCP"], ...] = ("UDP", "TCP")
    #: SIP over TLS: listens on sip_tls_port when both certificate and key files are given.
    sip_tls_port: int = Field(5061, ge=0, le=65535)
    sip_tls_cert: Path | None = None
    sip_tls_key: Path | None = None
    #: SIP over WebSocket (RFC 7118, browsers' softphones): listens when a port is set.
    sip_ws_port: int | None = Field(None, ge=0, le=65535)
    sip_qualify_seconds: float = Field(30.0, ge=0)
    #: Compatibility first: SIPp and baresip 1.0 (and many desk phones) fail outright when any
    #: challenge names SHA-256; see configuration.md.
    sip_digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = Field(("MD5",), min_length=1)
    sip_rate_per_second: float = Field(50.0, gt=0)
    sip_rate_burst: float = Field(200.0, ge=1)
    sip_ban_failures: int = Field(5, ge=1)
    sip_ban_window_seconds: float = Field(300.0, gt=0)
    sip_ban_seconds: float = Field(3600.0, gt=0)
    sip_ban_escalation: float = Field(2.0, ge=1)
    sip_ban_max_seconds: float = Field(7 * 86400.0, gt=0)
    sip_exempt_networks: tuple[str, ...] = ()
    call_ring_timeout_seconds: float = Field(30.0, gt=0)
    call_outbound_ring_timeout_seconds: float = Field(120.0, gt=0)
    call_max_duration_seconds: float = Field(4 * 3600.0, gt=0)
    call_session_timers: bool = True
    call_session_interval_seconds: int = Field(1800, ge=90)
    call_session_min_se_seconds: int = Field(90, ge=90)
    call_max_concurrent: int = Field(20_000, ge=1)
    sip_min_expires: int = Field(60, ge=1)
    sip_max_expires: int = Field(3600, ge=60)
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(29999, ge=1024, le=65535)
    #: Media anchoring: every call's RTP flows through Pomelo (recording, IVR, supervision).
    media_anchor: bool = True
    #: Address RTP sockets bind to and SDP advertises; empty = sip_host.
    media_host: str = ""
    #: Seconds without RTP from an answered, not-on-hold leg before the call is hung up (0 = never).
    rtp_timeout_seconds: float = Field(60.0, ge=0)
    #: WAV played to a caller put on hold (any PCM WAV; empty = a built-in tune).
    music_on_hold_file: Path | None = None
    recordings_enabled: bool = True
    #: None: <data_dir>/recordings (see effective_recordings_dir).
    recordings_dir: Path | None = None
    #: Days a recording is kept; 0 keeps them forever.
    recording_retention_days: int = Field(90, ge=0, le=36500)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    migrate_on_start: bool = True
    max_request_bytes: int = Field(1_048_576, ge=1024)
    session_ttl_hours: float = Field(12.0, gt=0)
    cookie_secure: bool = False
    password_hash_time_cost: int = Field(3, ge=1)
    password_hash_memory_kib: int = Field(65536, ge=8)
    event_poll_seconds: float = Field(1.0, gt=0)
    stream_queue_size: int = Field(1000, ge=10)
    uvloop: bool = True

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.rtp_port_min >= self.rtp_port_max:
            raise ValueError("rtp_port_min must be below rtp_port_max")
        if self.mode != "demo" and self.secret_key.get_secret_value() == DEMO_SECRET:
            raise ValueError(
                "secret_key is the demo secret; set POMELO_SECRET_KEY (or secret_key in "
                "pomelo.toml) to a long random value, or run in demo mode"
            )
        if (self.sip_tls_cert is None) != (self.sip_tls_key is None):
            raise ValueError("sip_tls_cert and sip_tls_key go together")
        for path in (self.sip_tls_cert, self.sip_tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        if len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("secret_key must be at least 16 characters")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pomelo.db').as_posix()}"

    @property
    def effective_media_host(self) -> str:
        return self.media_host or self.sip_host

    @property
    def effective_recordings_dir(self) -> Path:
        if self.recordings_dir is not None:
            return self.recordings_dir
        return self.data_dir / "recordings"

    @property
    def is_demo(self) -> bool:
        return self.mode == "demo"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from all layers; flags given as `overrides` win. Raises ConfigError."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    path = config_file or Path(os.environ.get("POMELO_CONFIG", DEFAULT_CONFIG_FILE))
    if (config_file or "POMELO_CONFIG" in os.environ) and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    layered = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
    )
    try:
        settings: Settings = layered(**flags)
        return settings
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"cannot read configuration: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "configuration"
        lines.append(f"{where}: {err['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
