"""Issue 7: the sending-domain checks against a local authoritative DNS server — the cases a customer gets wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sender.domain_check import ExpectedDkim, verify_domain
from tests.support.dns_server import DnsServer

DOMAIN = "shop.example"
BOUNCES = "bounces.envoi.example"
KEY = ExpectedDkim("envoi-rsa-20261126", "v=DKIM1; k=rsa; p=" + "A" * 392)


@pytest.fixture
def dns_srv() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def report(dns_srv: DnsServer) -> dict[str, dict[str, object]]:
    r = verify_domain(dns_srv.resolver(), DOMAIN, [KEY], spf_include="_spf.envoi.example", bounce_domain=BOUNCES)
    return {c["name"]: c for c in r.as_dict()["checks"]}


def test_everything_published_is_verified(dns_srv: DnsServer) -> None:
    dns_srv.zone.add_txt(DOMAIN, "v=spf1 mx include:_spf.envoi.example -all")
    dns_srv.zone.add_txt(f"{KEY.selector}._domainkey.{DOMAIN}", "v=DKIM1; k=rsa; p=" + "A" * 200 + " " + "A" * 192)
    dns_srv.zone.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=quarantine; adkim=s")
    dns_srv.zone.add(BOUNCES, "MX", "10 in.envoi.example.")
    r = verify_domain(dns_srv.resolver(), DOMAIN, [KEY], spf_include="_spf.envoi.example", bounce_domain=BOUNCES)
    assert r.verified, r.as_dict()


def test_the_usual_mistakes_are_reported_with_the_record_to_publish(dns_srv: DnsServer) -> None:
    dns_srv.zone.add_txt(DOMAIN, "v=spf1 include:_spf.google.com ~all")
    dns_srv.zone.add_txt(DOMAIN, "v=spf1 include:_spf.envoi.example ~all")  # two SPF records: permerror
    dns_srv.zone.add_txt(f"{KEY.selector}._domainkey.{DOMAIN}", "v=DKIM1; k=rsa; p=BBBB")  # someone else's key
    dns_srv.zone.add_txt(f"_dmarc.{DOMAIN}", "v=DMARC1; p=monitor")  # not a policy
    dns_srv.zone.add_null_mx(BOUNCES)
    checks = report(dns_srv)
    assert "several SPF records" in str(checks["spf"]["detail"]) and not checks["spf"]["ok"]
    assert "not our key" in str(checks[f"dkim:{KEY.selector}"]["detail"])
    assert checks[f"dkim:{KEY.selector}"]["record_value"] == KEY.value
    assert "invalid policy" in str(checks["dmarc"]["detail"])
    assert str(checks["dmarc"]["record_value"]).startswith("v=DMARC1; p=none")
    assert "null MX" in str(checks["return_path"]["detail"])


def test_dns_failure_is_not_a_pass(dns_srv: DnsServer) -> None:
    dns_srv.zone.fail(DOMAIN, "SERVFAIL")
    checks = report(dns_srv)
    assert not checks["spf"]["ok"] and "DNS lookup failed" in str(checks["spf"]["detail"])
