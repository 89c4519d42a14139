"""Issue 4 commands: `envoi inbound` (the DSN / ARF listener), `envoi campaigns stats ID`,
`envoi campaigns reconcile-stats ID [--repair]`."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Any

import click

from envoi.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


@click.command("inbound")
def inbound() -> None:
    """Run the inbound SMTP listener (ENVOI_INBOUND_SMTP_HOST:ENVOI_INBOUND_SMTP_PORT): DSNs at the VERP
    return-paths, ARF reports at ENVOI_FEEDBACK_MAILBOX, and the other slices' mailboxes."""
    settings = _settings()
    asyncio.run(_inbound_main(settings))


async def _inbound_main(settings: Settings) -> None:
    from envoi.composition import database, inbound_router, make_redis
    from tracking.inbound import InboundServer

    engine = database(settings, run_migrations=False)
    redis = make_redis(settings)
    router = inbound_router(settings, engine, redis)
    server = await InboundServer(router, settings.inbound_smtp_host, settings.inbound_smtp_port).start()
    log.info("inbound SMTP listening on %s:%s for %s", settings.inbound_smtp_host, server.port,
             ", ".join(router.names))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await redis.aclose()
        engine.dispose()


campaigns = click.Group("campaigns", help="Campaign statistics.")

_COLUMNS = (("domain", "domain"), ("provider", "provider"), ("sent", "sent"), ("delivered", "delivered"),
            ("deferred", "deferred"), ("hard", "hard_bounces"), ("soft", "soft_bounces"),
            ("complaints", "complaints"), ("opens", "opens_human"), ("machine", "opens_machine"),
            ("clicks", "clicks"), ("unsub", "unsubscribes"))


def table(doc: dict[str, Any]) -> str:
    rows = [[str(r.get(key) if r.get(key) is not None else "") for _, key in _COLUMNS] for r in doc["domains"]]
    total = doc["totals"]
    rows.append(["TOTAL", ""] + [str(total.get(key, 0)) for _, key in _COLUMNS[2:]])
    head = [title for title, _ in _COLUMNS]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(lines)


def _run(coro_factory: Any) -> Any:
    from envoi.composition import database, make_redis

    settings = _settings()

    async def go() -> Any:
        engine = database(settings, run_migrations=False)
        redis = make_redis(settings)
        try:
            return await coro_factory(engine, redis)
        finally:
            await redis.aclose()
            engine.dispose()

    return asyncio.run(go())


@campaigns.command("stats")
@click.argument("campaign_id", type=int)
@click.option("--source", type=click.Choice(["counters", "ledger"]), default="counters", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the JSON document instead of a table")
def stats(campaign_id: int, source: str, as_json: bool) -> None:
    """Per-domain statistics of a campaign: sent, delivered, deferred, bounces, complaints, opens, clicks."""
    from tracking.stats import campaign_domain_stats

    doc = _run(lambda engine, redis: campaign_domain_stats(engine, redis, campaign_id, source))
    click.echo(json.dumps(doc) if as_json else table(doc))


@campaigns.command("reconcile-stats")
@click.argument("campaign_id", type=int)
@click.option("--repair", is_flag=True, help="rewrite the Redis counters from the ledger")
def reconcile_stats(campaign_id: int, repair: bool) -> None:
    """Show where the Redis counters and the ledger's events disagree (exit status 1 if they do)."""
    from tracking.stats import reconcile

    diffs = _run(lambda engine, redis: reconcile(engine, redis, campaign_id, repair))
    for d in diffs:
        click.echo(f"{d['domain']:30} {d['metric']:16} counters={d['counters']:>8} ledger={d['ledger']:>8}")
    if not diffs:
        click.echo("counters and ledger agree")
    elif repair:
        click.echo(f"{len(diffs)} differences repaired from the ledger")
    else:
        raise SystemExit(1)
