"""`DirectMxTransport`: delivery straight to each recipient domain's MX, shaped per destination.

For one `deliver(batch)` (the dispatcher does not change): envelopes are grouped by recipient domain, each
domain is routed (`sender.mx`), domains are grouped by destination (the MX provider, `sender.shaping`), and
destinations are served concurrently:

1. route errors end at once: null MX → 556 5.1.10 and NXDOMAIN → 5.1.2 (permanent), DNS failure → 4.4.3;
2. a suspended destination gets a temporary failure without a connection (the `ShapingGuard` normally
   deferred those messages already, without counting an attempt);
3. connection leases are taken from the shared limit (`sender.shaper`), at most one per
   `messages_per_connection` envelopes, waiting a bounded time for one;
4. the pipelined client (`sender.smtp_pipelined`) opens that many connections to the best MX address; the
   envelopes it could not even start because the session could not be set up (refused, timeout, 4xx/5xx
   greeting, STARTTLS required but not offered) go to the next address, then the next MX (RFC 5321 §5.1);
   nothing that reached the MAIL command is ever re-sent elsewhere;
5. the replies are fed back to the adaptive state: throttling (421, 4.7.x) halves rate and connections,
   success recovers them, repeated all-temporary failures suspend the destination.

Connections live for one delivery (then QUIT): the connection limit then holds across processes exactly, and a
destination's leases are never held by idle sessions. STARTTLS is opportunistic (RFC 3207; unauthenticated,
RFC 7435) and *required* for the destinations so configured (no cleartext fallback). Certificates are not
verified: the peer is dialled by address and there is no MTA-STS/DANE policy yet to name it (RFC 8461/7672).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sender.mx import MxResolver, Route
from sender.shaper import Shaper
from sender.shaping import ShapingPolicy, is_throttle
from sender.smtp_pipelined import PipelinedSmtpTransport
from sender.smtp_replies import SmtpRelayConfig, SmtpSetupError, StartTls, transient
from sender.transport import DeliveryResult, Envelope, Outcome

_SETUP = "[session set-up] "  # marks a result whose envelope never reached MAIL FROM: safe to try elsewhere


@dataclass(frozen=True, slots=True)
class DirectConfig:
    port: int = 25
    helo_name: str | None = None
    timeout_s: float = 30.0
    lease_wait_s: float = 5.0  # how long a delivery waits for a free connection slot of its destination
    port_overrides: Mapping[str, int] = field(default_factory=dict)  # MX host name → port (tests)


class _MxHostTransport(PipelinedSmtpTransport):
    """The pipelined client, one address of one MX; set-up failures are marked so they can fall back."""

    async def _open(self):  # type: ignore[no-untyped-def]
        try:
            return await super()._open()
        except SmtpSetupError as exc:
            raise SmtpSetupError(f"{_SETUP}{self.config.host}: {exc.text}", exc.code) from exc


def _never_started(r: DeliveryResult) -> bool:
    return r.outcome is Outcome.TRANSIENT and r.text.startswith(_SETUP)


class DirectMxTransport:
    def __init__(self, resolver: MxResolver, shaper: Shaper, policy_for: Callable[[str, str], ShapingPolicy],
                 config: DirectConfig | None = None) -> None:
        """`policy_for(destination, recipient domain)` gives the shaping policy (limits and TLS)."""
        self.resolver = resolver
        self.shaper = shaper
        self.policy_for = policy_for
        self.config = config or DirectConfig()
        self._closed = False

    async def deliver(self, batch: Sequence[Envelope]) -> list[DeliveryResult]:
        if self._closed:
            raise RuntimeError("the direct transport is closed")
        results: dict[int, DeliveryResult] = {}
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i, env in enumerate(batch):
            by_domain[env.rcpt_to.rpartition("@")[2].lower()].append(i)
        domains = list(by_domain)
        routes = await asyncio.gather(*(self.resolver.route(d) for d in domains))
        # destination → [(route, envelope indexes)]
        work: dict[str, list[tuple[Route, list[int]]]] = defaultdict(list)
        for domain, route in zip(domains, routes, strict=True):
            if route.error is not None:
                for i in by_domain[domain]:
                    results[i] = DeliveryResult(batch[i].message_id,
                                                Outcome.PERMANENT if route.permanent else Outcome.TRANSIENT,
                                                route.code, route.enhanced, route.error)
                continue
            work[route.destination].append((route, by_domain[domain]))
        suspended = await self.shaper.suspended_for(list(work))
        jobs = []
        for dest, items in work.items():
            if dest in suspended:
                for _, idx in items:
                    for i in idx:
                        results[i] = transient(batch[i].message_id,
                                               f"4.4.5 destination {dest} suspended for {suspended[dest]:.0f}s", 451)
                continue
            jobs.append(self._destination(dest, items, batch, results))
        await asyncio.gather(*jobs)
        return [results[i] for i in range(len(batch))]

    async def _destination(self, dest: str, items: list[tuple[Route, list[int]]], batch: Sequence[Envelope],
                           results: dict[int, DeliveryResult]) -> None:
        out: list[DeliveryResult] = []
        for route, idx in items:
            policy = self.policy_for(dest, route.domain)
            got = await self._route(dest, policy, route, [batch[i] for i in idx])
            for i, r in zip(idx, got, strict=True):
                results[i] = r
            out.extend(got)
        delivered = any(r.outcome is Outcome.SENT for r in out)
        await self.shaper.record(
            dest, throttled=any(is_throttle(r) for r in out), delivered=delivered,
            failed_only=not delivered and any(r.outcome is Outcome.TRANSIENT for r in out))

    async def _route(self, dest: str, policy: ShapingPolicy, route: Route, envs: list[Envelope]
                     ) -> list[DeliveryResult]:
        want = min(policy.max_connections, -(-len(envs) // policy.messages_per_connection))
        leases = await self._leases(dest, want, policy)
        if not leases:
            return [transient(e.message_id, f"4.4.5 no free connection to {dest} within "
                              f"{self.config.lease_wait_s:.0f}s", 451) for e in envs]
        try:
            return await self._try_hosts(policy, route, envs, len(leases))
        finally:
            await self.shaper.release(dest, leases)

    async def _leases(self, dest: str, want: int, policy: ShapingPolicy) -> list[str]:
        deadline = time.monotonic() + self.config.lease_wait_s
        delay = 0.01
        while True:
            leases = await self.shaper.lease(dest, want, policy)
            if leases or time.monotonic() >= deadline:
                return leases
            await asyncio.sleep(delay)  # bounded back-off polling: the limit is shared with other processes
            delay = min(delay * 2, 0.2)

    async def _try_hosts(self, policy: ShapingPolicy, route: Route, envs: list[Envelope], connections: int
                         ) -> list[DeliveryResult]:
        results: dict[int, DeliveryResult] = {}
        todo = list(range(len(envs)))
        for host in route.hosts:
            for address in host.addresses:
                if not todo:
                    break
                got = await self._send(policy, host.name, address, [envs[i] for i in todo], connections)
                retry = []
                for i, r in zip(todo, got, strict=True):
                    results[i] = r
                    if _never_started(r):
                        retry.append(i)
                todo = retry
        return [results[i] for i in range(len(envs))]

    async def _send(self, policy: ShapingPolicy, host: str, address: str, envs: list[Envelope],
                    connections: int) -> list[DeliveryResult]:
        c = self.config
        transport = _MxHostTransport(SmtpRelayConfig(
            host=address, port=c.port_overrides.get(host, c.port),
            starttls=StartTls.REQUIRED if policy.tls_required else StartTls.OPPORTUNISTIC,
            timeout_s=c.timeout_s, max_connections=connections,
            max_messages_per_connection=policy.messages_per_connection, helo_name=c.helo_name, tls_verify=False,
        ))
        try:
            return await transport.deliver(envs)
        finally:
            await transport.close()

    async def close(self) -> None:
        self._closed = True
