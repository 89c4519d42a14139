"""DNS blocklists (DNSBL): which name to query and what an answer means (STANDARDS §8).

Contract, Annex 1, "Suspension" (ii): the provider may suspend an account whose sending causes « une mise sur
liste noire ». Pure: the lookups themselves are done by `sender.dnsbl`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum


class Target(StrEnum):
    IP = "ip"  # zones such as zen.spamhaus.org list IPv4 addresses (reversed octets)
    DOMAIN = "domain"  # zones such as dbl.spamhaus.org list domain names


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    lists: Target


@dataclass(frozen=True, slots=True)
class Listing:
    target: str
    zone: str
    answer: str  # the 127.x.y.z return code
    meaning: str


# Return codes documented by Spamhaus (STANDARDS §8); other zones' codes are reported as "listed".
_MEANINGS = {
    "127.0.0.2": "SBL (spam source)", "127.0.0.3": "CSS (snowshoe spam)", "127.0.0.4": "XBL (exploited host)",
    "127.0.0.9": "DROP", "127.0.0.10": "PBL (policy: end-user range)", "127.0.0.11": "PBL (policy)",
    "127.0.0.30": "BCL", "127.0.1.2": "DBL: low-reputation domain (spam)", "127.0.1.4": "DBL: phishing",
    "127.0.1.5": "DBL: malware", "127.0.1.6": "DBL: botnet C&C",
}


def query_name(target: str, zone: Zone) -> str | None:
    """The name to resolve (A record), or None when the target does not fit the zone (e.g. IPv6 on an IPv4 list)."""
    if zone.lists is Target.IP:
        try:
            ip = ipaddress.ip_address(target)
        except ValueError:
            return None
        if ip.version != 4:
            return None
        return ".".join(reversed(target.split("."))) + "." + zone.name
    name = target.strip().rstrip(".").lower()
    return f"{name}.{zone.name}" if "." in name else None


def interpret(target: str, zone: Zone, answers: list[str]) -> Listing | None:
    """A listing, or None. NXDOMAIN (no answers) means not listed; 127.255.255.x are the DNSBL's own ERROR
    codes (bad zone, public resolver refused, over quota) and never a listing; anything outside 127/8 is a
    misbehaving resolver (NXDOMAIN hijacking), never a listing either."""
    for answer in sorted(answers):
        try:
            ip = ipaddress.ip_address(answer)
        except ValueError:
            continue
        if ip.version != 4 or not answer.startswith("127.") or answer.startswith("127.255.255."):
            continue
        if zone.lists is Target.DOMAIN and answer.startswith("127.0.1.") and int(answer.rsplit(".", 1)[1]) >= 100:
            meaning = "DBL: abused legitimate domain"
        else:
            meaning = _MEANINGS.get(answer, "listed")
        return Listing(target, zone.name, answer, meaning)
    return None


def parse_zones(spec: str) -> tuple[Zone, ...]:
    """`zen.spamhaus.org:ip,dbl.spamhaus.org:domain` → zones (the kind defaults to ip)."""
    zones = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, kind = item.partition(":")
        zones.append(Zone(name.strip().rstrip("."), Target(kind.strip() or "ip")))
    return tuple(zones)
