"""The local DNS server that MX, DKIM and DNSBL tests rely on: what it answers, over UDP and TCP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from tests.support.dns_server import DnsServer, txt_strings


@pytest.fixture
def dns_srv() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server
        assert server.errors == []


def test_mx_records_in_preference_order_and_addresses(dns_srv: DnsServer) -> None:
    dns_srv.zone.add("example.com", "MX", "20 mx2.example.com.", "10 mx1.example.com.", ttl=60)
    dns_srv.zone.add("mx1.example.com", "A", "127.0.0.1")
    dns_srv.zone.add("mx1.example.com", "AAAA", "::1")
    resolver = dns_srv.resolver()
    answer = resolver.resolve("example.com", "MX")
    assert sorted((r.preference, r.exchange.to_text()) for r in answer) == [
        (10, "mx1.example.com."),
        (20, "mx2.example.com."),
    ]
    assert answer.rrset is not None and answer.rrset.ttl == 60  # what a TTL-respecting cache reads
    assert [r.to_text() for r in resolver.resolve("mx1.example.com", "A")] == ["127.0.0.1"]
    assert [r.to_text() for r in resolver.resolve("mx1.example.com", "AAAA")] == ["::1"]


def test_null_mx(dns_srv: DnsServer) -> None:
    dns_srv.zone.add_null_mx("nomail.example")
    [record] = dns_srv.resolver().resolve("nomail.example", "MX")
    assert record.preference == 0 and record.exchange.to_text() == "."  # RFC 7505


def test_nxdomain_versus_no_data(dns_srv: DnsServer) -> None:
    dns_srv.zone.add("s1._domainkey.example.com", "TXT", '"v=DKIM1"')
    resolver = dns_srv.resolver()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("absent.example", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("s1._domainkey.example.com", "MX")  # the name exists, not that type
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("_domainkey.example.com", "TXT")  # an empty non-terminal exists (RFC 8020)


def test_long_txt_is_split_into_255_byte_strings_and_comes_back_whole(dns_srv: DnsServer) -> None:
    value = "v=DKIM1; k=rsa; p=" + "Q" * 600
    dns_srv.zone.add_txt("s1._domainkey.example.com", value)
    [record] = dns_srv.resolver().resolve("s1._domainkey.example.com", "TXT")
    assert [len(s) for s in record.strings] == [255, 255, 108]
    assert b"".join(record.strings).decode() == value
    assert txt_strings("") == [b""]


def test_cname_is_followed(dns_srv: DnsServer) -> None:
    dns_srv.zone.add("www.example.com", "CNAME", "host.example.net.")
    dns_srv.zone.add("host.example.net", "A", "192.0.2.7")
    answer = dns_srv.resolver().resolve("www.example.com", "A")
    assert answer.canonical_name.to_text() == "host.example.net."
    assert [r.to_text() for r in answer] == ["192.0.2.7"]


def test_large_answer_is_truncated_over_udp_and_served_over_tcp(dns_srv: DnsServer) -> None:
    for i in range(6):
        dns_srv.zone.add_txt("big.example", f"{i}" * 300)
    query = dns.message.make_query("big.example", "TXT")
    udp = dns.query.udp(query, dns_srv.host, port=dns_srv.port, timeout=2)
    assert udp.flags & dns.flags.TC
    tcp = dns.query.tcp(query, dns_srv.host, port=dns_srv.port, timeout=2)
    assert len(tcp.answer[0]) == 6
    assert len(dns_srv.resolver().resolve("big.example", "TXT")) == 6  # the resolver retries over TCP
    assert [q.transport for q in dns_srv.queries][-2:] == ["udp", "tcp"]


def test_zone_changes_are_seen_at_once_and_queries_are_counted(dns_srv: DnsServer) -> None:
    resolver = dns_srv.resolver()
    dns_srv.zone.add("example.com", "MX", "10 a.example.com.")
    assert resolver.resolve("example.com", "MX")[0].exchange.to_text() == "a.example.com."
    dns_srv.zone.set("example.com", "MX", "10 b.example.com.")
    assert resolver.resolve("example.com", "MX")[0].exchange.to_text() == "b.example.com."
    dns_srv.zone.remove("example.com")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("example.com", "MX")
    assert dns_srv.query_count("EXAMPLE.com.", "MX") == 3
    assert dns_srv.query_count("example.com", "A") == 0


def test_servfail_and_silence_for_failure_tests(dns_srv: DnsServer) -> None:
    dns_srv.zone.fail("broken.example")
    dns_srv.zone.drop("silent.example")
    query = dns.message.make_query("broken.example", "MX")
    assert dns.query.udp(query, dns_srv.host, port=dns_srv.port, timeout=2).rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.resolver.LifetimeTimeout):
        dns_srv.resolver(timeout=0.2).resolve("silent.example", "MX")


def test_dnsbl_style_lookup(dns_srv: DnsServer) -> None:
    dns_srv.zone.add("2.0.0.127.zen.example", "A", "127.0.0.2")
    dns_srv.zone.add_txt("2.0.0.127.zen.example", "Listed: see https://zen.example/lookup")
    resolver = dns_srv.resolver()
    assert [r.to_text() for r in resolver.resolve("2.0.0.127.zen.example", "A")] == ["127.0.0.2"]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("1.0.0.127.zen.example", "A")  # not listed


async def test_async_resolver(dns_srv: DnsServer) -> None:
    dns_srv.zone.add("example.com", "MX", "10 mx.example.com.")
    answer = await dns_srv.async_resolver().resolve("example.com", "MX")
    assert answer[0].exchange.to_text() == "mx.example.com."


def test_stop_releases_the_port_and_threads() -> None:
    before = threading.active_count()
    with DnsServer() as server:
        server.zone.add("example.com", "A", "192.0.2.1")
        query = dns.message.make_query("example.com", "A")
        dns.query.tcp(query, server.host, port=server.port, timeout=2)  # leaves a connection thread
        port = server.port
    assert threading.active_count() == before
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))  # would raise EADDRINUSE if the server still held it
