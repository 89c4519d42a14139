"""The hand-off fence: an unsubscribe takes effect for messages already loaded by a dispatcher.

The dispatcher checks SQL suppressions when it loads a batch, then renders it and hands it to a transport. An
unsubscribe committed between that load and the hand-off would not be seen. The fence closes the window with
two Redis structures per (account, channel), both under the account's hash tag `{a<id>}` (one cluster slot):

- `suppression_set`: sorted set of recently suppressed addresses (score = epoch ms), trimmed to one day.
- `inflight(address)`: set of message ids that passed the guard and are being handed off (PEXPIRE lease).

Two Lua scripts, atomic with respect to each other:

- the guard (`admit`), run right before `transport.deliver`: for each address of the batch, refuse it if it is
  in the suppression set, else add the message id to its in-flight set;
- the unsubscribe (`publish`), run after the SQL commit and before the HTTP response: add the address to the
  suppression set and read its in-flight set.

Either the guard ran first (then the unsubscribe sees the in-flight mark and waits until the outcome sink
removes it, i.e. until the transport returned for that message) or the unsubscribe ran first (then the guard
refuses the message). Hence the guarantee (docs/architecture.md, "Unsubscribe effect"): once the unsubscribe
request has returned, no message to that address on that channel is accepted by the next hop — bounded by
`wait_s`: an in-flight hand-off lasting longer than that (a stalled relay) no longer holds the response back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from crm import keys

RECENT_MS = 24 * 3600 * 1000  # a batch is never loaded a day before its hand-off
DEFAULT_LEASE_MS = 300_000  # longer than any hand-off of one batch (SMTP timeouts are 30 s per command)

# KEYS[1] = suppression set, KEYS[2..] = in-flight set of each message's address
# ARGV[1] = lease ms, then (address, message id) pairs. Returns the 1-based indexes of refused messages.
_ADMIT = """
local refused = {}
local lease = tonumber(ARGV[1])
for i = 2, #KEYS do
  local address = ARGV[2 * (i - 1)]
  if redis.call('ZSCORE', KEYS[1], address) then
    refused[#refused + 1] = i - 1
  else
    redis.call('SADD', KEYS[i], ARGV[2 * (i - 1) + 1])
    redis.call('PEXPIRE', KEYS[i], lease)
  end
end
return refused
"""

# KEYS[1] = suppression set, KEYS[2] = in-flight set of the address
# ARGV[1] = address, ARGV[2] = now ms, ARGV[3] = trim before ms, ARGV[4] = TTL ms. Returns the in-flight count.
_PUBLISH = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('SCARD', KEYS[2])
"""


@dataclass(frozen=True, slots=True)
class Candidate:
    message_id: int
    account_id: int
    channel: str
    address: str


# The end of a batch's hand-off: drop each message's in-flight mark (KEYS[i] / ARGV[i] pairs, one hash tag).
_RELEASE = """
for i = 1, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[i])
end
return #KEYS
"""


def normalise(channel: str, address: str) -> str:
    return address.strip().lower() if channel == "email" else address.strip()


class SuppressionFence:
    def __init__(self, redis: Redis, wait_s: float = 15.0, lease_ms: int = DEFAULT_LEASE_MS,
                 poll_s: float = 0.005) -> None:
        self.redis = redis
        self.wait_s = wait_s
        self.lease_ms = lease_ms
        self.poll_s = poll_s
        self._admit = redis.register_script(_ADMIT)
        self._publish = redis.register_script(_PUBLISH)
        self._release = redis.register_script(_RELEASE)

    # -- worker side --------------------------------------------------------------------------------------------

    async def admit(self, candidates: Sequence[Candidate]) -> set[int]:
        """Mark the candidates in flight; return the message ids refused (suppressed since the batch load)."""
        groups: dict[tuple[int, str], list[Candidate]] = {}
        for c in candidates:
            groups.setdefault((c.account_id, c.channel), []).append(c)
        refused: set[int] = set()
        for (account_id, channel), group in groups.items():  # one script per hash tag (cluster-safe)
            addresses = [normalise(channel, c.address) for c in group]
            script_keys = [keys.suppression_set(account_id, channel)]
            script_keys += [keys.inflight(account_id, channel, a) for a in addresses]
            args: list[str | int] = [self.lease_ms]
            for c, a in zip(group, addresses, strict=True):
                args += [a, c.message_id]
            for index in await self._admit(keys=script_keys, args=args):
                refused.add(group[int(index) - 1].message_id)
        return refused

    async def release(self, candidates: Sequence[Candidate]) -> None:
        """The hand-off of these messages has ended (whatever its outcome): drop their in-flight marks."""
        if not candidates:
            return
        groups: dict[int, list[Candidate]] = {}
        for c in candidates:
            groups.setdefault(c.account_id, []).append(c)
        for account_id, group in groups.items():  # one script per account hash tag (not one SREM per message)
            await self._release(keys=[keys.inflight(account_id, c.channel, normalise(c.channel, c.address))
                                      for c in group], args=[c.message_id for c in group])

    # -- unsubscribe side ---------------------------------------------------------------------------------------

    async def publish(self, account_id: int, channel: str, address: str) -> bool:
        """Make the suppression visible to every guard, then wait for the hand-offs that raced with it.

        Returns False if an in-flight hand-off was still running after `wait_s` (logged by the caller)."""
        address = normalise(channel, address)
        now_ms = int(time.time() * 1000)
        inflight_key = keys.inflight(account_id, channel, address)
        pending = await self._publish(keys=[keys.suppression_set(account_id, channel), inflight_key],
                                      args=[address, now_ms, now_ms - RECENT_MS, RECENT_MS])
        if not pending:
            return True
        deadline = time.monotonic() + self.wait_s
        while await self.redis.scard(inflight_key):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(self.poll_s)
        return True

    async def retract(self, account_id: int, channel: str, address: str) -> None:
        """Undo: the address may receive again (the SQL suppression row is gone already)."""
        await self.redis.zrem(keys.suppression_set(account_id, channel), normalise(channel, address))
