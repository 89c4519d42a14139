"""Sending-domain verification: what DNS serves for SPF, DKIM, DMARC and the bounce domain, checked against
what Envoi needs, with the exact record to publish for every check that fails (STANDARDS.md §4).

Rules applied:
- SPF (RFC 7208): exactly one `v=spf1` TXT record at the domain (§4.5: several is a permerror), carrying the
  platform's `include:` so that receivers accept our sending IPs.
- DKIM (RFC 6376 §3.6.1): every active key's selector has a TXT record whose `p=` is our public key.
- DMARC (RFC 7489 §6.1): a `v=DMARC1` record at `_dmarc.<domain>` with a valid `p=` (Gmail/Yahoo 2024: at least
  `p=none`). Alignment: DKIM signs with d=<domain> (aligned); SPF aligns only when the bounce domain is under
  the From domain, so strict DKIM alignment (`adkim=s`) is fine and strict SPF alignment is reported.
- Return path: the VERP bounce domain must receive mail (an MX, or at least an address), or bounces are lost.

Synchronous (dnspython's blocking resolver): callers on an event loop run it in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import dns.exception
import dns.resolver

_DMARC_POLICIES = frozenset({"none", "quarantine", "reject"})


@dataclass(frozen=True, slots=True)
class ExpectedDkim:
    selector: str
    value: str  # the whole TXT value, `v=DKIM1; k=rsa; p=...`


@dataclass(frozen=True, slots=True)
class Check:
    name: str  # spf | dkim:<selector> | dmarc | return_path
    ok: bool
    detail: str
    record_name: str  # where the record lives
    record_type: str
    record_value: str  # the exact record to publish (or that is published, when ok)
    found: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Report:
    domain: str
    verified: bool
    checks: tuple[Check, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "verified": self.verified,
                "checks": [{**asdict(c), "found": list(c.found)} for c in self.checks]}

    def failing(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def _txt(resolver: dns.resolver.Resolver, name: str) -> tuple[list[str], str | None]:
    """TXT strings joined per record (RFC 7208 §3.3), or an error description when DNS did not answer."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], None
    except dns.exception.DNSException as exc:
        return [], f"DNS lookup failed: {type(exc).__name__}"
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer], None


def _tags(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            out[key.strip().lower()] = "".join(val.split())  # FWS inside values is ignored (RFC 6376 §3.2)
    return out


def check_spf(resolver: dns.resolver.Resolver, domain: str, include: str) -> Check:
    records, error = _txt(resolver, domain)
    spf = [r for r in records if r.lower().startswith("v=spf1")]
    wanted = f"v=spf1 include:{include} ~all"
    if error:
        return Check("spf", False, error, domain, "TXT", wanted)
    if not spf:
        return Check("spf", False, "no SPF record", domain, "TXT", wanted)
    if len(spf) > 1:
        return Check("spf", False, "several SPF records (RFC 7208 §4.5: permerror): merge them into one",
                     domain, "TXT", _with_include(spf[0], include), tuple(spf))
    terms = spf[0].split()
    if f"include:{include}".lower() in (t.lower().lstrip("+") for t in terms):
        return Check("spf", True, "includes the platform", domain, "TXT", spf[0], tuple(spf))
    return Check("spf", False, f"the SPF record lacks include:{include}", domain, "TXT",
                 _with_include(spf[0], include), tuple(spf))


def _with_include(record: str, include: str) -> str:
    """The customer's record with our include added before its `all`/redirect (kept as they wrote it)."""
    terms = record.split()
    tail = [t for t in terms[1:] if t.lstrip("+-~?").lower() == "all" or t.lower().startswith("redirect=")]
    head = [t for t in terms[1:] if t not in tail]
    return " ".join([terms[0], *head, f"include:{include}", *(tail or ["~all"])])


def check_dkim(resolver: dns.resolver.Resolver, domain: str, expected: ExpectedDkim) -> Check:
    name = f"{expected.selector}._domainkey.{domain}"
    records, error = _txt(resolver, name)
    label = f"dkim:{expected.selector}"
    if error:
        return Check(label, False, error, name, "TXT", expected.value)
    if not records:
        return Check(label, False, "no DKIM key record at this selector", name, "TXT", expected.value)
    want = _tags(expected.value)
    for r in records:
        tags = _tags(r)
        if tags.get("p") == want.get("p") and tags.get("k", "rsa") == want.get("k", "rsa"):
            return Check(label, True, "the published key matches", name, "TXT", expected.value, tuple(records))
    return Check(label, False, "a record is published but its p= is not our key", name, "TXT",
                 expected.value, tuple(records))


def check_dmarc(resolver: dns.resolver.Resolver, domain: str, bounce_domain: str) -> Check:
    name = f"_dmarc.{domain}"
    wanted = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; aspf=r"
    records, error = _txt(resolver, name)
    dmarc = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if error:
        return Check("dmarc", False, error, name, "TXT", wanted)
    if len(dmarc) != 1:
        detail = "no DMARC record" if not dmarc else "several DMARC records (RFC 7489 §6.6.3: none applies)"
        return Check("dmarc", False, detail, name, "TXT", wanted, tuple(dmarc))
    tags = _tags(dmarc[0])
    policy = tags.get("p", "").lower()
    if policy not in _DMARC_POLICIES:
        return Check("dmarc", False, f"invalid policy p={policy or '(missing)'}", name, "TXT", wanted, tuple(dmarc))
    spf_aligned = bounce_domain == domain or (
        bounce_domain.endswith("." + domain) and tags.get("aspf", "r").lower() != "s")
    notes = [f"policy p={policy}" + (" (monitoring only)" if policy == "none" else "")]
    notes.append("DKIM aligned (d=" + domain + ")")
    notes.append("SPF aligned" if spf_aligned
                 else f"SPF not aligned (return path @{bounce_domain}): DKIM carries DMARC")
    return Check("dmarc", True, "; ".join(notes), name, "TXT", dmarc[0], tuple(dmarc))


def check_return_path(resolver: dns.resolver.Resolver, bounce_domain: str) -> Check:
    try:
        answer = resolver.resolve(bounce_domain, "MX")
        hosts = tuple(f"{r.preference} {r.exchange.to_text()}" for r in answer)
        if any(r.exchange.to_text() == "." for r in answer):
            return Check("return_path", False, "null MX: bounces would be refused", bounce_domain, "MX",
                         "10 <your inbound bounce host>.", hosts)
        return Check("return_path", True, "the bounce domain receives mail", bounce_domain, "MX",
                     hosts[0], hosts)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass
    except dns.exception.DNSException as exc:
        return Check("return_path", False, f"DNS lookup failed: {type(exc).__name__}", bounce_domain, "MX",
                     "10 <your inbound bounce host>.")
    return Check("return_path", False, "the bounce domain has no MX: bounces and complaints would be lost",
                 bounce_domain, "MX", "10 <your inbound bounce host>.")


def verify_domain(resolver: dns.resolver.Resolver, domain: str, dkim: Sequence[ExpectedDkim], *,
                  spf_include: str, bounce_domain: str) -> Report:
    """Every check, in the order a customer publishes them. Verified when all pass."""
    checks = [check_spf(resolver, domain, spf_include)]
    checks.extend(check_dkim(resolver, domain, d) for d in dkim)
    if not dkim:
        checks.append(Check("dkim", False, "no DKIM key: register the domain with POST /v1/domains", "",
                            "TXT", ""))
    checks.append(check_dmarc(resolver, domain, bounce_domain))
    checks.append(check_return_path(resolver, bounce_domain))
    return Report(domain, all(c.ok for c in checks), tuple(checks))
