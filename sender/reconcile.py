"""Rebuild the queue from the ledger when Redis lost its data (restart without persistence, failover, flush).

The ledger is the source of truth: every message still `queued` or `deferred` there is put back on the queue
(deferred ones on the retry schedule at their due time). Copies of messages that are in fact still queued in
Redis are harmless: the `claimed` guard drops them. The epoch key tells whether Redis still holds the queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm import keys
from crm.db import as_utc
from crm.domain import MessageKind, MessageStatus
from crm.schema import messages
from sender.queue import DispatchQueue, QueueItem

log = logging.getLogger(__name__)


async def epoch_present(redis: Redis) -> bool:
    return bool(await redis.exists(keys.epoch()))


async def reconcile(engine: Engine, queue: DispatchQueue, batch: int = 5000) -> int:
    """Re-enqueue every pending ledger message; returns how many. Safe to run while workers run."""
    await queue.ensure_groups()
    after, total = 0, 0
    while True:
        rows = await asyncio.to_thread(_pending, engine, after, batch)
        if not rows:
            break
        now_items, later = [], []
        for mid, account_id, campaign_id, kind, status, next_at in rows:
            item = QueueItem(mid, account_id, campaign_id or 0, kind == MessageKind.TRANSACTIONAL)
            due = as_utc(next_at)
            if status == MessageStatus.DEFERRED and due is not None and due.timestamp() > time.time():
                later.append((item, due.timestamp()))
            else:
                now_items.append(item)
        await queue.enqueue(now_items)
        await queue.schedule(later)
        total += len(rows)
        after = rows[-1][0]
    return total


def _pending(engine: Engine, after: int, limit: int) -> list[tuple]:  # type: ignore[type-arg]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.kind,
                   messages.c.status, messages.c.next_attempt_at)
            .where(messages.c.id > after,
                   messages.c.status.in_([MessageStatus.QUEUED.value, MessageStatus.DEFERRED.value]))
            .order_by(messages.c.id).limit(limit)
        )]


async def ensure_epoch(engine: Engine, queue: DispatchQueue) -> bool:
    """If Redis lost the queue, rebuild it (one process at a time). True when a reconciliation ran."""
    redis = queue.redis
    if await epoch_present(redis):
        return False
    token = uuid.uuid4().hex
    if not await redis.set(keys.reconcile_lock(), token, nx=True, px=120_000):
        return False
    try:
        if await epoch_present(redis):
            return False
        count = await reconcile(engine, queue)
        await redis.set(keys.epoch(), str(time.time()))
        log.warning("Redis held no queue: %d pending messages re-enqueued from the ledger", count)
        return True
    finally:
        if (await redis.get(keys.reconcile_lock())) in (token, token.encode()):
            await redis.delete(keys.reconcile_lock())


__all__ = ["ensure_epoch", "epoch_present", "reconcile"]
