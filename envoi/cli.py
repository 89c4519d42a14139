"""The `envoi` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any  # issue 3

import click

from envoi.settings import ConfigError, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


@click.group()
def main() -> None:
    """Envoi: bulk email and SMS sending engine with deliverability guardrails."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    for noisy in ("alembic", "mail.log", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@main.command()
def run() -> None:
    """Run everything on the embedded defaults (Redis, SQLite, capture inbox, API, workers)."""
    from envoi.runner import run_forever

    run_forever(_settings())


@main.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from envoi.app import create_app
    from envoi.composition import api_services

    settings = _settings()
    app = create_app(settings, api_services(settings))
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                loop="uvloop" if _has("uvloop") else "asyncio", http="httptools" if _has("httptools") else "h11")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@main.command()
@click.option("--index", default=0, help="worker number (its metrics port is ENVOI_METRICS_PORT + index)")
def worker(index: int) -> None:
    """Run one dispatcher worker process."""
    settings = _settings()
    if _has("uvloop"):
        import uvloop

        uvloop.install()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port + index, addr="127.0.0.1")
    asyncio.run(_worker_main(settings))


async def _worker_main(settings: Settings) -> None:
    from envoi.composition import database, make_redis
    from envoi.worker import Worker, build_transport

    engine = database(settings, run_migrations=False)
    redis = make_redis(settings)
    w = Worker(settings, engine, redis, build_transport(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(w.run())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        w.stop()  # stop claiming; in-flight batches finish (drain) until the deadline
        try:
            await asyncio.wait_for(task, settings.drain_deadline_s)
        except TimeoutError:
            logging.getLogger(__name__).warning("drain deadline reached: unfinished batches stay queued")
    waiter.cancel()
    await redis.aclose()
    engine.dispose()


@main.command()
def migrate() -> None:
    """Bring the database schema to the latest version."""
    from envoi.composition import database

    database(_settings()).dispose()
    click.echo("database is up to date")


@main.group()
def accounts() -> None:
    """Manage customer accounts."""


@accounts.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print a JSON object")
def accounts_create(name: str, as_json: bool) -> None:
    """Create an account and print its API key (shown once; only its hash is stored)."""
    from crm.accounts import create_account
    from envoi.composition import database

    engine = database(_settings())
    with engine.begin() as conn:
        account_id, key = create_account(conn, name)
    engine.dispose()
    if as_json:
        click.echo(json.dumps({"account_id": account_id, "api_key": key}))
    else:
        click.echo(f"account {account_id} created\nAPI key (shown once): {key}")


# --- issue 3: suspension by hand (the same service functions as the admin API) ------------------------------------
def _account_services() -> tuple[Settings, Any, Any]:
    from envoi.composition import database, make_redis

    settings = _settings()
    return settings, database(settings, run_migrations=False), make_redis(settings)


def _run_account(fn: Any) -> Any:
    from guardrails.account_state import InvalidTransition
    from sender.accounts_service import AccountNotFound

    settings, engine, redis = _account_services()

    async def go() -> Any:
        try:
            return await fn(settings, engine, redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(go())
    except (AccountNotFound, InvalidTransition, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()


@accounts.command("suspend")
@click.argument("account_id", type=int)
@click.option("--note", required=True, help="why (kept in the audit log and sent in the webhook)")
@click.option("--reason", default="manual", show_default=True,
              type=click.Choice(["manual", "illegal_use", "non_payment", "failure_rate", "complaint_rate",
                                 "open_rate", "blocklisted"]))
@click.option("--actor", default="ops-cli", show_default=True)
def accounts_suspend(account_id: int, note: str, reason: str, actor: str) -> None:
    """Suspend an account: its messages are held (not dropped) until reinstatement."""
    from guardrails.account_state import SuspensionReason
    from sender import accounts_service

    out = _run_account(lambda settings, engine, redis: accounts_service.suspend(
        engine, redis, account_id, SuspensionReason(reason), {"by": actor}, actor=actor, note=note))
    click.echo(json.dumps({"account_id": account_id, "status": out.status.value, "changed": out.changed,
                           "paused_campaigns": out.campaigns}))


@accounts.command("reinstate")
@click.argument("account_id", type=int)
@click.option("--note", required=True, help="why the account may send again (required)")
@click.option("--actor", default="ops-cli", show_default=True)
def accounts_reinstate(account_id: int, note: str, actor: str) -> None:
    """Reinstate a suspended account: held messages are re-enqueued, paused campaigns resume."""
    from sender import accounts_service
    from sender.queue import DispatchQueue

    out = _run_account(lambda settings, engine, redis: accounts_service.reinstate(
        engine, redis, DispatchQueue(redis, settings.partitions, "cli"), account_id, actor=actor, note=note))
    click.echo(json.dumps({"account_id": account_id, "status": out.status.value,
                           "released_messages": out.released, "resumed_campaigns": out.campaigns}))


@accounts.command("show")
@click.argument("account_id", type=int)
def accounts_show(account_id: int) -> None:
    """Status, reason, evidence, billing state, held messages and the audit trail of an account (JSON)."""
    from sender import accounts_service

    async def show(settings: Settings, engine: Any, redis: Any) -> Any:
        return accounts_service.show(engine, account_id)

    click.echo(json.dumps(_run_account(show), indent=2, default=str))


@main.group()
def queue() -> None:
    """Inspect and repair the dispatch queue."""


@queue.command("reconcile")
def queue_reconcile() -> None:
    """Re-enqueue every pending ledger message (after Redis lost its data)."""
    from envoi.composition import database, make_redis
    from sender.queue import DispatchQueue
    from sender.reconcile import reconcile

    settings = _settings()

    async def go() -> int:
        redis = make_redis(settings)
        try:
            return await reconcile(database(settings), DispatchQueue(redis, settings.partitions, "cli"))
        finally:
            await redis.aclose()

    click.echo(f"{asyncio.run(go())} pending messages re-enqueued")


@main.command()
@click.option("--contacts", default=10_000, show_default=True, help="number of contacts to import and mail")
@click.option("--workers", default=None, type=int, help="worker processes (default: ENVOI_WORKERS)")
def demo(contacts: int, workers: int | None) -> None:
    """A scripted tour on the embedded defaults: account, import, template, campaign, send, statistics."""
    from envoi.demo import run_demo

    sys.exit(run_demo(contacts, workers))


try:
    from tracking.bounces.cli import bounces

    main.add_command(bounces)
except ImportError:  # pragma: no cover - the bounce parser ships with the tracking package
    pass

from envoi.domains_cli import domains  # noqa: E402  (issue 7: `envoi domains check DOMAIN`)

main.add_command(domains)

# issue 4: the inbound feedback listener and campaign statistics
from envoi.tracking_cli import campaigns as _campaigns  # noqa: E402
from envoi.tracking_cli import inbound as _inbound  # noqa: E402

main.add_command(_inbound)
main.add_command(_campaigns)

# issue 5: `envoi retention purge [--now ISO]`, `envoi retention export-account ID --out FILE`
from envoi.retention_cli import retention as _retention  # noqa: E402

main.add_command(_retention)
