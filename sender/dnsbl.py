"""Periodic DNSBL checks (BRIEF: "periodic DNSBL checks of the platform's sending IPs and domains and of the
account's own domains").

- A listing of an account's own domain (its sending domains and its sender profile's From domain) suspends the
  account with the evidence (contract, Annex 1, "Suspension" (ii)), once per listing: after ops reinstate it
  knowingly, the same listing does not suspend it again; a new one does.
- A listing of a platform IP or domain cannot be pinned on one account: it is reported (returned, logged, and
  exported as a metric by the composition root) for ops to act on.
Never query through public resolvers (Spamhaus refuses them): point ENVOI_DNS_NAMESERVERS at your own resolver
or use the DQS zone with your key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm import keys
from crm.domain import AccountStatus
from crm.schema import accounts, sender_profiles, sending_domains
from guardrails.account_state import SuspensionReason
from guardrails.dnsbl import Listing, Zone, interpret, query_name
from sender import accounts_service

log = logging.getLogger(__name__)

_REMEMBER_S = 30 * 24 * 3600  # a listing already acted upon is remembered this long (refreshed while listed)


@dataclass(frozen=True, slots=True)
class DnsblReport:
    platform: list[Listing]
    accounts: dict[int, list[Listing]]
    suspended: list[int]
    errors: int  # lookups that timed out or failed (never read as "not listed" nor as "listed")


class DnsblMonitor:
    def __init__(self, engine: Engine, redis: Redis, resolver: dns.asyncresolver.Resolver, zones: Sequence[Zone],
                 platform_targets: Sequence[str], concurrency: int = 8) -> None:
        self.engine = engine
        self.redis = redis
        self.resolver = resolver
        self.zones = tuple(zones)
        self.platform_targets = tuple(platform_targets)
        self._limit = asyncio.Semaphore(concurrency)

    def _account_domains(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        with self.engine.connect() as conn:
            active = select(accounts.c.id).where(accounts.c.status == AccountStatus.ACTIVE.value)
            for account_id, domain in conn.execute(
                    select(sending_domains.c.account_id, sending_domains.c.domain)
                    .where(sending_domains.c.account_id.in_(active))):
                out.setdefault(account_id, set()).add(domain.lower())
            for account_id, from_email in conn.execute(
                    select(sender_profiles.c.account_id, sender_profiles.c.from_email)
                    .where(sender_profiles.c.account_id.in_(active))):
                if from_email and "@" in from_email:
                    out.setdefault(account_id, set()).add(from_email.rpartition("@")[2].lower())
        return out

    async def _lookup(self, target: str, zone: Zone) -> Listing | Exception | None:
        name = query_name(target, zone)
        if name is None:
            return None
        async with self._limit:
            try:
                answer = await self.resolver.resolve(name, "A")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return None
            except (dns.exception.DNSException, OSError) as exc:
                return exc
        return interpret(target, zone, [r.to_text() for r in answer])

    async def _check(self, targets: Sequence[str]) -> tuple[list[Listing], int]:
        pairs = [(t, z) for t in targets for z in self.zones]
        results = await asyncio.gather(*(self._lookup(t, z) for t, z in pairs))
        listings = [r for r in results if isinstance(r, Listing)]
        errors = sum(1 for r in results if isinstance(r, Exception))
        return listings, errors

    async def check_once(self) -> DnsblReport:
        if not self.zones:
            return DnsblReport([], {}, [], 0)
        platform, errors = await self._check(self.platform_targets)
        for listing in platform:
            log.warning("platform %s is listed on %s (%s: %s)", listing.target, listing.zone, listing.answer,
                        listing.meaning)
        by_account: dict[int, list[Listing]] = {}
        suspended: list[int] = []
        for account_id, domains in (await asyncio.to_thread(self._account_domains)).items():
            listings, failed = await self._check(sorted(domains))
            errors += failed
            if not listings:
                continue
            by_account[account_id] = listings
            if await self._new_listing(account_id, listings):
                evidence = {"blocklist": [
                    {"target": x.target, "zone": x.zone, "answer": x.answer, "meaning": x.meaning} for x in listings]}
                await accounts_service.suspend(self.engine, self.redis, account_id, SuspensionReason.BLOCKLISTED,
                                               evidence, note="DNSBL check")
                suspended.append(account_id)
        return DnsblReport(platform, by_account, suspended, errors)

    async def _new_listing(self, account_id: int, listings: Sequence[Listing]) -> bool:
        """True when one of the listings was not acted upon before (remembered in Redis, refreshed while listed)."""
        pipe = self.redis.pipeline(transaction=False)
        for x in listings:
            pipe.set(keys.dnsbl_seen(account_id, x.zone, x.target), x.answer, ex=_REMEMBER_S, get=True)
        previous = await pipe.execute()
        return any(p is None for p in previous)
