"""The `pomelo` command as an operator runs it: a real process per invocation, its own
environment and working directory, exit codes and messages checked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

POMELO = Path(sys.executable).with_name("pomelo")
CLI_SECRET = "cli-test-secret-0123456789abcdef"  # 32 characters, not the demo secret
GOOD_PASSWORD = "long enough pw"
TIMEOUT = 60.0


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout and stderr with rich's line wrapping undone, for substring assertions."""
        return " ".join(f"{self.stdout}\n{self.stderr}".split())

    def __str__(self) -> str:
        return f"pomelo {' '.join(self.args)} → exit {self.code}\n{self.stdout}\n{self.stderr}"


class Cli:
    """Runs `pomelo` against one empty database, from a directory without a pomelo.toml."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        self.database_url = database_url
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("POMELO_")}
        self.env.update(
            {
                "POMELO_DATABASE_URL": database_url,
                "POMELO_SECRET_KEY": CLI_SECRET,
                "POMELO_DATA_DIR": str(tmp / "var"),
                "POMELO_SIP_PORT": "0",
                # Cheap hashing keeps each `user create` well under a second.
                "POMELO_PASSWORD_HASH_TIME_COST": "1",
                "POMELO_PASSWORD_HASH_MEMORY_KIB": "8",
                "COLUMNS": "200",
            }
        )

    async def __call__(self, *args: str, env: dict[str, Any] | None = None) -> Result:
        """Run one command; `env` entries override (a None value removes the variable)."""
        environ = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = str(value)
        proc = await asyncio.create_subprocess_exec(
            str(POMELO),
            *args,
            stdin=subprocess.DEVNULL,  # never a tty: prompts must not hang
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            cwd=self.cwd,
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return Result(args, proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def cli(fresh_database: Any, tmp_path: Path) -> Cli:
    return Cli(await fresh_database(), tmp_path)


def user_create(
    cli: Cli,
    tenant: str,
    username: str,
    *extra: str,
    password: str | None = GOOD_PASSWORD,
    env: dict[str, Any] | None = None,
) -> Any:
    args = ["user", "create", "--tenant", tenant, username, *extra]
    if password is not None:
        args += ["--password", password]
    return cli(*args, env=env)


def expect(result: Result, code: int, *fragments: str) -> None:
    assert result.code == code, str(result)
    for fragment in fragments:
        assert fragment in result.text, f"{fragment!r} not in output of\n{result}"
    assert "Traceback" not in result.text, str(result)


# -- usage -----------------------------------------------------------------------------------


async def test_help_lists_every_command(cli: Cli) -> None:
    top, user = await asyncio.gather(cli("--help"), cli("user", "create", "--help"))
    expect(top, 0, "Usage: pomelo")
    for command in ("serve", "demo", "check", "db", "tenant", "user"):
        assert f"│ {command} " in top.stdout, str(top)
    expect(user, 0, "--tenant", "--password", "--role", "POMELO_USER_PASSWORD")


async def test_unknown_command_and_option_are_usage_errors(cli: Cli) -> None:
    command, option, missing = await asyncio.gather(
        cli("frobnicate"), cli("serve", "--bogus"), cli("tenant", "create", "acme")
    )
    expect(command, 2, "No such command 'frobnicate'")
    expect(option, 2, "No such option: --bogus")
    expect(missing, 2, "Missing option '--name'")


# -- configuration ---------------------------------------------------------------------------


async def test_invalid_configuration_exits_2_naming_the_option(cli: Cli) -> None:
    malformed = cli.cwd / "malformed.toml"
    malformed.write_text("http_port = [\n")
    wrong_type = cli.cwd / "wrong-type.toml"
    wrong_type.write_text('http_port = "eighty"\n')
    unknown_key = cli.cwd / "unknown-key.toml"
    unknown_key.write_text("colour = 'red'\n")
    cases = {
        # serve must refuse before binding anything (it would otherwise run until the timeout)
        "port out of range": (
            cli("serve", env={"POMELO_HTTP_PORT": 99999}),
            ["invalid configuration", "http_port", "65535"],
        ),
        "malformed TOML": (cli("check", "--config", str(malformed)), ["cannot read configuration"]),
        "wrong type in TOML": (cli("db", "upgrade", "-c", str(wrong_type)), ["http_port"]),
        "unknown key in TOML": (cli("check", "--config", str(unknown_key)), ["colour"]),
        "missing --config file": (
            cli("check", "--config", "nowhere.toml"),
            ["config file nowhere.toml does not exist"],
        ),
        "missing POMELO_CONFIG file": (
            cli("check", env={"POMELO_CONFIG": "elsewhere.toml"}),
            ["config file elsewhere.toml does not exist"],
        ),
        "demo secret outside demo mode": (
            cli("tenant", "create", "acme", "--name", "Acme", env={"POMELO_SECRET_KEY": None}),
            ["secret_key is the demo secret", "POMELO_SECRET_KEY"],
        ),
        "short secret": (
            cli("check", env={"POMELO_SECRET_KEY": "short"}),
            ["secret_key must be at least 16 characters"],
        ),
        "bad log level": (cli("check", env={"POMELO_LOG_LEVEL": "loud"}), ["log_level"]),
    }
    results = await asyncio.gather(*(run for run, _ in cases.values()))
    for (case, (_, fragments)), result in zip(cases.items(), results, strict=True):
        assert result.code == 2, f"{case}: {result}"
        assert "error:" in result.stderr, f"{case}: {result}"
        for fragment in fragments:
            assert fragment in result.text, f"{case}: {fragment!r} missing in\n{result}"
    # None of these touched the database: it still needs migrating.
    expect(await cli("check"), 1, "pomelo db upgrade")


async def test_configuration_layers_file_then_environment_then_flags(cli: Cli) -> None:
    (cli.cwd / "pomelo.toml").write_text("http_port = 18123\nsip_port = 15099\n")
    other = f"sqlite+aiosqlite:///{(cli.cwd / 'other.db').as_posix()}"
    from_file, from_env, from_flag = await asyncio.gather(
        cli("check", env={"POMELO_SIP_PORT": None}),
        cli("check", env={"POMELO_SIP_PORT": 15100}),
        cli("check", "--database-url", other, env={"POMELO_SIP_PORT": 15100}),
    )
    # `check` prints the effective configuration even when it finds problems (here: the
    # databases are not migrated yet).
    expect(from_file, 1, "http_port │ 18123", "sip_port │ 15099", "pomelo db upgrade")
    expect(from_env, 1, "http_port │ 18123", "sip_port │ 15100")
    expect(from_flag, 1, "http_port │ 18123", "sip_port │ 15100", "other.db")
    assert "other.db" not in from_env.text


# -- database --------------------------------------------------------------------------------


async def test_db_upgrade_then_check(cli: Cli) -> None:
    expect(await cli("check"), 1, "problem:", "schema at None", "pomelo db upgrade")
    first = await cli("db", "upgrade")
    expect(first, 0, "database at revision")
    second, drift, check = await asyncio.gather(
        cli("db", "upgrade"), cli("db", "check"), cli("check")
    )
    expect(second, 0)
    assert second.stdout == first.stdout  # same head revision, nothing re-applied
    expect(drift, 0, "models and migrations agree")
    expect(check, 0, "configuration OK", "secret_key │ ********")
    assert CLI_SECRET not in check.text
    not_audio = cli.cwd / "music.wav"
    not_audio.write_text("this is not a WAV file")
    bad_music = await cli("check", env={"POMELO_MUSIC_ON_HOLD_FILE": str(not_audio)})
    expect(bad_music, 1, "problem:", "music_on_hold_file", "music.wav")


# -- tenants and users -----------------------------------------------------------------------


async def test_tenant_create_refuses_duplicates_and_unknown_time_zones(cli: Cli) -> None:
    expect(await cli("tenant", "create", "acme", "--name", "Acme"), 0, "tenant acme created")
    again, bad_zone = await asyncio.gather(
        cli("tenant", "create", "acme", "--name", "Acme again"),
        cli("tenant", "create", "beta", "--name", "Beta", "--timezone", "Mars/Base"),
    )
    expect(again, 1, "tenant 'acme' already exists")
    assert bad_zone.code != 0, str(bad_zone)
    assert "Mars/Base" in bad_zone.text, str(bad_zone)
    # The refused tenant was not half-created: the slug is still free.
    expect(
        await cli("tenant", "create", "beta", "--name", "Beta", "--timezone", "Europe/Berlin"),
        0,
        "tenant beta created",
    )


async def test_user_create(cli: Cli) -> None:
    expect(await cli("tenant", "create", "acme", "--name", "Acme"), 0)
    expect(
        await user_create(cli, "acme", "alice"),
        0,
        "user alice created",
        "role operator",
    )
    weak, no_tenant, no_password, bad_role, admin, from_env = await asyncio.gather(
        user_create(cli, "acme", "bob", password="demo"),
        user_create(cli, "nope", "carol"),
        user_create(cli, "acme", "dave", password=None),
        user_create(cli, "acme", "erin", "--role", "wizard"),
        user_create(cli, "acme", "frank", "--role", "administrator"),
        user_create(
            cli, "acme", "gina", password=None, env={"POMELO_USER_PASSWORD": GOOD_PASSWORD}
        ),
    )
    assert weak.code != 0 and "weak" in weak.text, str(weak)
    assert no_tenant.code != 0 and "no tenant 'nope'" in no_tenant.text, str(no_tenant)
    expect(no_password, 2, "--password")
    assert bad_role.code != 0 and "no role 'wizard'" in bad_role.text, str(bad_role)
    expect(admin, 0, "user frank created", "role administrator")
    expect(from_env, 0, "user gina created")
    # Only the refused ones are missing: alice exists, bob does not.
    taken, free = await asyncio.gather(
        user_create(cli, "acme", "alice"),
        user_create(cli, "acme", "bob"),
    )
    expect(taken, 1, "username 'alice' is taken")
    expect(free, 0, "user bob created")


# -- demo ------------------------------------------------------------------------------------


async def test_demo_no_serve_seeds_idempotently(cli: Cli) -> None:
    env = {"POMELO_SECRET_KEY": None}  # demo mode runs on the well-known demo secret
    first = await cli("demo", "--no-serve", env=env)
    second = await cli("demo", "--no-serve", env=env)
    for result in (first, second):
        expect(result, 0, "Demo tenant 'demo'", "password for everyone: demo")
        for user in ("admin", "head", "supervisor", "operator1", "operator6"):
            assert f"│ {user} " in result.stdout, str(result)
        assert "│ supervisor │ group_head │ Sales, Support │" in result.text, str(result)
    # The demo users really are in the database.
    expect(
        await user_create(cli, "demo", "operator1"),
        1,
        "username 'operator1' is taken",
    )


# -- messages ------------------------------------------------------------------------------


async def test_error_messages_are_printed_verbatim(cli: Cli) -> None:
    """Messages containing [brackets] are neither eaten as rich markup nor crash the CLI."""
    bad_name, bracketed = await asyncio.gather(
        user_create(cli, "acme", "Bad_Name"),
        user_create(cli, "[/x]", "carol"),
    )
    expect(bad_name, 2, "username", "^[a-z0-9][a-z0-9._-]{0,63}$")
    expect(bracketed, 1, "no tenant '[/x]'")


async def test_tenant_create_refuses_an_invalid_slug(cli: Cli) -> None:
    """A slug the login form would refuse must not be created: nobody could ever log in."""
    result = await cli("tenant", "create", "Bad Slug!", "--name", "Bad")
    expect(result, 2, "slug")


async def test_serve_refuses_a_busy_port_with_a_message(cli: Cli) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = await cli("serve", env={"POMELO_SIP_PORT": port})
    assert result.code == 1, result
    assert f"127.0.0.1:{port} is already in use" in result.text
    assert "Traceback" not in result.text
