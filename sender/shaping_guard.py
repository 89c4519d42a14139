"""`ShapingGuard`: the dispatcher's last-moment check for direct delivery — what a destination cannot take now
is deferred, *without counting an attempt* against the recipient (the recipient did nothing wrong):

- a suspended destination (`sender.shaper`): every message to it, until the suspension ends;
- the rate: each destination's token bucket grants what it can; the rest is deferred, spread over the next
  seconds at the destination's current rate, so a large campaign trickles out at the shaped pace and its
  batches never block the dispatcher's loops (transactional mail to other destinations keeps flowing).

Messages whose domain has no usable route pass through: the transport fails them with the right code.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sender.hooks import Action, Verdict
from sender.mx import MxResolver
from sender.shaper import Shaper
from sender.shaping import ShapingPolicy


class ShapingGuard:
    def __init__(self, resolver: MxResolver, shaper: Shaper, policy_for: Callable[[str, str], ShapingPolicy],
                 clock: Callable[[], float] = time.time) -> None:
        self.resolver = resolver
        self.shaper = shaper
        self.policy_for = policy_for
        self.clock = clock

    async def check(self, messages: Sequence[Mapping[str, Any]]) -> Mapping[int, Verdict]:
        by_domain: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for m in messages:
            if m.get("channel", "email") != "email":
                continue  # SMS goes through the same dispatcher hooks: not ours
            domain = m.get("recipient_domain") or str(m["recipient"]).rpartition("@")[2]
            by_domain[str(domain).lower()].append(m)
        domains = list(by_domain)
        routes = await asyncio.gather(*(self.resolver.route(d) for d in domains))
        by_dest: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        first_domain: dict[str, str] = {}
        for domain, route in zip(domains, routes, strict=True):
            if route.error is None:
                by_dest[route.destination].extend(by_domain[domain])
                first_domain.setdefault(route.destination, domain)
        verdicts: dict[int, Verdict] = {}
        now = self.clock()
        suspended = await self.shaper.suspended_for(list(by_dest))
        for dest, msgs in by_dest.items():
            if dest in suspended:
                until = now + suspended[dest]
                for m in msgs:
                    verdicts[int(m["id"])] = Verdict(Action.DEFER, f"destination {dest} suspended", until)
                continue
            policy = self.policy_for(dest, first_domain[dest])
            granted, rate = await self.shaper.take_tokens(dest, len(msgs), policy)
            for n, m in enumerate(msgs[granted:], start=1):
                verdicts[int(m["id"])] = Verdict(Action.DEFER, f"shaping: {dest} at {rate:g} msg/s", now + n / rate)
        return verdicts
