"""Campaign statistics per recipient domain, from the SQL events (the truth) and from the Redis counters (the
fast path), and their reconciliation.

Definitions (the same on both sides, so that they can be compared):
- sent / deferred: `sent` / `deferred` events (a deferral each time); failed_hard / failed_soft: `failed`
  events split by the shared reply policy (`guardrails.bounce_policy.classify_reply`) on their code, status and
  text; bounced_hard / bounced_soft / complaints: asynchronous reports (`bounced` / `complained` events, one per
  message at most); delivered = sent − asynchronous bounces;
- opens_human / opens_machine / clicks / clicks_scanner: distinct messages with such an event; hits without a
  message (per-person tracking off) are counted each, under domain "-"; opens_total / clicks_total: every hit;
- unsubscribes: the campaign's unsubscribe actions not undone (issue 5's `unsubscribe_actions`), read from SQL on
  both sides (low volume; no second copy to drift).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from crm.domain import EventType
from crm.schema import events, messages, unsubscribe_actions
from guardrails.bounce_policy import FailureClass, classify_reply
from tracking.counters import UNKNOWN_DOMAIN, Metric, totals
from tracking.domains import provider_of, registrable_domain

_PLAIN = {EventType.SENT.value: Metric.SENT, EventType.DEFERRED.value: Metric.DEFERRED,
          EventType.COMPLAINED.value: Metric.COMPLAINTS}
LEDGER_ONLY = frozenset({Metric.UNSUBSCRIBES.value})
_ENGAGEMENT = {EventType.OPENED.value: Metric.OPENS_HUMAN, EventType.OPENED_MACHINE.value: Metric.OPENS_MACHINE,
               EventType.CLICKED.value: Metric.CLICKS, EventType.CLICKED_SCANNER.value: Metric.CLICKS_SCANNER}
_TOTAL = {EventType.OPENED.value: Metric.OPENS_TOTAL, EventType.OPENED_MACHINE.value: Metric.OPENS_TOTAL,
          EventType.CLICKED.value: Metric.CLICKS_TOTAL, EventType.CLICKED_SCANNER.value: Metric.CLICKS_TOTAL}


def failure_metric(code: int | None, status: str | None, text: str | None) -> Metric:
    """A synchronous final failure is hard only when the reply policy says the address is bad."""
    reply = classify_reply(code, status, text or "")
    return Metric.FAILED_HARD if reply.failure_class is FailureClass.HARD else Metric.FAILED_SOFT


def _domain(raw: str | None) -> str:
    return registrable_domain(raw) if raw else UNKNOWN_DOMAIN


def ledger_counts(conn: Connection, campaign_id: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    e = events.c
    for domain, kind, n in conn.execute(
            select(e.recipient_domain, e.type, func.count()).where(
                e.campaign_id == campaign_id, e.type.in_(list(_PLAIN) + list(_TOTAL)))
            .group_by(e.recipient_domain, e.type)):
        if kind in _PLAIN:
            out[_domain(domain)][_PLAIN[kind].value] += n
        else:
            out[_domain(domain)][_TOTAL[kind].value] += n
    for domain, kind, distinct, anonymous in conn.execute(
            select(e.recipient_domain, e.type, func.count(func.distinct(e.message_id)),
                   func.count() - func.count(e.message_id))
            .where(e.campaign_id == campaign_id, e.type.in_(list(_ENGAGEMENT)))
            .group_by(e.recipient_domain, e.type)):
        out[_domain(domain)][_ENGAGEMENT[kind].value] += int(distinct) + int(anonymous)
    for domain, kind, data in conn.execute(
            select(e.recipient_domain, e.type, e.data).where(
                e.campaign_id == campaign_id, e.type.in_([EventType.FAILED.value, EventType.BOUNCED.value]))):
        d: Mapping[str, Any] = data or {}
        if kind == EventType.BOUNCED.value:
            metric = Metric.BOUNCED_HARD if d.get("kind") == "hard" else Metric.BOUNCED_SOFT
        else:
            metric = failure_metric(d.get("code"), d.get("status"), d.get("error"))
        out[_domain(domain)][metric.value] += 1
    for domain, n in unsubscribe_counts(conn, campaign_id).items():
        out[domain][Metric.UNSUBSCRIBES.value] += n
    return {dom: dict(m) for dom, m in out.items()}


def unsubscribe_counts(conn: Connection, campaign_id: int) -> dict[str, int]:
    u = unsubscribe_actions.c
    out: dict[str, int] = defaultdict(int)
    for domain, n in conn.execute(
            select(messages.c.recipient_domain, func.count())
            .select_from(unsubscribe_actions.outerjoin(messages, messages.c.id == u.message_id))
            .where(u.campaign_id == campaign_id, u.undone_at.is_(None)).group_by(messages.c.recipient_domain)):
        out[_domain(domain)] += int(n)
    return dict(out)


def view(by_domain: Mapping[str, Mapping[str, int]], providers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The statistics document: totals and one row per registrable domain (with provider and delivered).

    `providers`: domain → provider from the MX (`tracking.mx_providers`); otherwise well-known domains only."""
    rows = []
    for domain, metrics in sorted(by_domain.items(), key=lambda kv: (-kv[1].get("sent", 0), kv[0])):
        provider = (providers or {}).get(domain) or (provider_of(domain) if domain != UNKNOWN_DOMAIN else None)
        row: dict[str, Any] = {"domain": domain, "provider": provider}
        row.update({m.value: int(metrics.get(m.value, 0)) for m in Metric})
        row["hard_bounces"] = row[Metric.FAILED_HARD] + row[Metric.BOUNCED_HARD]
        row["soft_bounces"] = row[Metric.FAILED_SOFT] + row[Metric.BOUNCED_SOFT]
        row["delivered"] = max(0, row[Metric.SENT] - row[Metric.BOUNCED_HARD] - row[Metric.BOUNCED_SOFT])
        rows.append(row)
    total: dict[str, Any] = totals(by_domain)
    total["hard_bounces"] = total[Metric.FAILED_HARD] + total[Metric.BOUNCED_HARD]
    total["soft_bounces"] = total[Metric.FAILED_SOFT] + total[Metric.BOUNCED_SOFT]
    total["delivered"] = max(0, total[Metric.SENT] - total[Metric.BOUNCED_HARD] - total[Metric.BOUNCED_SOFT])
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["provider"]:
            p = groups.setdefault(row["provider"], defaultdict(int))
            for k, v in row.items():
                if isinstance(v, int):
                    p[k] += v
    return {"totals": total, "domains": rows, "providers": {k: dict(v) for k, v in sorted(groups.items())}}


def differences(counters: Mapping[str, Mapping[str, int]], ledger: Mapping[str, Mapping[str, int]]
                ) -> list[dict[str, Any]]:
    """Every (domain, metric) where Redis and the ledger disagree (metrics kept only in SQL are not compared)."""
    out = []
    for domain in sorted(set(counters) | set(ledger)):
        c, s = counters.get(domain, {}), ledger.get(domain, {})
        for metric in sorted((set(c) | set(s)) - LEDGER_ONLY):
            if int(c.get(metric, 0)) != int(s.get(metric, 0)):
                out.append({"domain": domain, "metric": metric, "counters": int(c.get(metric, 0)),
                            "ledger": int(s.get(metric, 0))})
    return out


async def campaign_domain_stats(engine: Any, redis: Any, campaign_id: int, source: str = "counters",
                                mx: Any = None) -> dict[str, Any]:
    """The statistics document from the Redis counters (fast) or the ledger (the truth)."""
    import asyncio

    from tracking import counters as redis_counters

    if source == "ledger":
        def load() -> dict[str, dict[str, int]]:
            with engine.connect() as conn:
                return ledger_counts(conn, campaign_id)

        by_domain = await asyncio.to_thread(load)
    else:
        def unsubscribes() -> dict[str, int]:
            with engine.connect() as conn:
                return unsubscribe_counts(conn, campaign_id)

        by_domain = await redis_counters.read(redis, campaign_id)
        for domain, n in (await asyncio.to_thread(unsubscribes)).items():
            by_domain.setdefault(domain, {})[Metric.UNSUBSCRIBES.value] = n
    providers = await mx.providers(by_domain) if mx is not None else None  # a tracking.mx_providers.MxProviders
    return {"campaign_id": campaign_id, "source": source, **view(by_domain, providers)}


async def reconcile(engine: Any, redis: Any, campaign_id: int, repair: bool = False) -> list[dict[str, Any]]:
    """Compare the Redis counters with the ledger; with `repair`, rewrite the counters from the ledger."""
    import asyncio

    from tracking import counters as redis_counters

    def load() -> dict[str, dict[str, int]]:
        with engine.connect() as conn:
            return ledger_counts(conn, campaign_id)

    truth = await asyncio.to_thread(load)
    diffs = differences(await redis_counters.read(redis, campaign_id), truth)
    if diffs and repair:
        await redis_counters.replace(redis, campaign_id, {
            d: {m: n for m, n in metrics.items() if m not in LEDGER_ONLY} for d, metrics in truth.items()})
    return diffs
