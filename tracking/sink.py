"""The dispatcher's `OutcomeSink` (a `sender.hooks.OutcomeSink`, matched structurally): per campaign and
recipient domain, counts sent / deferred / failed (hard or soft) in Redis as outcomes reach the ledger."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from crm.domain import MessageStatus
from tracking import counters
from tracking.counters import Metric
from tracking.stats import failure_metric


class DomainCounterSink:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def record(self, batch: Sequence[Any]) -> None:
        """`batch`: `sender.hooks.Recorded` items (outcome, message row, transport result)."""
        totals: Counter[tuple[int, str | None, Metric]] = Counter()  # one HINCRBY per distinct counter, per batch
        for r in batch:
            m, o = r.message, r.outcome
            if not m.get("campaign_id"):
                continue  # transactional sends have no campaign statistics
            if o.status == MessageStatus.SENT:
                metric = Metric.SENT
            elif o.status == MessageStatus.DEFERRED:
                metric = Metric.DEFERRED
            elif o.status == MessageStatus.FAILED:
                metric = failure_metric(o.code, o.enhanced, o.error)
            else:
                continue
            totals[(int(m["campaign_id"]), m.get("recipient_domain"), metric)] += 1
        if not totals:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for (campaign_id, domain, metric), n in totals.items():
                counters.incr(pipe, campaign_id, domain, metric, n)
            await pipe.execute()
