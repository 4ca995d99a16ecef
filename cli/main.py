"""The `mcu` command: run the service, manage its database and keys, the demo, and the API's client verbs
(datasets, models, requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli.client_commands import datasets_app, models_app, requests_app
from cli.erasure_commands import erasures_app
from cli.evidence import audit_app, reports_app, signing_app
from domain.tasks import ALL_QUEUES, CONTROL_QUEUE

app = typer.Typer(help="Machine unlearning service (masked Mode Connectivity Unlearning).", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(reports_app, name="reports")
app.add_typer(audit_app, name="audit")
app.add_typer(signing_app, name="signing-key")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(requests_app, name="requests")
app.add_typer(erasures_app, name="erasures")


def _refuse_example_secrets() -> None:
    """Production must not start with .env.example's secrets: exit naming the settings to change."""
    from settings import ExampleSecretError, get_settings

    try:
        get_settings().check_production_secrets()
    except ExampleSecretError as error:
        typer.echo(f"refusing to start: {error}", err=True)
        raise typer.Exit(2) from error


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Serve the HTTP API (the embedded default creates its schema on first start)."""
    _refuse_example_secrets()
    import uvicorn

    import telemetry
    from settings import get_settings

    settings = get_settings()
    telemetry.configure("mcu-api", settings)  # before the app's engines and clients are made (instrumented)
    from api.app import create_app

    # X-Forwarded-For names the client only when the peer is a trusted proxy: from anyone else (uvicorn by
    # default trusts 127.0.0.1) it would let a client pick its own address, and so its rate limit.
    proxies = settings.trusted_proxies
    uvicorn.run(
        create_app(),
        host=host,
        port=port,
        log_config=None,  # uvicorn's loggers propagate to the one handler telemetry set up
        log_level=settings.log_level.lower(),
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the schema migrations to MCU_DATABASE_URL (or the embedded SQLite file)."""
    _refuse_example_secrets()
    from migrations.runner import upgrade
    from settings import get_settings

    settings = get_settings()
    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, revision)
    typer.echo(f"database at revision {revision}")


def session_factory() -> Any:  # a sessionmaker; imports stay lazy, as everywhere in the CLI
    """The service's database, for the commands that manage it directly. A missing embedded database or an
    unreachable server ends the command with one line saying what to do, not a traceback."""
    from sqlalchemy import make_url, text
    from sqlalchemy.exc import DBAPIError

    from models import make_engine, make_session_factory
    from settings import get_settings

    settings = get_settings()
    url = make_url(settings.resolved_database_url)
    if settings.is_embedded and not Path(url.database or "").exists():
        _fail(
            f"no service database at {url.database}: run this where `mcu serve` keeps its data (the folder "
            "MCU_DATA_DIR names, ./.mcu by default) or set MCU_DATABASE_URL"
        )
    engine = make_engine(settings.resolved_database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as error:
        _fail(
            f"cannot reach the database {url.render_as_string(hide_password=True)}: {' '.join(str(error.orig).split())}"
        )
    return make_session_factory(engine)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., help="A unique name; shown as the actor in audit events."),
    scopes: str = typer.Option(..., help="Comma-separated, e.g. requests:write,requests:read."),
    expires_in_days: int | None = typer.Option(None, min=1, help="The key stops working after this."),
) -> None:
    """Create an API key and print its secret once (only its hash is stored)."""
    from datetime import timedelta

    from sqlalchemy.exc import IntegrityError

    from api.auth import create_api_key
    from models import utcnow

    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        with session_factory()() as session, session.begin():
            _, secret = create_api_key(session, name, [s.strip() for s in scopes.split(",") if s.strip()], expires_at)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scopes") from error
    except IntegrityError as error:
        raise typer.BadParameter(f"a key named {name!r} already exists", param_hint="--name") from error
    typer.echo(secret)


@keys_app.command("list")
def keys_list() -> None:
    """Every key's name, scopes and dates (never a secret: only hashes are stored)."""
    from api.auth import list_api_keys
    from models import utcnow

    now = utcnow()
    with session_factory()() as session:
        for key in list_api_keys(session):
            status = (
                "revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= now else "active"
            )
            expiry = f" expires {key.expires_at:%Y-%m-%d}" if key.expires_at else ""
            typer.echo(f"{key.name}\t{status}\t{','.join(key.scopes)}\tcreated {key.created_at:%Y-%m-%d}{expiry}")


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Revoke a key: it is refused from the next request on."""
    from api.auth import revoke_api_key

    with session_factory()() as session, session.begin():
        if not revoke_api_key(session, name):
            raise typer.BadParameter(f"no active key named {name!r}", param_hint="NAME")
    typer.echo(f"revoked {name}")


@app.command()
def demo(
    url: str | None = typer.Option(None, help="A running service; default: start one on the embedded default."),
    api_key: str | None = typer.Option(None, envvar="MCU_API_KEY", help="Key for --url (scopes: admin)."),
    forget_class: int = typer.Option(3, help="Digit class to forget."),
    port: int = typer.Option(8765, help="Port of the API the demo starts."),
    report: Path | None = typer.Option(None, help="Also write the signed proof-of-erasure report (JSON) here."),
) -> None:
    """The whole flow over HTTP on sklearn's digits: register, forget a class, pick a point, publish."""
    from cli.demo import demo_command

    demo_command(url, api_key, forget_class, port, report)


@app.command()
def version() -> None:
    """Print the version."""
    from importlib.metadata import version as package_version

    typer.echo(package_version("mcu-service"))


@app.command()
def worker(
    queues: str = typer.Option(",".join(ALL_QUEUES), help="Comma-separated queues to consume."),
    name: str = typer.Option("", help="Worker name (default: mcu@<host>-<pid>)."),
    reconcile: bool = typer.Option(True, help="Run the periodic reconciler in this worker."),
    control_process: bool = typer.Option(
        True,
        help="With both queues: consume the control queue (model checks, clean-up, callback retries) in a second, "
        "CPU-only process, so that none of it waits behind a job.",
    ),
    parent_pid: int | None = typer.Option(None, hidden=True, help="Set on a control process: its worker's pid."),
) -> None:
    """Run one worker (one per GPU: choose it with CUDA_VISIBLE_DEVICES), with its control-queue process."""
    _refuse_example_secrets()
    import os
    import socket
    import sys

    import telemetry
    from settings import get_settings
    from worker.allocator import exec_with_jemalloc

    settings = get_settings()
    if settings.worker_jemalloc:
        exec_with_jemalloc([sys.executable, "-m", "cli", *sys.argv[1:]])
    telemetry.configure("mcu-worker", settings)  # before the engines and clients are made (instrumented)
    from migrations.runner import upgrade
    from worker.celery_app import create_celery
    from worker.control_process import ControlProcess, exit_with_parent
    from worker.metrics import serve_metrics
    from worker.reconciler import start_reconciler

    if settings.is_embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.resolved_database_url)
    import torch

    torch.set_num_threads(settings.torch_threads)
    celery = create_celery(settings)
    serve_metrics(settings)  # MCU_WORKER_METRICS_PORT; none when unset
    reconciler = start_reconciler(celery.mcu_services, settings.reconcile_interval_seconds) if reconcile else None
    hostname = name or f"mcu@{socket.gethostname()}-{os.getpid()}"
    consumed = [queue.strip() for queue in queues.split(",") if queue.strip()]
    control = None
    if control_process and set(ALL_QUEUES) <= set(consumed):  # the control queue goes to a process of its own
        consumed.remove(CONTROL_QUEUE)
        control = ControlProcess(hostname)
        control.start()
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    try:
        celery.worker_main(
            [
                "worker",
                "--pool=solo",  # one task at a time: a job has its device to itself
                "--concurrency=1",
                f"--queues={','.join(consumed)}",
                f"--loglevel={settings.log_level}",
                f"--hostname={hostname}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        if reconciler is not None:  # a warm shutdown lets the round under way finish
            reconciler.stop()
        if control is not None:
            control.stop()
