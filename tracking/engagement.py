"""Recording opens and clicks cheaply, in two stages (the pixel is the hottest endpoint: bench/tracking.py).

1. API process (`HitBuffer`): the request appends the hit to an in-process buffer and returns; every
   `interval_s` the buffer goes to Redis as ONE stream entry (`crm.keys.tracking_hits`, hits packed in one
   field), so the API's cost per hit is a few microseconds. Only a flush interval of hits can be lost if the
   process is killed (a graceful stop flushes everything); a flush that fails keeps the hits and retries.
2. Worker chore (`EngagementConsumer`): reads entries with a consumer group, writes every hit as an SQL event
   (`opened` / `opened_machine` / `clicked` / `clicked_scanner`, the truth), updates the counters (unique per
   message through a `seen` bitmap per campaign and kind), then acknowledges (at-least-once: a crash between
   the SQL commit and the XACK replays the entry — uniques are unaffected, `*_total` counts it twice).

Machine detection: the request's own signs are judged in the API (HEAD, scanner user agents, Apple MPP
proxies); timing ("within seconds of the hand-off") needs the ledger's `sent_at` and is judged by the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
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

_SEEN_CACHE = 500_000  # ints: ~30 MB at most, then forgotten (Redis stays the judge of first times)
_REASONS = {r.value: r for r in MachineReason}


@dataclass(frozen=True, slots=True)
class Hit:
    click: bool  # False: an open
    account_id: int
    message_id: int  # 0: per-person tracking off
    campaign_id: int
    at: float  # epoch seconds
    machine: MachineReason | None = None
    link_index: int | None = None

    def pack(self) -> str:
        return (f"{'c' if self.click else 'o'},{self.account_id},{self.message_id},{self.campaign_id},"
                f"{self.at:.3f},{self.machine.value if self.machine else ''},"
                f"{'' if self.link_index is None else self.link_index}")

    @staticmethod
    def unpack(text: str) -> Hit | None:
        try:
            kind, account, message, campaign, at, machine, link = text.split(",")
            return Hit(kind == "c", int(account), int(message), int(campaign), float(at),
                       _REASONS.get(machine), int(link) if link else None)
        except ValueError:
            return None


_KIND = {  # (click, machine) → (event type, unique metric, seen-bitmap name)
    (False, False): (EventType.OPENED, Metric.OPENS_HUMAN, "oh"),
    (False, True): (EventType.OPENED_MACHINE, Metric.OPENS_MACHINE, "om"),
    (True, False): (EventType.CLICKED, Metric.CLICKS, "ch"),
    (True, True): (EventType.CLICKED_SCANNER, Metric.CLICKS_SCANNER, "cs"),
}


class HitBuffer:
    """API side: append (synchronous, microseconds), flush to the Redis stream in the background."""

    def __init__(self, redis: Redis, interval_s: float = 0.02, max_buffered: int = 200_000) -> None:
        self.redis = redis
        self.interval_s = interval_s
        self.max_buffered = max_buffered
        self._buffer: list[str] = []
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self.flushed = 0

    def add(self, hit: Hit) -> None:
        self._buffer.append(hit.pack())
        if len(self._buffer) >= self.max_buffered:
            self._room.clear()

    async def backpressure(self) -> None:
        """Awaited by the endpoints: blocks only while the buffer is full (Redis unreachable)."""
        if not self._room.is_set():
            await self._room.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + timeout_s
        while self._buffer and time.monotonic() < deadline:
            try:
                await self.flush()
            except Exception as exc:
                log.warning("tracking flush at shutdown failed: %s", exc)
                await asyncio.sleep(0.2)
        if self._buffer:
            log.error("tracking: %d hits not recorded at shutdown", len(self._buffer))

    async def _run(self) -> None:
        while True:
            try:
                await self.flush()
            except Exception as exc:  # Redis down: keep the hits, retry
                log.warning("tracking flush failed: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.interval_s)

    async def flush(self) -> int:
        if not self._buffer:
            return 0
        batch = self._buffer[:20_000]
        await self.redis.xadd(keys.tracking_hits(), {"h": ";".join(batch)})
        del self._buffer[: len(batch)]  # only once Redis has them
        self.flushed += len(batch)
        if len(self._buffer) < self.max_buffered:
            self._room.set()
        return len(batch)


class EngagementConsumer:
    """Worker side: stream entries → SQL events (truth) → counters → XACK."""

    def __init__(self, engine: Engine, redis: Redis, rules: MachineRules = MachineRules(),
                 consumer: str | None = None, reclaim_idle_s: float = 60.0) -> None:
        self.engine = engine
        self.redis = redis
        self.rules = rules
        self.consumer = consumer or f"{socket.gethostname()}-{id(self):x}"
        self.reclaim_idle_s = reclaim_idle_s
        self._seen: set[int] = set()  # (message, kind) pairs whose first-time bit is known to be set
        self._group_ready = False
        self.recorded = 0

    async def _ensure_group(self) -> None:
        if not self._group_ready:
            try:
                await self.redis.xgroup_create(keys.tracking_hits(), keys.TRACKING_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._group_ready = True

    async def run_once(self, budget_s: float = 2.0, count: int = 20) -> int:
        """Consume until the stream is empty or the time budget is spent; returns the hits recorded."""
        await self._ensure_group()
        stream, group = keys.tracking_hits(), keys.TRACKING_GROUP
        end = time.monotonic() + budget_s
        done = 0
        # Entries a dead consumer left pending are taken over first.
        reply: Any = await self.redis.xautoclaim(stream, group, self.consumer, int(self.reclaim_idle_s * 1000),
                                                 "0-0", count=count)
        claimed = reply[1] if reply else []
        if claimed:
            done += await self._process(claimed)
        while time.monotonic() < end:
            got: Any = await self.redis.xreadgroup(group, self.consumer, {stream: ">"}, count=count)
            entries = got[0][1] if got else []
            if not entries:
                break
            done += await self._process(entries)
        return done

    async def _process(self, entries: Sequence[tuple[Any, Any]]) -> int:
        hits: list[Hit] = []
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            packed = (fields or {}).get(b"h") or (fields or {}).get("h") or b""
            text = packed.decode() if isinstance(packed, bytes) else str(packed)
            hits.extend(h for h in (Hit.unpack(p) for p in text.split(";") if p) if h is not None)
        recorded = await asyncio.to_thread(self._write_sql, hits) if hits else []
        try:
            await self._count(recorded)
        except Exception as exc:  # the events are in SQL; reconciliation repairs the counters
            log.warning("tracking counters not updated (%d hits): %s", len(recorded), exc)
        await self.redis.xack(keys.tracking_hits(), keys.TRACKING_GROUP, *ids)
        await self.redis.xdel(keys.tracking_hits(), *ids)
        self.recorded += len(hits)
        return len(hits)

    # -- SQL (in a thread) ----------------------------------------------------------------------------------
    def _write_sql(self, hits: Sequence[Hit]) -> list[tuple[Hit, dict[str, Any] | None]]:
        wanted = sorted({h.message_id for h in hits if h.message_id})
        out: list[tuple[Hit, dict[str, Any] | None]] = []
        with self.engine.begin() as conn:
            known: dict[int, dict[str, Any]] = {}
            for i in range(0, len(wanted), 900):
                for row in conn.execute(select(
                        messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.contact_id,
                        messages.c.recipient_domain, messages.c.sent_at)
                        .where(messages.c.id.in_(wanted[i:i + 900]))):
                    known[row.id] = dict(row._mapping)
            rows = []
            for h in hits:
                m = known.get(h.message_id)
                if m is not None and (m["account_id"] != h.account_id or m["campaign_id"] != h.campaign_id):
                    m = None  # ids that disagree with the ledger: counted only in aggregate
                if h.machine is None and m is not None and m["sent_at"] is not None:
                    sent = as_utc(m["sent_at"])
                    if sent is not None:
                        h = replace(h, machine=timing_reason(h.at - sent.timestamp(), self.rules))
                data: dict[str, Any] = {}
                if h.machine is not None:
                    data["machine"] = h.machine.value
                if h.link_index is not None:
                    data["link"] = h.link_index
                rows.append({
                    "account_id": h.account_id, "message_id": m["id"] if m else None,
                    "campaign_id": h.campaign_id, "contact_id": m["contact_id"] if m else None,
                    "type": _KIND[(h.click, h.machine is not None)][0].value,
                    "recipient_domain": m["recipient_domain"] if m else None,
                    "data": data or None, "created_at": datetime.fromtimestamp(h.at, UTC),
                })
                out.append((h, m))
            for i in range(0, len(rows), 2000):
                conn.execute(insert(events), rows[i:i + 2000])
        return out

    # -- Redis -----------------------------------------------------------------------------------------------
    async def _count(self, recorded: Sequence[tuple[Hit, dict[str, Any] | None]]) -> None:
        """Two pipelines: first-time bits (only for pairs this process has not seen set), then increments
        aggregated per counter field — a few dozen commands per batch, whatever the traffic."""
        increments: Counter[tuple[int, str | None, Metric]] = Counter()
        firsts: dict[int, tuple[Hit, dict[str, Any]]] = {}
        for h, m in recorded:
            machine = h.machine is not None
            domain = m["recipient_domain"] if m else None
            increments[(h.campaign_id, domain, Metric.CLICKS_TOTAL if h.click else Metric.OPENS_TOTAL)] += 1
            if m is None:
                # Per-person tracking off: no message to be unique on; the aggregate counts every hit.
                increments[(h.campaign_id, None, _KIND[(h.click, machine)][1])] += 1
                continue
            seen_key = h.message_id * 4 + (2 if h.click else 0) + (1 if machine else 0)
            if seen_key not in self._seen:
                firsts.setdefault(seen_key, (h, m))
        if firsts:
            order = list(firsts.items())
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, (h, _m) in order:
                    key, bit = keys.seen_bitmap(h.campaign_id, _KIND[(h.click, h.machine is not None)][2],
                                                h.message_id)
                    pipe.setbit(key, bit, 1)
                previous = await pipe.execute()
            if len(self._seen) + len(order) > _SEEN_CACHE:
                self._seen.clear()
            for (seen_key, (h, m)), was_set in zip(order, previous, strict=True):
                self._seen.add(seen_key)
                if not was_set:
                    increments[(h.campaign_id, m["recipient_domain"], _KIND[(h.click, h.machine is not None)][1])] += 1
        if increments:
            async with self.redis.pipeline(transaction=False) as pipe:
                for (cid, domain, metric), n in increments.items():
                    counters.incr(pipe, cid, domain, metric, n)
                await pipe.execute()
