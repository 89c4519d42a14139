"""What the guardrails' thresholds read from tracking: complaints and deliveries per domain, unique human
opens and machine opens of a mailing (contract, Annex 1, "Suspension" (ii)).

`sender.thresholds_monitor.CampaignSignals` is the consumer's port; `envoi.tracking_wiring.TrackingSignals`
adapts these figures to it (tracking does not import sender). Domains are grouped twice, as the thresholds
want: by registrable domain, and by mailbox provider as `mx:<provider>` when the provider is known.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crm.domain import EventType
from crm.schema import events
from guardrails.thresholds import DomainCounters
from tracking import counters
from tracking.counters import UNKNOWN_DOMAIN, Metric
from tracking.domains import provider_of, registrable_domain


@dataclass(frozen=True, slots=True)
class Figures:
    unique_human_opens: int = 0
    machine_opens: int = 0
    domains: tuple[DomainCounters, ...] = ()


def domain_counters(by_domain: Mapping[str, Mapping[str, int]]) -> tuple[DomainCounters, ...]:
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for domain, m in by_domain.items():
        if domain == UNKNOWN_DOMAIN:
            continue
        delivered = max(0, m.get(Metric.SENT, 0) - m.get(Metric.BOUNCED_HARD, 0) - m.get(Metric.BOUNCED_SOFT, 0))
        complaints = m.get(Metric.COMPLAINTS, 0)
        names = [domain]
        provider = provider_of(domain)
        if provider:
            names.append(f"mx:{provider}")
        for name in names:
            groups[name][0] += delivered
            groups[name][1] += complaints
    return tuple(DomainCounters(name, d, c) for name, (d, c) in sorted(groups.items()))


async def campaign_signals(redis: Redis, campaign_id: int) -> Figures:
    """From the Redis counters (called on every dispatch batch: must be cheap)."""
    by_domain = await counters.read(redis, campaign_id)
    total = counters.totals(by_domain)
    return Figures(total[Metric.OPENS_HUMAN], total[Metric.OPENS_MACHINE], domain_counters(by_domain))


async def transactional_signals(engine: Engine, account_id: int, since: datetime) -> Figures:
    """Transactional sends are not tracked (no pixel): complaints and deliveries per domain from the ledger."""

    def load() -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        kinds = {EventType.SENT.value: Metric.SENT, EventType.COMPLAINED.value: Metric.COMPLAINTS,
                 EventType.BOUNCED.value: Metric.BOUNCED_SOFT}
        e = events.c
        with engine.connect() as conn:
            for domain, kind, n in conn.execute(
                    select(e.recipient_domain, e.type, func.count()).where(
                        e.account_id == account_id, e.campaign_id.is_(None), e.created_at >= since,
                        e.type.in_(list(kinds))).group_by(e.recipient_domain, e.type)):
                if domain:
                    out[registrable_domain(domain)][kinds[kind].value] += n
        return {d: dict(m) for d, m in out.items()}

    return Figures(0, 0, domain_counters(await asyncio.to_thread(load)))
