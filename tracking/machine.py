"""Is this open or click a person, or a machine? Pure rules over what the HTTP request and the ledger tell.

Machine opens are counted apart, never dropped: Apple Mail Privacy Protection (MPP) prefetches every image of
every message through Apple's proxies whether or not the person reads it (so its "opens" say nothing about
engagement), security gateways fetch images and follow links to scan them, and anything that reacts within a
couple of seconds of our hand-off was not a human reading the message.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class MachineReason(StrEnum):
    APPLE_MPP = "apple_mpp"
    SCANNER = "scanner"  # a known security gateway / link scanner / HTTP library user agent
    HEAD = "head"  # link checkers probe with HEAD; a browser following a link sends GET
    TOO_FAST = "too_fast"  # within `fast_seconds` of the hand-off
    NO_USER_AGENT = "no_user_agent"


# Apple owns 17.0.0.0/8; MPP's own prefetches come from it with the bare UA "Mozilla/5.0" (no engine tokens),
# which no real mail client sends. More egress networks can be added by configuration.
_APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
_BARE_MOZILLA = re.compile(r"^Mozilla/5\.0$")
_SCANNER_UA = re.compile(
    r"barracuda|mimecast|proofpoint|symantec|messagelabs|trend ?micro|sophos|fortinet|forcepoint|cisco|ironport|"
    r"zscaler|paloalto|safelinks|safe-links|microsoft office|ms-office|bingpreview|bot\b|spider|crawler|"
    r"python-requests|python-urllib|aiohttp|httpx|go-http-client|curl/|wget/|java/|okhttp|libwww|headless",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class MachineRules:
    fast_seconds: float = 2.0
    extra_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())

    @staticmethod
    def with_networks(cidrs: Iterable[str], fast_seconds: float = 2.0) -> MachineRules:
        return MachineRules(fast_seconds, tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))


def _in(ip: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in n for n in networks)


def request_reason(method: str, user_agent: str, ip: str, rules: MachineRules = MachineRules()) -> MachineReason | None:
    """What the request alone says (cheap: called on the hot path before the response)."""
    if method.upper() == "HEAD":
        return MachineReason.HEAD
    kind = _user_agent_kind(user_agent)
    if kind is MachineReason.NO_USER_AGENT or kind is MachineReason.SCANNER:
        return kind
    if kind is MachineReason.APPLE_MPP and _in(ip, _APPLE_NETWORKS + rules.extra_networks):
        return MachineReason.APPLE_MPP
    if rules.extra_networks and _in(ip, rules.extra_networks):
        return MachineReason.APPLE_MPP
    return None


@functools.lru_cache(maxsize=4096)
def _user_agent_kind(user_agent: str) -> MachineReason | None:
    """Cached: user agents repeat a lot and the scanner pattern is the costly part of the hot path."""
    ua = user_agent.strip()
    if not ua:
        return MachineReason.NO_USER_AGENT
    if _BARE_MOZILLA.match(ua):
        return MachineReason.APPLE_MPP  # only if the address is Apple's too (checked by the caller)
    if _SCANNER_UA.search(ua):
        return MachineReason.SCANNER
    return None


def timing_reason(seconds_since_handoff: float | None, rules: MachineRules = MachineRules()) -> MachineReason | None:
    """What the ledger adds: a reaction within seconds of the hand-off is a gateway, not a reader."""
    if seconds_since_handoff is not None and seconds_since_handoff < rules.fast_seconds:
        return MachineReason.TOO_FAST
    return None
