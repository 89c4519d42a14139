"""Per-destination traffic shaping: who a destination is, and how much traffic it is sent (pure, no I/O).

A *destination* is the mailbox provider behind a domain's MX hosts, not the domain: every domain hosted by
Gmail shares the `gmail` budget, every Microsoft 365 tenant the `outlook` one. Domains on other hosts are
grouped by *site*: the registered domain of their best MX host (`mx1.ovh.net` → `site:ovh.net`).

Defaults: the generic one is KumoMTA's published generic default (10 connections, 100 deliveries per
connection, 100 msg/s). The provider rows are Envoi's conservative starting values (providers publish no
numbers; Microsoft and Yahoo are known to throttle on many messages per connection, Orange on concurrency).
The adaptive state (`sender.shaper`) scales the rate and the connection count down on throttling replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sender.transport import DeliveryResult, Outcome


@dataclass(frozen=True, slots=True)
class ShapingPolicy:
    max_connections: int = 10  # concurrent connections from all workers together
    messages_per_connection: int = 100
    rate_per_s: float = 100.0  # token bucket, burst of one second
    tls_required: bool = False  # STARTTLS or no delivery (no cleartext fallback)

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.messages_per_connection < 1 or self.rate_per_s <= 0:
            raise ValueError(f"invalid shaping policy {self}")


GENERIC = ShapingPolicy(10, 100, 100.0)  # KumoMTA's generic default

DEFAULT_POLICIES: Mapping[str, ShapingPolicy] = {
    "gmail": ShapingPolicy(20, 100, 200.0),
    "outlook": ShapingPolicy(10, 20, 50.0),
    "yahoo": ShapingPolicy(5, 20, 30.0),
    "apple": ShapingPolicy(5, 50, 30.0),
    "orange": ShapingPolicy(3, 100, 20.0),
    "free": ShapingPolicy(5, 100, 30.0),
    "sfr": ShapingPolicy(5, 100, 30.0),
    "laposte": ShapingPolicy(3, 50, 10.0),
}

# MX host suffixes of the big providers (lower case, dot-anchored).
PROVIDER_MX: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gmail", ("google.com", "googlemail.com")),
    ("outlook", ("outlook.com", "hotmail.com", "protection.outlook.com")),
    ("yahoo", ("yahoodns.net", "yahoo.com", "aol.com")),
    ("apple", ("icloud.com", "me.com")),
    ("orange", ("orange.fr", "wanadoo.fr")),
    ("free", ("free.fr",)),
    ("sfr", ("sfr.fr",)),
    ("laposte", ("laposte.net",)),
)

_TWO_LEVEL = frozenset({"co.uk", "com.au", "co.jp", "com.br", "co.nz", "org.uk", "gouv.fr", "asso.fr"})


def provider_of(mx_host: str) -> str | None:
    host = mx_host.lower().rstrip(".")
    for name, suffixes in PROVIDER_MX:
        if any(host == s or host.endswith("." + s) for s in suffixes):
            return name
    return None


def site_of(mx_host: str) -> str:
    """The registered domain of an MX host, approximately (a short list of two-level public suffixes)."""
    labels = mx_host.lower().rstrip(".").split(".")
    n = 3 if ".".join(labels[-2:]) in _TWO_LEVEL else 2
    return ".".join(labels[-n:])


def destination_of(mx_hosts: Iterable[str]) -> str:
    """The shaping key of a domain from its MX hosts, best first: a provider name, else `site:<domain>`."""
    hosts = list(mx_hosts)
    for h in hosts:
        p = provider_of(h)
        if p is not None:
            return p
    return f"site:{site_of(hosts[0])}" if hosts else "site:unknown"


def policy_for(destination: str, overrides: Mapping[str, ShapingPolicy] | None = None,
               tls_required: Iterable[str] = ()) -> ShapingPolicy:
    table = {**DEFAULT_POLICIES, **(overrides or {})}
    policy = table.get(destination, (overrides or {}).get("generic", GENERIC))
    if destination in set(tls_required) and not policy.tls_required:
        policy = ShapingPolicy(policy.max_connections, policy.messages_per_connection, policy.rate_per_s, True)
    return policy


_THROTTLE_TEXT = re.compile(r"rate|too many|throttl|try (again )?later|reputation|temporarily deferred|RP-00|TS0",
                            re.IGNORECASE)


def is_throttle(result: DeliveryResult) -> bool:
    """A reply that asks us to slow down: 421 (service closing: the provider sheds load, RFC 5321 §3.8),
    any 4.7.x (security/policy: Gmail 4.7.28 rate, Outlook 4.7.650 reputation, Yahoo TSS04), or a 4xx whose
    text says rate/too many/try later."""
    if result.outcome is not Outcome.TRANSIENT or result.code is None:
        return False
    if result.code == 421 or (result.enhanced or "").startswith("4.7."):
        return True
    return 400 <= result.code < 500 and bool(_THROTTLE_TEXT.search(result.text))
