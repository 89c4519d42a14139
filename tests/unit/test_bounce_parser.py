"""Table-driven tests of the asynchronous bounce parser over the real-sample corpus.

The table is tests/fixtures/bounces/expected.json (see the README there for where each sample comes from).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracking.bounces import BounceKind, parse_bounce

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
EXPECTED: dict[str, dict[str, str | None]] = json.loads((CORPUS / "expected.json").read_text())

# Samples the parser gets wrong today, kept visible (strict xfail: fixing one makes the suite say so).
KNOWN_MISSES = {
    "flufl/aol_01.eml": "AOL names the failed mailbox without its domain ('screenname')",
    "flufl/dumbass_01.eml": "InterScan report names no recipient; the returned To is a list address",
    "flufl/yale_01.eml": "Yale's directory report gives a bare user name and no reason we recognise",
}


def _params() -> list[object]:
    params: list[object] = []
    for name, want in sorted(EXPECTED.items()):
        marks = [pytest.mark.xfail(reason=KNOWN_MISSES[name], strict=True)] if name in KNOWN_MISSES else []
        params.append(pytest.param(name, want, id=name, marks=marks))
    return params


def test_corpus_table_and_files_agree() -> None:
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.eml")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 150


@pytest.mark.parametrize(("name", "want"), _params())
def test_sample_is_classified(name: str, want: dict[str, str | None]) -> None:
    got = parse_bounce((CORPUS / name).read_bytes())
    assert (got.kind.value, got.recipient, got.status) == (want["kind"], want["recipient"], want["status"])


def test_corpus_accuracy_meets_the_issue_targets() -> None:
    results = {name: parse_bounce((CORPUS / name).read_bytes()) for name in EXPECTED}
    kind_ok = sum(r.kind.value == EXPECTED[n]["kind"] for n, r in results.items())
    rcpt_ok = sum(r.recipient == EXPECTED[n]["recipient"] for n, r in results.items())
    assert kind_ok / len(results) >= 0.97
    assert rcpt_ok / len(results) >= 0.98


# --- correlation hints -------------------------------------------------------------------------------

POSTFIX = sorted((CORPUS / "postfix").glob("*-failed.eml"))


@pytest.mark.parametrize("path", POSTFIX, ids=[p.name for p in POSTFIX])
def test_postfix_dsn_yields_verp_our_header_and_message_id(path: Path) -> None:
    raw = path.read_bytes()
    got = parse_bounce(raw).correlation
    to = re.search(rb"^To: <?(b\.[0-9a-z]+\.[0-9a-z]+)@bounce\.envoi\.test", raw, re.MULTILINE)
    assert to is not None and got.verp_local == to[1].decode()
    assert got.envoi_ref is not None and re.fullmatch(r"m\d+\.c42\.\w+", got.envoi_ref)
    assert got.message_id is not None and got.message_id.endswith("@shop.envoi.test>")


def test_envelope_recipient_is_the_first_verp_source() -> None:
    raw = (CORPUS / "postfix" / "unknown-failed.eml").read_bytes()
    got = parse_bounce(raw, envelope_to="b.zz9.sigsig@bounce.envoi.test").correlation
    assert got.verp_local == "b.zz9.sigsig"


def test_complaint_correlates_through_the_returned_message_id() -> None:
    got = parse_bounce((CORPUS / "php-bounce-handler" / "fbl-aol-redacted.eml").read_bytes())
    assert got.kind is BounceKind.COMPLAINT
    assert got.correlation.message_id == "<WEB8e6e5512333834e5792b28af4d88dc308@web>"


# --- provider JSON notifications (Amazon SES through SNS e-mail) -----------------------------------------

def _ses_mail(payload: str) -> bytes:
    return (b"From: no-reply@sns.amazonaws.com\r\nTo: ops@envoi.example\r\nSubject: AWS Notification Message\r\n"
            b"Content-Type: text/plain; charset=UTF-8\r\n\r\n" + payload.encode())


@pytest.mark.parametrize(("payload", "kind", "recipient", "reason"), [
    ('{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General",'
     '"bouncedRecipients":[{"emailAddress":"Gone@Example.com","status":"5.1.1",'
     '"diagnosticCode":"smtp; 550 5.1.1 user unknown"}]}}', "hard", "gone@example.com", "user_unknown"),
    ('{"notificationType":"Bounce","bounce":{"bounceType":"Transient","bounceSubType":"MailboxFull",'
     '"bouncedRecipients":[{"emailAddress":"full@example.com","status":"5.2.2",'
     '"diagnosticCode":"smtp; 552 5.2.2 mailbox full"}]}}', "soft", "full@example.com", "mailbox_full"),
    ('{"notificationType":"Complaint","complaint":{"complaintFeedbackType":"abuse",'
     '"complainedRecipients":[{"emailAddress":"angry@example.com"}]}}', "complaint", "angry@example.com",
     "complaint:abuse"),
    ('{"eventType":"Delivery","delivery":{"recipients":["ok@example.com"]}}', "other", "ok@example.com",
     "delivered"),
])
def test_ses_notification_by_mail(payload: str, kind: str, recipient: str, reason: str) -> None:
    got = parse_bounce(_ses_mail(payload))
    assert (got.kind.value, got.recipient, got.reason) == (kind, recipient, reason)


# --- never raise -------------------------------------------------------------------------------------

MALFORMED = [
    b"",
    b"   \r\n",
    b"\x00\x01\x02\xff\xfe binary garbage",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=X\r\n\r\n--X\r\n",
    b"Content-Type: multipart/report; boundary=\r\n\r\nno parts at all",
    b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822;\r\nAction:\r\nStatus: 9.9.9.9\r\n",
    b"From: MAILER-DAEMON@x.example\r\nSubject: =?utf-8?B?!!!invalid?=\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\n%%%not base64%%%",
    b"Subject: " + b"A" * 100_000 + b"\r\n\r\nbody",
    b"Content-Type: text/plain; charset=no-such-charset\r\n\r\n\xe9\xe8 undeliverable",
    b'{"notificationType": "Bounce", "bounce": [1, 2, 3]}',
]


@pytest.mark.parametrize("raw", MALFORMED, ids=[f"malformed-{i}" for i in range(len(MALFORMED))])
def test_malformed_input_never_raises(raw: bytes) -> None:
    got = parse_bounce(raw)
    assert got.kind in set(BounceKind)
    assert isinstance(got.reason, str) and got.reason


def test_empty_input_is_other_with_a_reason() -> None:
    got = parse_bounce(b"")
    assert (got.kind, got.reason) == (BounceKind.OTHER, "malformed_input")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert parse_bounce(raw).kind in set(BounceKind)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=3000))
def test_truncated_real_reports_never_raise(cut: int) -> None:
    raw = (CORPUS / "postfix" / "multi-recipient-014-failed.eml").read_bytes()
    assert parse_bounce(raw[:cut]).kind in set(BounceKind)


# --- receipts (RFC 8098 MDN) ---------------------------------------------------------------------------

def _mdn(
    disposition: str,
    subject: str = "Read: Nos offres",
    text: str = "The message sent on 2026-11-26 was displayed.",
    sender: str = "Reader <reader@example.net>",
) -> bytes:
    return (
        "From: " + sender + "\r\nTo: news@shop.example\r\nSubject: " + subject + "\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=R\r\n\r\n"
        "--R\r\nContent-Type: text/plain\r\n\r\n" + text + "\r\n"
        "--R\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Reporting-UA: mail.example.net; Example MUA\r\nFinal-Recipient: rfc822; reader@example.net\r\n"
        "Original-Message-ID: <m1@shop.example>\r\nDisposition: " + disposition + "\r\n--R--\r\n"
    ).encode()


def test_read_receipt_is_other() -> None:
    got = parse_bounce(_mdn("manual-action/MDN-sent-manually; displayed"))
    assert (got.kind, got.recipient, got.reason) == (BounceKind.OTHER, "reader@example.net", "read_receipt")


def test_mdn_that_reports_a_refusal_is_a_failure() -> None:
    # Sieve "reject" / Dovecot quota refusals travel as MDNs with a "deleted" disposition (RFC 5429).
    got = parse_bounce(_mdn("automatic-action/MDN-sent-automatically; deleted", "Automatically rejected mail",
                            "Your message to <reader@example.net> was automatically rejected:\r\nQuota exceeded",
                            "Mail Delivery Subsystem <MAILER-DAEMON@example.net>"))
    assert (got.kind, got.recipient, got.reason) == (BounceKind.SOFT, "reader@example.net", "mailbox_full")
