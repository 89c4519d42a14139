"""The `envoi` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

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
