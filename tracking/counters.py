"""Per-campaign, per-recipient-domain counters in Redis: the fast path for statistics and the guardrails.

One hash per campaign (`crm.keys.campaign_domain_counters`), field `<metric>|<registrable domain>`; campaign
totals are the sum over domains. Counters are a cache of the SQL events (the truth): `tracking.stats` computes
the same figures from the ledger and `envoi campaigns reconcile-stats` compares or repairs them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from crm import keys
from tracking.domains import registrable_domain


class Metric(StrEnum):
    SENT = "sent"  # accepted by the next hop
    DEFERRED = "deferred"  # transient failures (each deferral)
    FAILED_HARD = "failed_hard"  # synchronous permanent failure, hard class
    FAILED_SOFT = "failed_soft"  # synchronous failure of any other class, or retries exhausted
    BOUNCED_HARD = "bounced_hard"  # asynchronous DSN, hard
    BOUNCED_SOFT = "bounced_soft"  # asynchronous DSN, soft
    COMPLAINTS = "complaints"
    OPENS_HUMAN = "opens_human"  # unique per message
    OPENS_MACHINE = "opens_machine"  # unique per message
    CLICKS = "clicks"  # unique per message (human)
    CLICKS_SCANNER = "clicks_scanner"  # unique per message
    UNSUBSCRIBES = "unsubscribes"
    OPENS_TOTAL = "opens_total"  # every pixel hit (also with per-person tracking off)
    CLICKS_TOTAL = "clicks_total"


UNKNOWN_DOMAIN = "-"  # aggregate-only hits (per-person tracking off): no recipient known


def field(metric: Metric, domain: str | None) -> str:
    return f"{metric.value}|{registrable_domain(domain) if domain else UNKNOWN_DOMAIN}"


def incr(pipe: Any, campaign_id: int, domain: str | None, metric: Metric, n: int = 1) -> None:
    """Queue one increment on a Redis pipeline (the caller executes it)."""
    pipe.hincrby(keys.campaign_domain_counters(campaign_id), field(metric, domain), n)


async def add(redis: Redis, campaign_id: int, domain: str | None, metric: Metric, n: int = 1) -> None:
    await redis.hincrby(keys.campaign_domain_counters(campaign_id), field(metric, domain), n)


def parse(raw: Mapping[Any, Any]) -> dict[str, dict[str, int]]:
    """Hash contents → {domain: {metric: n}}; unknown metric names (a newer writer) are kept as they are."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        metric, _, domain = name.partition("|")
        out[domain or UNKNOWN_DOMAIN][metric] = int(v)
    return dict(out)


async def read(redis: Redis, campaign_id: int) -> dict[str, dict[str, int]]:
    return parse(await redis.hgetall(keys.campaign_domain_counters(campaign_id)))


async def replace(redis: Redis, campaign_id: int, by_domain: Mapping[str, Mapping[str, int]]) -> None:
    """Overwrite the counters with figures computed from the ledger (reconciliation repair)."""
    key = keys.campaign_domain_counters(campaign_id)
    mapping: dict[Any, Any] = {
        f"{m}|{d}": n for d, metrics in by_domain.items() for m, n in metrics.items() if n}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if mapping:
            pipe.hset(key, mapping=mapping)
        await pipe.execute()


def totals(by_domain: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {m.value: 0 for m in Metric}
    for metrics in by_domain.values():
        for m, n in metrics.items():
            out[m] = out.get(m, 0) + n
    return out
