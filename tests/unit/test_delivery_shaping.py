"""Issue 7, pure parts: destination keys from MX hosts, policies, throttling replies, SPF record advice."""

from __future__ import annotations

import pytest

from sender.dkim_road import from_domain
from sender.domain_check import _with_include
from sender.shaping import DEFAULT_POLICIES, GENERIC, ShapingPolicy, destination_of, is_throttle, policy_for
from sender.transport import DeliveryResult, Outcome


@pytest.mark.parametrize(("hosts", "key"), [
    (["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"], "gmail"),
    (["aspmx.l.google.com."], "gmail"),  # a Google Workspace customer shares Gmail's budget
    (["acme-fr.mail.protection.outlook.com"], "outlook"),
    (["mta5.am0.yahoodns.net"], "yahoo"),
    (["smtp-in.orange.fr"], "orange"),
    (["mx1.ovh.net", "mx2.ovh.net"], "site:ovh.net"),
    (["mail.example.co.uk"], "site:example.co.uk"),
    ([], "site:unknown"),
])
def test_destination_is_the_provider_behind_the_mx(hosts: list[str], key: str) -> None:
    assert destination_of(hosts) == key


def test_generic_policy_is_kumomta_default_and_tls_can_be_required() -> None:
    assert policy_for("site:ovh.net") == GENERIC == ShapingPolicy(10, 100, 100.0)
    assert policy_for("gmail") == DEFAULT_POLICIES["gmail"]
    assert policy_for("gmail", tls_required=["gmail"]).tls_required
    assert not policy_for("outlook", tls_required=["gmail"]).tls_required
    custom = ShapingPolicy(2, 5, 1.0)
    assert policy_for("site:x.fr", {"generic": custom}) == custom
    with pytest.raises(ValueError):
        ShapingPolicy(0, 1, 1.0)


@pytest.mark.parametrize(("code", "enhanced", "text", "throttle"), [
    (421, "4.7.0", "Try again later, closing connection", True),
    (450, "4.7.28", "unusual rate of unsolicited mail", True),
    (451, "4.7.650", "The mail server has been temporarily rate limited", True),
    (421, None, "TSS04 Messages temporarily deferred due to user complaints", True),
    (452, "4.2.2", "mailbox full", False),
    (451, "4.3.0", "local error", False),
    (550, "5.7.1", "rejected", False),
])
def test_throttling_replies(code: int, enhanced: str | None, text: str, throttle: bool) -> None:
    outcome = Outcome.TRANSIENT if code < 500 else Outcome.PERMANENT
    assert is_throttle(DeliveryResult(1, outcome, code, enhanced, text)) is throttle


def test_spf_advice_keeps_the_customer_record() -> None:
    assert _with_include("v=spf1 mx include:_spf.google.com -all", "_spf.envoi.fr") == (
        "v=spf1 mx include:_spf.google.com include:_spf.envoi.fr -all")
    assert _with_include("v=spf1 a", "_spf.envoi.fr") == "v=spf1 a include:_spf.envoi.fr ~all"


def test_from_domain_reads_the_header_block_only() -> None:
    msg = b"Subject: x\r\nFrom: \"Shop\" <news@Boutique.FR>\r\nTo: a@b.c\r\n\r\nFrom: x@evil.example\r\n"
    assert from_domain(msg) == "boutique.fr"
    assert from_domain(b"Subject: none\r\n\r\nFrom: x@evil.example\r\n") is None
    assert from_domain(b'From: "a@b.example"\r\n <news@shop.fr>\r\n\r\n') == "shop.fr"  # folded, quoted @
