"""The `pomelo` command: serve, demo, database, tenants, users, configuration check."""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pomelo.config import Settings, load_settings
from pomelo.core.errors import ConfigError, DomainError

T = TypeVar("T")

app = typer.Typer(
    name="pomelo",
    help="Pomelo: self-hosted contact center and virtual PBX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants (client companies).", no_args_is_help=True)
user_app = typer.Typer(help="Employees.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file (default ./pomelo.toml).")
]
DbOpt = Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL.")]
HostOpt = Annotated[str | None, typer.Option("--host", help="HTTP bind address.")]
PortOpt = Annotated[int | None, typer.Option("--port", help="HTTP port.")]


def _settings(config: Path | None, **flags: Any) -> Settings:
    try:
        return load_settings(config, **flags)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]], *, start: bool = True) -> T:
    """Run `work(platform)` with a started platform; domain errors become a message and exit 1."""
    from pomelo.app import build_platform

    async def main() -> T:
        platform = build_platform(settings)
        try:
            if start:
                await platform.db.migrate()
            return await work(platform)
        finally:
            await platform.db.dispose()

    try:
        return asyncio.run(main())
    except (DomainError, ConfigError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot reach the database: {exc}")
        raise typer.Exit(1) from None


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _serve(settings: Settings, before: Callable[[Any], Awaitable[None]] | None = None) -> None:
    import uvicorn

    from pomelo.app import build_platform, create_app
    from pomelo.runtime import run, tune_gc

    _configure_logging(settings)

    async def main() -> None:
        platform = build_platform(settings)
        if before is not None:
            await platform.db.migrate()
            await before(platform)
        config = uvicorn.Config(
            create_app(platform),
            host=settings.http_host,
            port=settings.http_port,
            log_level=settings.log_level,
            lifespan="on",
            ws="websockets-sansio",
        )
        server = uvicorn.Server(config)
        tune_gc()
        await server.serve()
        if not server.started:
            raise OSError(f"could not serve HTTP on {settings.http_host}:{settings.http_port}")

    try:
        run(main(), use_uvloop=settings.uvloop)
    except (DomainError, ConfigError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    config: ConfigOpt = None, database_url: DbOpt = None, host: HostOpt = None, port: PortOpt = None
) -> None:
    """Serve the platform (HTTP API now; SIP and media join the same process)."""
    _serve(_settings(config, database_url=database_url, http_host=host, http_port=port))


@app.command()
def demo(
    config: ConfigOpt = None,
    database_url: DbOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve after seeding.")
    ] = True,
) -> None:
    """Create or refresh the demo tenant, print its credentials, then serve (demo mode)."""
    settings = _settings(
        config, mode="demo", database_url=database_url, http_host=host, http_port=port
    )

    async def seed(platform: Any) -> None:
        from pomelo.demo import seed_demo

        users = await seed_demo(platform)
        _print_demo(settings, users)

    if serve_after:
        _serve(settings, before=seed)
    else:
        _run(settings, seed)


def _print_demo(settings: Settings, users: list[Any]) -> None:
    from pomelo.demo import DEMO_PASSWORD, DEMO_TENANT

    table = Table(title=f"Demo tenant '{DEMO_TENANT}' — password for everyone: {DEMO_PASSWORD}")
    table.add_column("username")
    table.add_column("role")
    table.add_column("groups")
    for user in users:
        table.add_row(user.username, user.role, ", ".join(user.groups))
    out.print(table)
    out.print(
        f"Web and API: http://{settings.http_host}:{settings.http_port}/  (API docs: /api/docs)"
    )


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Migrate the database schema to the newest revision."""
    settings = _settings(config, database_url=database_url)

    async def work(platform: Any) -> str | None:
        revision: str | None = await platform.db.current_revision()
        return revision

    revision = _run(settings, work)
    out.print(f"database at revision {revision}")


@db_app.command("check")
def db_check(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Fail when the models and the migrations disagree (a migration is missing)."""
    from pomelo.storage.migrate import schema_drift

    settings = _settings(config, database_url=database_url)

    async def work(platform: Any) -> list[Any]:
        drift: list[Any] = await platform.db.run_sync(schema_drift)
        return drift

    drift = _run(settings, work)
    if drift:
        err.print("[red]models and migrations disagree:[/red]")
        for item in drift:
            err.print(f"  {item}")
        raise typer.Exit(1)
    out.print("models and migrations agree")


@db_app.command("revision", hidden=True)
def db_revision(message: Annotated[str, typer.Option("-m")], database_url: DbOpt = None) -> None:
    """Developers: write a migration from the models' difference with a migrated database."""
    from pomelo.storage.migrate import autogenerate_revision

    settings = _settings(None, database_url=database_url)

    async def work(platform: Any) -> None:
        await platform.db.run_sync(lambda conn: autogenerate_revision(conn, message))

    _run(settings, work)


@tenant_app.command("create")
def tenant_create(
    slug: str,
    name: Annotated[str, typer.Option(help="Company name.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a tenant with its built-in roles."""
    from pomelo.auth.schemas import TenantUpdate

    settings = _settings(config, database_url=database_url)
    _validate(TenantUpdate, name=name, timezone=timezone)

    async def work(platform: Any) -> Any:
        return await platform.directory.create_tenant(slug, name, timezone)

    tenant = _run(settings, work)
    out.print(f"tenant {tenant.slug} created (id {tenant.id})")


@user_app.command("create")
def user_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    username: str,
    role: Annotated[str, typer.Option(help="Role key.")] = "operator",
    display_name: Annotated[str | None, typer.Option(help="Full name.")] = None,
    password: Annotated[
        str | None,
        typer.Option(
            help="Password (prompted when omitted; POMELO_USER_PASSWORD also works).",
            envvar="POMELO_USER_PASSWORD",
        ),
    ] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create an employee in a tenant."""
    from pomelo.auth.access import Actor
    from pomelo.auth.schemas import UserCreate

    settings = _settings(config, database_url=database_url)
    if password is None:
        if not sys.stdin.isatty():
            err.print("[red]error:[/red] give --password or POMELO_USER_PASSWORD")
            raise typer.Exit(2)
        password = getpass.getpass("password: ")
    body = _validate(
        UserCreate,
        username=username,
        display_name=display_name or username,
        password=password,
        role=role,
    )

    async def work(platform: Any) -> Any:
        found = await platform.directory.tenant_by_slug(tenant)
        if found is None:
            raise ConfigError(f"no tenant {tenant!r}")
        return await platform.directory.create_user(Actor.system(found.id, "cli"), body)

    user = _run(settings, work)
    out.print(f"user {user['username']} created (id {user['id']}, role {user['role']})")


def _validate(model: Any, **values: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as exc:
        for e in exc.errors():
            err.print(f"[red]error:[/red] {'.'.join(map(str, e['loc']))}: {e['msg']}")
        raise typer.Exit(2) from None


@app.command()
def check(config: ConfigOpt = None, database_url: DbOpt = None) -> None:
    """Validate the configuration and environment; print hints. Exit 1 on problems."""
    settings = _settings(config, database_url=database_url)
    problems: list[str] = []
    hints: list[str] = []
    table = Table(title="Pomelo configuration")
    table.add_column("option")
    table.add_column("value")
    for name, value in settings.model_dump().items():
        table.add_row(name, "********" if name == "secret_key" else str(value))
    out.print(table)
    for label, host, port in (
        ("HTTP", settings.http_host, settings.http_port),
        ("SIP", settings.sip_host, settings.sip_port),
    ):
        if port and not _port_free(host, port):
            hints.append(f"{label} port {host}:{port} is in use (another Pomelo running?)")
    if settings.http_host not in ("127.0.0.1", "localhost", "::1") and not settings.cookie_secure:
        hints.append("serving beyond loopback: put TLS in front and set cookie_secure = true")
    problems.extend(_check_database(settings))
    for hint in hints:
        out.print(f"[yellow]hint:[/yellow] {hint}")
    for problem in problems:
        err.print(f"[red]problem:[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    out.print("[green]configuration OK[/green]")


def _check_database(settings: Settings) -> list[str]:
    from pomelo.storage.db import Database
    from pomelo.storage.migrate import head_revision

    async def probe() -> list[str]:
        db = Database(settings.effective_database_url)
        try:
            await db.ping()
            revision = await db.current_revision()
        except Exception as exc:
            return [f"database unreachable: {exc}"]
        finally:
            await db.dispose()
        if revision != head_revision():
            return [
                f"schema at {revision}, expected {head_revision()}: run `pomelo db upgrade`"
                " (serve also migrates on start)"
            ]
        return []

    return asyncio.run(probe())


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main() -> None:
    app()
