"""Mailbox provider of recipient domains from their MX hosts (for the statistics' provider grouping).

A company domain hosted by Google Workspace or Microsoft 365 is filtered by that provider: grouping by the MX
host suffix (`tracking.domains.provider_of`) shows it. Resolution is bounded: at most `limit` domains per call,
concurrently, each with the resolver's timeout, answers cached for `ttl_s`; a failure just leaves the domain
without a provider (statistics never fail on DNS).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception

from tracking.domains import provider_of


class MxProviders:
    def __init__(self, resolver: dns.asyncresolver.Resolver, ttl_s: float = 3600.0, limit: int = 50) -> None:
        self.resolver = resolver
        self.ttl_s = ttl_s
        self.limit = limit
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def hosts(self, domain: str) -> tuple[str, ...]:
        hit = self._cache.get(domain)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            answer = await self.resolver.resolve(domain, "MX")
            found = tuple(str(r.exchange).rstrip(".").lower() for r in sorted(answer, key=lambda r: r.preference))
        except (dns.exception.DNSException, OSError):
            found = ()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[domain] = (now + self.ttl_s, found)
        return found

    async def providers(self, domains: Iterable[str]) -> dict[str, str]:
        """Provider per domain, where known (well-known mailbox domains need no lookup)."""
        out: dict[str, str] = {}
        unknown = []
        for d in domains:
            known = provider_of(d)
            if known:
                out[d] = known
            elif d != "-":
                unknown.append(d)
        unknown = unknown[: self.limit]
        for d, hosts in zip(unknown, await asyncio.gather(*(self.hosts(d) for d in unknown)), strict=True):
            provider = provider_of(d, hosts)
            if provider:
                out[d] = provider
        return out
