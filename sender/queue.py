"""The dispatch queue on Redis Streams: partitions, a consumer group, a retry schedule, an idempotency guard.

Delivery is at-least-once: an entry is acknowledged only after its outcome is in the ledger. Two bitmaps per
partition make the hand-off to SMTP at-most-once in the normal case:
- `claimed`: set atomically when a worker takes a fresh entry; a second copy of the same message (re-enqueued by
  a resumed fan-out or a reconciliation) finds the bit set and is dropped;
- `done`: set as soon as the next hop accepted the message; an entry reclaimed from a dead worker checks it and
  is recorded as sent without being sent again.
Only a crash between the SMTP "250" and the `done` write can duplicate a message (the in-flight window).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from crm import keys

_TTL = 7 * 24 * 3600

# Move due retries back to their stream, atomically per partition (all keys share the {q<p>} tag).
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, p in ipairs(due) do
  if string.sub(p, 1, 1) == 't' then
    redis.call('XADD', KEYS[2], '*', 'p', p)
  else
    redis.call('XADD', KEYS[3], '*', 'p', p)
  end
  redis.call('ZREM', KEYS[1], p)
end
return #due
"""


@dataclass(frozen=True, slots=True)
class QueueItem:
    message_id: int
    account_id: int
    campaign_id: int  # 0 for single sends
    transactional: bool

    def pack(self) -> str:
        return f"{'t' if self.transactional else 'b'}:{self.message_id}:{self.account_id}:{self.campaign_id}"

    @classmethod
    def unpack(cls, raw: str) -> QueueItem:
        kind, mid, acct, camp = raw.split(":")
        return cls(int(mid), int(acct), int(camp), kind == "t")


@dataclass(frozen=True, slots=True)
class Claimed:
    item: QueueItem
    stream: str
    entry_id: str
    partition: int
    reclaimed: bool  # taken over from a dead consumer


class DispatchQueue:
    def __init__(self, redis: Redis, partitions: int, consumer: str) -> None:
        self.redis = redis
        self.partitions = partitions
        self.consumer = consumer
        self._move_due = redis.register_script(_MOVE_DUE)
        self._next_partition = 0
        self._trimmed: dict[str, float] = {}  # stream -> next time it may be trimmed

    def partition(self, account_id: int) -> int:
        return keys.partition_of(account_id, self.partitions)

    async def ensure_groups(self) -> None:
        for p in range(self.partitions):
            for prio in ("tx", "bulk"):
                try:
                    await self.redis.xgroup_create(keys.stream(p, prio), keys.GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def enqueue(self, items: Sequence[QueueItem]) -> None:
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for item in items:
            p = self.partition(item.account_id)
            pipe.xadd(keys.stream(p, "tx" if item.transactional else "bulk"), {"p": item.pack()})
        await pipe.execute()

    async def release(self, items: Sequence[QueueItem]) -> None:
        """Re-enqueue messages that were taken once and not sent (held by a suspension, then reinstated): clear
        their `claimed` bit, then add them to their streams, in one pipeline."""
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for item in items:
            p = self.partition(item.account_id)
            key, bit = keys.done_bitmap(p, item.message_id)
            pipe.setbit(key + ":claimed", bit, 0)
            pipe.xadd(keys.stream(p, "tx" if item.transactional else "bulk"), {"p": item.pack()})
        await pipe.execute()

    async def schedule(self, items: Sequence[tuple[QueueItem, float]]) -> None:
        """Put items on the retry schedule (due at the given epoch seconds)."""
        if not items:
            return
        pipe = self.redis.pipeline(transaction=False)
        for item, due in items:
            pipe.zadd(keys.retry_zset(self.partition(item.account_id)), {item.pack(): due})
        await pipe.execute()

    async def claim(self, count: int) -> list[Claimed]:
        """Fresh entries, transactional streams first, then bulk streams round-robin across partitions."""
        got = await self._read("tx", count)
        if len(got) < count:
            got += await self._read("bulk", count - len(got))
        return got

    async def _read(self, prio: str, count: int) -> list[Claimed]:
        """Up to `count` entries, never more (what is read is claimed): an even share from every partition first
        (fairness between accounts, starting partition rotated), then the partitions that had more share the rest —
        so that one busy account still fills whole batches. Two round trips at most."""
        order = [(self._next_partition + i) % self.partitions for i in range(self.partitions)]
        self._next_partition = (self._next_partition + 1) % self.partitions
        candidates = order[: max(count, 0)]
        per = max(1, count // max(1, len(candidates)))
        out: list[Claimed] = []
        for _round in range(2):
            if not candidates or len(out) >= count:
                break
            pipe = self.redis.pipeline(transaction=False)
            for p in candidates:
                pipe.xreadgroup(keys.GROUP, self.consumer, {keys.stream(p, prio): ">"}, count=per)
            replies = await pipe.execute(raise_on_error=True)
            full = []
            for p, reply in zip(candidates, replies, strict=True):
                n = 0
                for stream, entries in reply or []:
                    name = stream.decode() if isinstance(stream, bytes) else stream
                    got = self._claimed(name, p, entries, reclaimed=False)
                    n += len(entries)
                    out.extend(got)
                if n >= per:
                    full.append(p)
            remaining = count - len(out)
            candidates = full[: max(remaining, 0)]
            per = max(1, remaining // max(1, len(candidates)))
        return out

    def _claimed(self, stream: str, p: int, entries: Any, reclaimed: bool) -> list[Claimed]:
        out = []
        for entry_id, fields in entries:
            if not fields:  # deleted entry
                continue
            raw = fields.get(b"p") or fields.get("p")
            raw = raw.decode() if isinstance(raw, bytes) else raw
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            out.append(Claimed(QueueItem.unpack(raw), stream, eid, p, reclaimed))
        return out

    async def reclaim(self, min_idle_s: float, count: int = 200) -> list[Claimed]:
        """Take over entries that a dead (or stuck) consumer claimed more than `min_idle_s` ago."""
        out: list[Claimed] = []
        for p in range(self.partitions):
            for prio in ("tx", "bulk"):
                stream = keys.stream(p, prio)
                reply = await self.redis.xautoclaim(
                    stream, keys.GROUP, self.consumer, int(min_idle_s * 1000), "0-0", count=count
                )
                out.extend(self._claimed(stream, p, reply[1], reclaimed=True))
                if len(out) >= count:
                    return out
        return out

    def _bits(self, batch: Sequence[Claimed], suffix: str = "") -> dict[str, list[tuple[int, int]]]:
        """Group a batch's bit offsets by bitmap key: (position in batch, offset)."""
        by_key: dict[str, list[tuple[int, int]]] = {}
        for i, c in enumerate(batch):
            key, bit = keys.done_bitmap(c.partition, c.item.message_id)
            by_key.setdefault(key + suffix, []).append((i, bit))
        return by_key

    async def _set_bits(self, batch: Sequence[Claimed], suffix: str, value: int) -> list[int]:
        """Set the bits of a batch with one BITFIELD per bitmap (not one SETBIT per message); old values back."""
        by_key = self._bits(batch, suffix)
        pipe = self.redis.pipeline(transaction=False)
        for key, offsets in by_key.items():
            args: list[str | int] = []
            for _, bit in offsets:
                args += ["SET", "u1", bit, value]
            pipe.execute_command("BITFIELD", key, *args)
            pipe.expire(key, _TTL)
        replies = await pipe.execute()
        old = [0] * len(batch)
        for (_, offsets), reply in zip(by_key.items(), replies[::2], strict=True):
            for (i, _), previous in zip(offsets, reply, strict=True):
                old[i] = int(previous)
        return old

    async def guard_fresh(self, batch: Sequence[Claimed]) -> list[bool]:
        """Set the `claimed` bit of each fresh entry; True where this worker is the first to take the message."""
        return [old == 0 for old in await self._set_bits(batch, ":claimed", 1)]

    async def already_done(self, batch: Sequence[Claimed]) -> list[bool]:
        by_key = self._bits(batch)
        pipe = self.redis.pipeline(transaction=False)
        for key, offsets in by_key.items():
            args: list[str | int] = []
            for _, bit in offsets:
                args += ["GET", "u1", bit]
            pipe.execute_command("BITFIELD", key, *args)
        done = [False] * len(batch)
        for (_, offsets), reply in zip(by_key.items(), await pipe.execute(), strict=True):
            for (i, _), value in zip(offsets, reply, strict=True):
                done[i] = bool(value)
        return done

    async def mark_done(self, batch: Sequence[Claimed]) -> None:
        if batch:
            await self._set_bits(batch, "", 1)

    async def finish(self, acked: Sequence[Claimed], deferred: Sequence[tuple[Claimed, float]]) -> None:
        """Acknowledge handled entries; deferred ones go to the retry schedule and lose their `claimed` bit."""
        if deferred:  # the retry will be a fresh entry: its `claimed` bit must be clear by then
            await self._set_bits([c for c, _ in deferred], ":claimed", 0)
        pipe = self.redis.pipeline(transaction=False)
        by_stream: dict[str, list[str]] = {}
        for c in [*acked, *(c for c, _ in deferred)]:
            by_stream.setdefault(c.stream, []).append(c.entry_id)
        for c, due in deferred:
            pipe.zadd(keys.retry_zset(c.partition), {c.item.pack(): due})
        for stream, ids in by_stream.items():  # one XACK per stream, not one per message
            pipe.xack(stream, keys.GROUP, *ids)
        if acked or deferred:
            await pipe.execute()
            # Trim what every consumer has acknowledged, so streams do not grow without bound (at most once a
            # second per stream: trimming is bookkeeping, not worth two round trips per batch).
            now = time.monotonic()
            for stream in by_stream:
                if self._trimmed.get(stream, 0.0) <= now:
                    self._trimmed[stream] = now + 1.0
                    await self._trim(stream)

    async def _trim(self, stream: str) -> None:
        info = await self.redis.xpending(stream, keys.GROUP)
        low = info.get("min") if isinstance(info, dict) else None
        if low:
            low = low.decode() if isinstance(low, bytes) else low
            await self.redis.xtrim(stream, minid=low, approximate=True)
        elif info and info.get("pending") == 0:
            groups = await self.redis.xinfo_groups(stream)
            last = next((g["last-delivered-id"] for g in groups if g["name"] in (keys.GROUP,
                                                                              keys.GROUP.encode())), None)
            if last:
                last = last.decode() if isinstance(last, bytes) else last
                await self.redis.xtrim(stream, minid=_next_id(last), approximate=True)

    async def move_due(self, now: float | None = None, limit: int = 1000) -> int:
        now = time.time() if now is None else now
        moved = 0
        for p in range(self.partitions):
            moved += int(await self._move_due(
                keys=[keys.retry_zset(p), keys.stream(p, "tx"), keys.stream(p, "bulk")], args=[now, limit]
            ))
        return moved

    async def depth(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for p in range(self.partitions):
            for prio in ("tx", "bulk"):
                pipe.xlen(keys.stream(p, prio))
            pipe.zcard(keys.retry_zset(p))
        res = await pipe.execute()
        out = {"tx": 0, "bulk": 0, "retry": 0}
        for i in range(self.partitions):
            out["tx"] += res[3 * i]
            out["bulk"] += res[3 * i + 1]
            out["retry"] += res[3 * i + 2]
        return out

    async def pending_count(self) -> int:
        total = 0
        for p in range(self.partitions):
            for prio in ("tx", "bulk"):
                try:
                    info = await self.redis.xpending(keys.stream(p, prio), keys.GROUP)
                except ResponseError:
                    continue
                total += int(info.get("pending", 0)) if isinstance(info, dict) else 0
        return total


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"
