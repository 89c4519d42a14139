from __future__ import annotations

import pytest

from guardrails.dnsbl import Target, Zone, interpret, parse_zones, query_name

ZEN = Zone("zen.spamhaus.org", Target.IP)
DBL = Zone("dbl.spamhaus.org", Target.DOMAIN)


def test_ipv4_is_queried_with_reversed_octets():
    assert query_name("192.0.2.99", ZEN) == "99.2.0.192.zen.spamhaus.org"


def test_domain_zone_queries_the_domain_and_ip_zone_skips_names_and_ipv6():
    assert query_name("Example.COM.", DBL) == "example.com.dbl.spamhaus.org"
    assert query_name("example.com", ZEN) is None
    assert query_name("2001:db8::1", ZEN) is None
    assert query_name("localhost", DBL) is None


@pytest.mark.parametrize("answer, meaning", [
    ("127.0.0.2", "SBL (spam source)"), ("127.0.0.4", "XBL (exploited host)"),
    ("127.0.0.10", "PBL (policy: end-user range)"),
])
def test_listing_codes_are_listings_with_their_meaning(answer, meaning):
    listing = interpret("192.0.2.99", ZEN, [answer])
    assert listing is not None and listing.answer == answer and listing.meaning == meaning


@pytest.mark.parametrize("answers", [[], ["127.255.255.254"], ["127.255.255.252"], ["127.255.255.255"],
                                     ["192.0.2.1"], ["not-an-ip"]])
def test_errors_empty_answers_and_hijacked_nxdomain_are_never_listings(answers):
    assert interpret("192.0.2.99", ZEN, answers) is None


def test_dbl_abused_legitimate_range_is_named():
    listing = interpret("example.com", DBL, ["127.0.1.102"])
    assert listing is not None and listing.meaning == "DBL: abused legitimate domain"


def test_zone_specification_parses_kinds():
    assert parse_zones("zen.spamhaus.org:ip, dbl.spamhaus.org:domain,bl.example") == (
        ZEN, DBL, Zone("bl.example", Target.IP))
    with pytest.raises(ValueError):
        parse_zones("zen.spamhaus.org:url")
