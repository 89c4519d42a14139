"""MX resolution for direct delivery (RFC 5321 §5.1, RFC 7505), with a cache that respects the DNS TTLs.

- MX records sorted by preference; hosts of equal preference in random order (RFC 5321 §5.1 SHOULD),
  decided once per cached answer. Each host's A then AAAA addresses.
- No MX record (NOERROR, empty answer) → the domain itself is the implicit MX (its A/AAAA, RFC 5321 §5.1).
- Null MX (a single `MX 0 .`, RFC 7505 §3) → the domain accepts no mail: permanent failure 556 5.1.10.
- NXDOMAIN → the domain does not exist: permanent 550 5.1.2 (RFC 3463 "bad destination system address").
- SERVFAIL / timeout → temporary 451 4.4.3 (RFC 3463 "directory server failure"), cached briefly so that a
  broken zone is not hammered by every batch.
A route is cached until the smallest TTL of the answers it was built from (bounded by `min_ttl`/`max_ttl`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from sender.shaping import destination_of

_MAX_HOSTS = 5  # RFC 5321 §5.1: try at least two; more than a handful only delays the deferral


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Route:
    domain: str
    hosts: tuple[MxHost, ...]  # best first; empty when `error` is set
    implicit: bool = False  # no MX: the domain's own address
    error: str | None = None  # why there is nowhere to deliver
    code: int | None = None
    enhanced: str | None = None
    permanent: bool = False

    @property
    def destination(self) -> str:
        return destination_of(h.name for h in self.hosts) if self.hosts else f"site:{self.domain}"


class MxResolver:
    def __init__(self, resolver: dns.asyncresolver.Resolver, *, min_ttl: float = 5.0, max_ttl: float = 3600.0,
                 failure_ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = resolver
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.failure_ttl = failure_ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Route]] = {}
        self._inflight: dict[str, asyncio.Future[Route]] = {}

    async def route(self, domain: str) -> Route:
        domain = domain.lower().rstrip(".")
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        pending = self._inflight.get(domain)
        if pending is not None:  # one lookup per domain however many batches ask at once
            return await asyncio.shield(pending)
        fut: asyncio.Future[Route] = asyncio.get_running_loop().create_future()
        self._inflight[domain] = fut
        try:
            route, ttl = await self._resolve(domain)
            ttl = self.failure_ttl if route.error and not route.permanent else min(self.max_ttl, max(self.min_ttl, ttl))
            self._cache[domain] = (self.clock() + ttl, route)
            fut.set_result(route)
            return route
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[domain]

    def forget(self, domain: str) -> None:
        self._cache.pop(domain.lower().rstrip("."), None)

    async def _resolve(self, domain: str) -> tuple[Route, float]:
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return Route(domain, (), error="the recipient domain does not exist", code=550, enhanced="5.1.2",
                         permanent=True), self.max_ttl
        except dns.resolver.NoAnswer:
            return await self._implicit(domain)
        except dns.exception.DNSException as exc:
            return self._dns_failure(domain, exc), 0.0
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else self.min_ttl
        records = sorted(((r.preference, r.exchange.to_text().rstrip(".").lower()) for r in answer),
                         key=lambda r: r[0])
        if any(name in ("", ".") for _, name in records) or any(not name for _, name in records):
            # RFC 7505 §3: a null MX is the only MX; §4.3: a null MX next to others is a misconfiguration and
            # is treated as null anyway (we never send to a domain that asked for none).
            return Route(domain, (), error="the recipient domain accepts no mail (null MX, RFC 7505)", code=556,
                         enhanced="5.1.10", permanent=True), ttl
        groups: dict[int, list[str]] = {}
        for pref, name in records:
            groups.setdefault(pref, []).append(name)
        ordered: list[tuple[int, str]] = []
        for pref in sorted(groups):
            names = groups[pref]
            random.shuffle(names)  # RFC 5321 §5.1: spread load over equal-preference hosts
            ordered.extend((pref, n) for n in names)
        ordered = ordered[:_MAX_HOSTS]
        looked = await asyncio.gather(*(self._addresses(n) for _, n in ordered))
        hosts = tuple(MxHost(n, p, addrs) for (p, n), (addrs, _) in zip(ordered, looked, strict=True) if addrs)
        ttls = [t for addrs, t in looked if addrs] + [ttl]
        if not hosts:
            errors = [t for addrs, t in looked if not addrs]
            return Route(domain, (), error="no MX host has an address", code=451, enhanced="4.4.4"), (
                min(errors) if errors else self.failure_ttl)
        return Route(domain, hosts), min(ttls)

    async def _implicit(self, domain: str) -> tuple[Route, float]:
        addrs, ttl = await self._addresses(domain)
        if not addrs:
            return Route(domain, (), error="the recipient domain has neither MX nor address", code=550,
                         enhanced="5.1.2", permanent=True), self.failure_ttl
        return Route(domain, (MxHost(domain, 0, addrs),), implicit=True), ttl

    async def _addresses(self, name: str) -> tuple[tuple[str, ...], float]:
        """A then AAAA addresses of a host, and the smallest TTL (0.0 with no address)."""
        out: list[str] = []
        ttls: list[float] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(name, rdtype)
            except dns.exception.DNSException:
                continue
            out.extend(r.to_text() for r in answer)
            if answer.rrset is not None:
                ttls.append(float(answer.rrset.ttl))
        return tuple(out), (min(ttls) if ttls else 0.0)

    @staticmethod
    def _dns_failure(domain: str, exc: BaseException) -> Route:
        return Route(domain, (), error=f"DNS lookup failed for {domain}: {type(exc).__name__}", code=451,
                     enhanced="4.4.3")
