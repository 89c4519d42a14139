"""Recording opens and clicks cheaply: the request appends to a bounded in-process buffer and returns; a
background task flushes it in batches — one SQL transaction (load the messages, insert the events) and one
Redis pipeline (first-time bits, counters) per batch.

Why not write per request: the pixel is the hottest endpoint (every image load of every recipient). Batching
keeps it near the speed of a bare GIF server (bench/tracking.py). The price is a window of at most one flush
interval of hits lost if the API process is killed (a graceful stop flushes everything); a hit whose SQL
write fails stays buffered and is retried.

SQL events are the truth (every hit, typed `opened`/`opened_machine`/`clicked`/`clicked_scanner`); the Redis
counters count unique messages (a `seen` bitmap per campaign and kind decides first times).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from crm import keys
from crm.db import as_utc
from crm.domain import EventType
from crm.schema import events, messages
from tracking import counters
from tracking.counters import Metric
from tracking.machine import MachineReason, MachineRules, timing_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Hit:
    click: bool  # False: an open
    account_id: int
    message_id: int  # 0: per-person tracking off
    campaign_id: int
    at: float  # epoch seconds
    machine: MachineReason | None = None
    link_index: int | None = None


_KIND = {  # (click, machine) → (event type, unique metric, seen-bitmap name)
    (False, False): (EventType.OPENED, Metric.OPENS_HUMAN, "oh"),
    (False, True): (EventType.OPENED_MACHINE, Metric.OPENS_MACHINE, "om"),
    (True, False): (EventType.CLICKED, Metric.CLICKS, "ch"),
    (True, True): (EventType.CLICKED_SCANNER, Metric.CLICKS_SCANNER, "cs"),
}


class EngagementRecorder:
    def __init__(self, engine: Engine, redis: Redis, rules: MachineRules = MachineRules(),
                 interval_s: float = 0.05, batch: int = 2000, max_buffered: int = 200_000) -> None:
        self.engine = engine
        self.redis = redis
        self.rules = rules
        self.interval_s = interval_s
        self.batch = batch
        self.max_buffered = max_buffered
        self._buffer: list[Hit] = []
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.recorded = 0  # hits written to SQL (for the benchmark and tests)

    # -- hot path --------------------------------------------------------------------------------------------
    def add(self, hit: Hit) -> None:
        self._buffer.append(hit)
        if len(self._buffer) >= self.max_buffered:
            self._room.clear()

    async def backpressure(self) -> None:
        """Awaited by the endpoints: blocks only when the buffer is full (SQL slower than the traffic)."""
        if not self._room.is_set():
            await self._room.wait()

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self, timeout_s: float = 10.0) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._buffer and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self.flush()
        if self._buffer:
            log.error("tracking: %d hits not recorded at shutdown", len(self._buffer))

    async def _run(self) -> None:
        while not self._stopping:
            try:
                if self._buffer:
                    await self.flush()
            except Exception as exc:  # SQL or Redis down: keep the hits and retry
                log.warning("tracking flush failed: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.interval_s)

    async def flush(self) -> int:
        """Record up to one batch; returns the number of hits recorded."""
        if not self._buffer:
            return 0
        hits = self._buffer[: self.batch]
        meta = await asyncio.to_thread(self._write_sql, hits)
        del self._buffer[: len(hits)]  # only after SQL accepted them
        self.recorded += len(hits)
        if len(self._buffer) < self.max_buffered:
            self._room.set()
        try:
            await self._count(meta)
        except Exception as exc:  # the events are in SQL; reconciliation repairs the counters
            log.warning("tracking counters not updated (%d hits): %s", len(meta), exc)
        return len(hits)

    # -- SQL (in a thread) ----------------------------------------------------------------------------------
    def _write_sql(self, hits: Sequence[Hit]) -> list[tuple[Hit, dict[str, Any] | None]]:
        ids = sorted({h.message_id for h in hits if h.message_id})
        with self.engine.begin() as conn:
            known: dict[int, dict[str, Any]] = {}
            for i in range(0, len(ids), 900):
                for row in conn.execute(select(
                        messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.contact_id,
                        messages.c.recipient_domain, messages.c.sent_at).where(messages.c.id.in_(ids[i:i + 900]))):
                    known[row.id] = dict(row._mapping)
            out: list[tuple[Hit, dict[str, Any] | None]] = []
            rows = []
            for h in hits:
                m = known.get(h.message_id)
                if m is not None and (m["account_id"] != h.account_id or m["campaign_id"] != h.campaign_id):
                    m = None  # a token whose ids disagree with the ledger: count it only in aggregate
                if h.machine is None and m is not None and m["sent_at"] is not None:
                    sent = as_utc(m["sent_at"])
                    assert sent is not None
                    h = replace(h, machine=timing_reason(h.at - sent.timestamp(), self.rules))
                event, _, _ = _KIND[(h.click, h.machine is not None)]
                data: dict[str, Any] = {}
                if h.machine is not None:
                    data["machine"] = h.machine.value
                if h.link_index is not None:
                    data["link"] = h.link_index
                rows.append({
                    "account_id": h.account_id, "message_id": m["id"] if m else None,
                    "campaign_id": h.campaign_id, "contact_id": m["contact_id"] if m else None,
                    "type": event.value, "recipient_domain": m["recipient_domain"] if m else None,
                    "data": data or None, "created_at": datetime.fromtimestamp(h.at, UTC),
                })
                out.append((h, m))
            if rows:
                conn.execute(insert(events), rows)
        return out

    # -- Redis -----------------------------------------------------------------------------------------------
    async def _count(self, recorded: Sequence[tuple[Hit, dict[str, Any] | None]]) -> None:
        firsts: dict[tuple[int, str, int], tuple[Hit, dict[str, Any]]] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for h, m in recorded:
                counters.incr(pipe, h.campaign_id, m["recipient_domain"] if m else None,
                              Metric.CLICKS_TOTAL if h.click else Metric.OPENS_TOTAL)
                if m is not None:
                    name = _KIND[(h.click, h.machine is not None)][2]
                    firsts.setdefault((h.campaign_id, name, h.message_id), (h, m))
            order = list(firsts)
            for cid, name, mid in order:
                key, bit = keys.seen_bitmap(cid, name, mid)
                pipe.setbit(key, bit, 1)
            results = await pipe.execute()
        previous = results[len(results) - len(order):]
        async with self.redis.pipeline(transaction=False) as pipe:
            for (cid, name, mid), was_set in zip(order, previous, strict=True):
                if not was_set:
                    h, m = firsts[(cid, name, mid)]
                    counters.incr(pipe, cid, m["recipient_domain"], _KIND[(h.click, h.machine is not None)][1])
            await pipe.execute()
