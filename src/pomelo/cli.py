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
from rich.markup import escape
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
pbx_app = typer.Typer(help="PBX: SIP accounts (extensions), trunks, numbers.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(pbx_app, name="pbx")

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
        err.print(f"[red]error:[/red] {escape(str(exc))}")
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
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot reach the database: {escape(str(exc))}")
        raise typer.Exit(1) from None


def _busy_ports(settings: Settings) -> str | None:
    """The first listening address already taken, checked before anything starts."""
    wanted = [("HTTP", settings.http_host, settings.http_port, socket.SOCK_STREAM)]
    if settings.sip_enabled:
        kinds = {"UDP": socket.SOCK_DGRAM, "TCP": socket.SOCK_STREAM}
        wanted += [
            (f"SIP/{name}", settings.sip_host, settings.sip_port, kinds[name])
            for name in settings.sip_transports
        ]
    for label, host, port, kind in wanted:
        if port and not _port_free(host, port, kind):
            return f"{label} address {host}:{port} is already in use"
    return None


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
    busy = _busy_ports(settings)
    if busy:
        err.print(f"[red]error:[/red] {escape(busy)}; stop what uses it or choose another port")
        raise typer.Exit(1)

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
            raise OSError(
                f"could not start: HTTP {settings.http_host}:{settings.http_port}, SIP "
                f"{settings.sip_host}:{settings.sip_port} (the error is logged above)"
            )

    try:
        run(main(), use_uvloop=settings.uvloop)
    except (DomainError, ConfigError, OSError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
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
            err.print(f"  {escape(str(item))}")
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
    from pomelo.auth.schemas import TenantCreate

    settings = _settings(config, database_url=database_url)
    _validate(TenantCreate, slug=slug, name=name, timezone=timezone)

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


TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant slug.")]


def _tenant_work(
    slug: str, work: Callable[[Any, Any], Awaitable[T]]
) -> Callable[[Any], Awaitable[T]]:
    """Wrap `work(platform, system_actor)` with the tenant lookup every PBX command needs."""
    from pomelo.auth.access import Actor

    async def run(platform: Any) -> T:
        found = await platform.directory.tenant_by_slug(slug)
        if found is None:
            raise ConfigError(f"no tenant {slug!r}")
        return await work(platform, Actor.system(found.id, "cli"))

    return run


@pbx_app.command("account-create")
def pbx_account_create(
    tenant: TenantOpt,
    first: Annotated[str, typer.Option(help="First extension, e.g. 201.")],
    count: Annotated[int, typer.Option(help="How many consecutive extensions.")] = 1,
    owner: Annotated[
        str | None, typer.Option("--user", help="Username of the employee (only with --count 1).")
    ] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create SIP accounts with generated passwords (printed once)."""
    from pomelo.pbx.schemas import SipAccountBulkCreate, SipAccountCreate

    settings = _settings(config, database_url=database_url)
    body = _validate(SipAccountBulkCreate, first_extension=first, count=count)
    if owner is not None and count != 1:
        err.print("[red]error:[/red] --user needs --count 1")
        raise typer.Exit(2)

    async def work(platform: Any, system: Any) -> list[dict[str, Any]]:
        if owner is None:
            created: list[dict[str, Any]] = await platform.pbx.bulk_create_accounts(
                system, body.first_extension, body.count
            )
            return created
        users, _ = await platform.directory.list_users(system, limit=1, offset=0, query=owner)
        match = [u for u in users if u["username"] == owner]
        if not match:
            raise ConfigError(f"no user {owner!r} in tenant {tenant!r}")
        one = SipAccountCreate(extension=body.first_extension, user_id=match[0]["id"])
        return [await platform.pbx.create_account(system, one)]

    created = _run(settings, _tenant_work(tenant, work))
    table = Table(title="SIP accounts (passwords are shown only now)")
    for column in ("extension", "domain", "password"):
        table.add_column(column)
    for account in created:
        table.add_row(account["extension"], account["domain"], account["password"])
    out.print(table)


@pbx_app.command("account-list")
def pbx_account_list(
    tenant: TenantOpt, config: ConfigOpt = None, database_url: DbOpt = None
) -> None:
    """List SIP accounts with their registration counts."""
    settings = _settings(config, database_url=database_url)

    async def work(platform: Any, system: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await platform.pbx.list_accounts(system, limit=500, offset=0)
        )[0]
        return items

    table = Table(title=f"SIP accounts of {tenant}")
    for column in ("extension", "domain", "enabled", "registered"):
        table.add_column(column)
    for a in _run(settings, _tenant_work(tenant, work)):
        table.add_row(a["extension"], a["domain"], str(a["enabled"]), str(a["registered_contacts"]))
    out.print(table)


@pbx_app.command("trunk-create")
def pbx_trunk_create(
    tenant: TenantOpt,
    name: str,
    host: Annotated[str, typer.Option(help="Provider host or IP.")],
    kind: Annotated[str, typer.Option(help="peer (by address) or register.")] = "peer",
    port: Annotated[int, typer.Option(help="Provider port.")] = 5060,
    transport: Annotated[str, typer.Option(help="udp, tcp or tls.")] = "udp",
    inbound_cidr: Annotated[
        list[str] | None, typer.Option(help="Source network allowed to send calls (repeatable).")
    ] = None,
    username: Annotated[str | None, typer.Option(help="Registration user.")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="POMELO_TRUNK_PASSWORD", help="Registration password.")
    ] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a trunk."""
    from pomelo.pbx.schemas import TrunkCreate

    settings = _settings(config, database_url=database_url)
    body = _validate(
        TrunkCreate,
        name=name,
        kind=kind,
        host=host,
        port=port,
        transport=transport,
        inbound_cidrs=inbound_cidr or [],
        username=username,
        password=password,
    )

    async def work(platform: Any, system: Any) -> dict[str, Any]:
        created: dict[str, Any] = await platform.pbx.create_trunk(system, body)
        return created

    trunk = _run(settings, _tenant_work(tenant, work))
    out.print(f"trunk {trunk['name']} created (id {trunk['id']})")


@pbx_app.command("number-create")
def pbx_number_create(
    tenant: TenantOpt,
    number: str,
    route: Annotated[
        str,
        typer.Option(help="hangup, or KIND:TARGET with KIND employee|extension|group|scenario."),
    ] = "hangup",
    trunk: Annotated[str | None, typer.Option(help="Trunk id.")] = None,
    config: ConfigOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Add a DID and route it."""
    from pomelo.pbx.schemas import NumberCreate

    settings = _settings(config, database_url=database_url)
    kind, _, target = route.partition(":")
    body = _validate(
        NumberCreate, number=number, trunk_id=trunk, route_kind=kind, route_target=target or None
    )

    async def work(platform: Any, system: Any) -> dict[str, Any]:
        created: dict[str, Any] = await platform.pbx.create_number(system, body)
        return created

    row = _run(settings, _tenant_work(tenant, work))
    out.print(f"number {row['number']} created (id {row['id']}), route {row['route_kind']}")


def _validate(model: Any, **values: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as exc:
        for e in exc.errors():
            where = ".".join(map(str, e["loc"]))
            err.print(f"[red]error:[/red] {escape(where)}: {escape(str(e['msg']))}")
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
    db_problems = _check_database(settings)
    problems.extend(db_problems)
    problems.extend(_check_media(settings, with_database=not db_problems))
    for hint in hints:
        out.print(f"[yellow]hint:[/yellow] {escape(hint)}")
    for problem in problems:
        err.print(f"[red]problem:[/red] {escape(problem)}")
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


def _check_media(settings: Settings, *, with_database: bool) -> list[str]:
    """Media files that cannot be played, and voice menus nobody can speak."""
    from pomelo.media.tts import TextToSpeech
    from pomelo.media.wav import MediaFileError, read_prompt

    problems: list[str] = []
    if settings.music_on_hold_file is not None:
        try:
            read_prompt(settings.music_on_hold_file)
        except MediaFileError as exc:
            problems.append(f"music_on_hold_file: {exc}")
    if with_database and not TextToSpeech(settings.data_dir / "tts").available():
        menus = asyncio.run(_count_scenarios(settings))
        if menus:
            problems.append(
                f"{menus} voice menu(s) speak their prompts with espeak-ng, which is not "
                "installed (Debian/Ubuntu: apt-get install espeak-ng)"
            )
    return problems


async def _count_scenarios(settings: Settings) -> int:
    from sqlalchemy import func, select

    from pomelo.pbx.models import Scenario
    from pomelo.storage.db import Database

    db = Database(settings.effective_database_url)
    try:
        async with db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(Scenario)) or 0)
    finally:
        await db.dispose()


def _port_free(host: str, port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            # As the servers do: a port in TIME_WAIT after a restart is free to listen on.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main() -> None:
    app()
