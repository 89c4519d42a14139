"""Shaping state shared by every worker process, in Redis (keys in `crm.keys`, one `{d<destination>}` hash tag
per destination so each script touches one slot).

- Rate: a token bucket per destination (burst = one second of traffic), refilled at `rate × factor`.
- Connections: a sorted set of leases (score = expiry), so a crashed worker's leases lapse by themselves.
- Adaptation (AIMD, as TCP congestion control): a throttling reply halves the rate factor and the connection
  factor (floor `min_factor`); a delivery without throttling adds `step` to both, at most once per
  `recover_every_s`, up to 1. So a destination that said 421 is slowed at once and recovers gradually.
- Suspension: `suspend_after` deliveries in a row that ended in temporary failure only (the MXs refuse or are
  down) suspend the destination for `suspend_s`; the guard then defers its messages without an attempt.

Redis' own clock (TIME) is used inside the scripts: every worker on every machine sees the same time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from crm import keys
from sender.shaping import ShapingPolicy

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

_TAKE = _NOW + """
local factor = tonumber(redis.call('HGET', KEYS[2], 'rate')) or 1
local rate = tonumber(ARGV[1]) * factor
local want = tonumber(ARGV[2])
local cap = math.max(1, rate)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return {granted, tostring(rate)}
"""

_LEASE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local factor = tonumber(redis.call('HGET', KEYS[2], 'conns')) or 1
local limit = math.max(1, math.floor(tonumber(ARGV[1]) * factor))
local free = limit - redis.call('ZCARD', KEYS[1])
local granted = 0
for i = 3, #ARGV do
  if granted >= free then break end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
  granted = granted + 1
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
return granted
"""

# ARGV: throttled (0/1), delivered (0/1), failed_only (0/1), min_factor, step, recover_every_s,
#       suspend_after, suspend_ms
_RECORD = _NOW + """
local st = redis.call('HMGET', KEYS[1], 'rate', 'conns', 'fails', 'raised')
local rate = tonumber(st[1]) or 1
local conns = tonumber(st[2]) or 1
local fails = tonumber(st[3]) or 0
local raised = tonumber(st[4]) or 0
local minf = tonumber(ARGV[4])
local suspended = 0
if ARGV[1] == '1' then
  rate = math.max(minf, rate / 2)
  conns = math.max(minf, conns / 2)
  raised = now
elseif ARGV[2] == '1' and now - raised >= tonumber(ARGV[6]) and (rate < 1 or conns < 1) then
  rate = math.min(1, rate + tonumber(ARGV[5]))
  conns = math.min(1, conns + tonumber(ARGV[5]))
  raised = now
end
if ARGV[2] == '1' then
  fails = 0
elseif ARGV[3] == '1' then
  fails = fails + 1
  if fails >= tonumber(ARGV[7]) then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[8])
    fails = 0
    suspended = 1
  end
end
redis.call('HSET', KEYS[1], 'rate', tostring(rate), 'conns', tostring(conns), 'fails', fails,
           'raised', tostring(raised))
redis.call('EXPIRE', KEYS[1], 86400)
return suspended
"""


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    min_factor: float = 0.05  # never below 5 % of the configured rate / connections (at least 1 connection)
    step: float = 0.1  # additive increase per recovery step
    recover_every_s: float = 10.0  # at most one increase per destination in this interval
    suspend_after: int = 5  # consecutive all-temporary-failure deliveries that suspend a destination
    suspend_s: float = 300.0
    lease_s: float = 600.0  # a connection lease lapses after this (crashed worker); longer than any delivery


@dataclass(frozen=True, slots=True)
class DestinationState:
    rate_factor: float
    connection_factor: float
    consecutive_failures: int
    suspended_for_s: float  # 0 when not suspended
    connections: int  # live leases


class Shaper:
    def __init__(self, redis: Redis, config: AdaptiveConfig | None = None) -> None:
        self.redis = redis
        self.config = config or AdaptiveConfig()
        self._take = redis.register_script(_TAKE)
        self._lease = redis.register_script(_LEASE)
        self._record = redis.register_script(_RECORD)

    async def take_tokens(self, destination: str, want: int, policy: ShapingPolicy) -> tuple[int, float]:
        """Up to `want` sending slots now; returns (granted, current rate in msg/s)."""
        if want <= 0:
            return 0, policy.rate_per_s
        granted, rate = await self._take(keys=[keys.shaping_bucket(destination), keys.shaping_state(destination)],
                                         args=[policy.rate_per_s, want])
        return int(granted), float(rate)

    async def lease(self, destination: str, want: int, policy: ShapingPolicy) -> list[str]:
        """Up to `want` connection leases under the destination's (adapted) connection limit."""
        ids = [uuid.uuid4().hex for _ in range(max(0, want))]
        if not ids:
            return []
        granted = int(await self._lease(
            keys=[keys.shaping_connections(destination), keys.shaping_state(destination)],
            args=[policy.max_connections, self.config.lease_s, *ids]))
        return ids[:granted]

    async def release(self, destination: str, leases: Sequence[str]) -> None:
        if leases:
            await self.redis.zrem(keys.shaping_connections(destination), *leases)

    async def record(self, destination: str, *, throttled: bool, delivered: bool, failed_only: bool) -> bool:
        """Feed one delivery's replies back; returns True when this suspended the destination."""
        c = self.config
        suspended = await self._record(
            keys=[keys.shaping_state(destination), keys.shaping_suspended(destination)],
            args=[int(throttled), int(delivered), int(failed_only), c.min_factor, c.step, c.recover_every_s,
                  c.suspend_after, int(c.suspend_s * 1000)])
        return bool(suspended)

    async def suspended_for(self, destinations: Sequence[str]) -> dict[str, float]:
        """Seconds of suspension left, for the suspended ones among `destinations`."""
        if not destinations:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in destinations:
                pipe.pttl(keys.shaping_suspended(d))
            ttls: list[Any] = await pipe.execute()
        return {d: ms / 1000 for d, ms in zip(destinations, ttls, strict=True) if ms and ms > 0}

    async def state(self, destination: str) -> DestinationState:
        st = await self.redis.hmget(keys.shaping_state(destination), ["rate", "conns", "fails"])
        left = (await self.suspended_for([destination])).get(destination, 0.0)
        conns = await self.redis.zcard(keys.shaping_connections(destination))
        return DestinationState(float(st[0] or 1), float(st[1] or 1), int(st[2] or 0), left, int(conns))
