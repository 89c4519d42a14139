"""Issue 4, pure parts: domain grouping, machine detection, HTML rewriting, tokens, SNS URL rule, statistics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.counters import Metric, field, parse, totals
from tracking.domains import provider_of, registrable_domain
from tracking.machine import MachineReason, MachineRules, request_reason, timing_reason
from tracking.rewrite import insert_pixel, rewrite_links, trackable_urls
from tracking.signals import domain_counters
from tracking.sns import SnsError, SnsVerifier, string_to_sign
from tracking.stats import differences, failure_metric, view
from tracking.tokens import TrackingTokens
from tracking.web import GIF, safe_redirect_target

KEYS = ["k" * 40]


@pytest.mark.parametrize(("domain", "expected"), [
    ("example.com", "example.com"), ("mail.example.com", "example.com"), ("a.b.example.fr", "example.fr"),
    ("mail.example.co.uk", "example.co.uk"), ("example.co.uk", "example.co.uk"), ("x.mairie.gouv.fr", "mairie.gouv.fr"),
    ("MAIL.Example.COM.", "example.com"), ("localhost", "localhost"),
])
def test_registrable_domain_groups_subdomains_under_the_public_suffix(domain, expected):
    assert registrable_domain(domain) == expected


def test_provider_comes_from_known_domains_then_from_the_mx():
    assert provider_of("gmail.com") == "google" and provider_of("wanadoo.fr") == "orange"
    assert provider_of("acme.fr", ("acme-fr.mail.protection.outlook.com.",)) == "microsoft"
    assert provider_of("acme.fr", ("aspmx.l.google.com",)) == "google"
    assert provider_of("acme.fr", ("mx.acme.fr",)) is None and provider_of("acme.fr") is None
    assert provider_of("acme.fr", ("evilgoogle.com",)) is None  # a suffix match is on a label boundary


def test_machine_opens_are_told_from_people():
    assert request_reason("GET", "Mozilla/5.0", "17.58.0.12") is MachineReason.APPLE_MPP
    assert request_reason("GET", "Mozilla/5.0", "203.0.113.9") is None  # the bare UA alone proves nothing
    assert request_reason("HEAD", "Mozilla/5.0 (Windows NT 10.0)", "203.0.113.9") is MachineReason.HEAD
    assert request_reason("GET", "python-requests/2.31", "203.0.113.9") is MachineReason.SCANNER
    assert request_reason("GET", "Mozilla/5.0 (compatible; Barracuda)", "203.0.113.9") is MachineReason.SCANNER
    assert request_reason("GET", "", "203.0.113.9") is MachineReason.NO_USER_AGENT
    rules = MachineRules.with_networks(["198.51.100.0/24"])
    assert request_reason("GET", "Mozilla/5.0 (Windows NT 10.0)", "198.51.100.7", rules) is MachineReason.APPLE_MPP
    assert request_reason("GET", "Mozilla/5.0 (Windows NT 10.0; Win64) Gecko/20100101 Firefox/128.0",
                          "203.0.113.9") is None
    assert timing_reason(0.5) is MachineReason.TOO_FAST and timing_reason(30.0) is None
    assert timing_reason(None) is None


def test_links_are_rewritten_except_unsubscribe_mailto_anchors_and_opt_outs():
    doc = ('<a href="https://s.example/a?x=1&amp;y=2">A</a><A HREF=\'http://s.example/b\'>B</A>'
           '<a href="http://pub/u/TOKEN">unsub</a><a href="mailto:x@y">m</a><a href="#top">t</a>'
           '<a data-envoi-notrack href="https://s.example/c">C</a>')
    assert trackable_urls(doc, ["http://pub/u/"]) == ["https://s.example/a?x=1&y=2", "http://s.example/b"]
    out = rewrite_links(doc, lambda u: f"http://pub/c/{u[-1]}?q=\"x\"", ["http://pub/u/"])
    assert 'href="http://pub/c/2?q=&quot;x&quot;"' in out and "HREF='http://pub/c/b?q=&quot;x&quot;'" in out
    assert 'href="http://pub/u/TOKEN"' in out and 'href="mailto:x@y"' in out and 'href="https://s.example/c"' in out


def test_the_pixel_goes_before_the_last_body_end_or_at_the_end():
    assert insert_pixel("<p>x</p></BODY></html>", "http://p/o/t").startswith('<p>x</p><img src="http://p/o/t"')
    assert insert_pixel("<p>x</p>", "http://p/o/t").endswith('width:1px;height:1px" />')
    assert len(GIF) == 43 and GIF.startswith(b"GIF89a")


def test_tokens_round_trip_and_reject_forgeries_and_other_purposes():
    t = TrackingTokens(KEYS)
    assert t.verify_open(t.open_token(1, 2, 3, 4)).message_id == 2  # type: ignore[union-attr]
    click = t.verify_click(t.click_token(1, 2, 3, 7))
    assert click is not None and (click.campaign_id, click.link_index) == (3, 7)
    assert t.verify_click(t.open_token(1, 2, 3)) is None and t.verify_open(t.click_token(1, 2, 3, 0)) is None
    assert TrackingTokens(["z" * 40]).verify_open(t.open_token(1, 2, 3)) is None  # a foreign key
    assert TrackingTokens(["z" * 40, *KEYS]).verify_open(t.open_token(1, 2, 3)) is not None  # rotation


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_no_string_is_accepted_as_a_token_without_the_key(text):
    t = TrackingTokens(KEYS)
    assert t.verify_open(text) is None and t.verify_click(text) is None


@given(st.integers(0, 75), st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
def test_changing_one_character_of_a_click_token_invalidates_it(pos, char):
    t = TrackingTokens(KEYS)
    token = t.click_token(5, 6, 7, 1)
    forged = token[:pos] + char + token[pos + 1:]
    if forged != token:
        claims = t.verify_click(forged)
        # Base64 padding bits can make two spellings decode to the same bytes; then the claims are identical.
        assert claims is None or (claims.campaign_id, claims.link_index, claims.message_id) == (7, 1, 6)


@pytest.mark.parametrize(("url", "ok"), [
    ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", True),
    ("http://sns.eu-west-1.amazonaws.com/x.pem", False),
    ("https://sns.eu-west-1.amazonaws.com.evil.example/x.pem", False),
    ("https://evil.example/sns.eu-west-1.amazonaws.com/x.pem", False),
    ("https://user@sns.eu-west-1.amazonaws.com/x.pem", False),
    ("https://s3.amazonaws.com/x.pem", False),
    ("not a url", False),
])
def test_sns_certificates_come_only_from_sns_hosts(url, ok):
    assert SnsVerifier().trusted_url(url) is ok


def test_sns_string_to_sign_follows_the_documented_field_order():
    body = {"Type": "Notification", "Message": "m", "MessageId": "i", "Timestamp": "t", "TopicArn": "a"}
    assert string_to_sign(body) == b"Message\nm\nMessageId\ni\nTimestamp\nt\nTopicArn\na\nType\nNotification\n"
    assert b"Subject\ns\n" in string_to_sign(dict(body, Subject="s"))
    with pytest.raises(SnsError):
        string_to_sign({"Type": "SubscriptionConfirmation", "Message": "m"})


async def test_sns_refuses_an_untrusted_certificate_url_before_fetching_it():
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return b""

    v = SnsVerifier(fetch=fetch)
    with pytest.raises(SnsError, match="certificate URL"):
        await v.verify({"Type": "Notification", "SigningCertURL": "https://evil.example/x.pem",
                        "SignatureVersion": "2", "Signature": "AA=="})
    assert fetched == []


@pytest.mark.parametrize(("url", "ok"), [
    ("https://shop.example.org/a?b=c", True), ("http://x.example/", True), ("javascript:alert(1)", False),
    ("//evil.example/", False), ("https:///evil", False), ("https://a.example/\r\nSet-Cookie: x", False),
    ("data:text/html,hi", False),
])
def test_redirect_targets_are_plain_http_urls(url, ok):
    assert safe_redirect_target(url) is ok


def test_failures_are_split_hard_or_soft_by_the_shared_reply_policy():
    assert failure_metric(550, "5.1.1", "user unknown") is Metric.FAILED_HARD
    assert failure_metric(552, "5.2.2", "mailbox full") is Metric.FAILED_SOFT
    assert failure_metric(550, "5.7.1", "blocked using spamhaus") is Metric.FAILED_SOFT
    assert failure_metric(None, None, "render: boom") is Metric.FAILED_SOFT


def test_statistics_view_totals_delivered_and_provider_groups():
    raw = {field(Metric.SENT, "mail.gmail.com"): b"3", field(Metric.BOUNCED_HARD, "gmail.com"): b"1",
           field(Metric.SENT, "acme.fr"): b"2", field(Metric.COMPLAINTS, "acme.fr"): b"1",
           field(Metric.OPENS_TOTAL, None): b"4"}
    by_domain = parse(raw)
    assert by_domain["gmail.com"] == {"sent": 3, "bounced_hard": 1} and by_domain["-"] == {"opens_total": 4}
    doc = view(by_domain)
    rows = {r["domain"]: r for r in doc["domains"]}
    assert rows["gmail.com"]["delivered"] == 2 and rows["gmail.com"]["provider"] == "google"
    assert rows["gmail.com"]["hard_bounces"] == 1 and doc["totals"]["delivered"] == 4
    assert doc["providers"]["google"]["sent"] == 3 and totals(by_domain)["opens_total"] == 4
    groups = {d.domain: (d.delivered, d.complaints) for d in domain_counters(by_domain)}
    assert groups == {"gmail.com": (2, 0), "mx:google": (2, 0), "acme.fr": (2, 1)}


def test_reconciliation_lists_each_disagreement():
    assert differences({"a.fr": {"sent": 2}}, {"a.fr": {"sent": 2}}) == []
    assert differences({"a.fr": {"sent": 2}}, {"a.fr": {"sent": 3}, "b.fr": {"complaints": 1}}) == [
        {"domain": "a.fr", "metric": "sent", "counters": 2, "ledger": 3},
        {"domain": "b.fr", "metric": "complaints", "counters": 0, "ledger": 1}]
