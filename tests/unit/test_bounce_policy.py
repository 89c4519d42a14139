"""Table-driven tests of the SMTP reply policy (STANDARDS.md §2, issue 4 "Synchronous")."""

from __future__ import annotations

import pytest

from guardrails.bounce_policy import FailureClass, Reason, ReplyClass, classify_reply, parse_enhanced

H, S, P, R = FailureClass.HARD, FailureClass.SOFT, FailureClass.POLICY, FailureClass.RATE_LIMIT

# (basic code, enhanced status, text, expected class, expected reason)
REPLIES = [
    # The address itself: hard.
    (550, "5.1.1", "The email account that you tried to reach does not exist.", H, Reason.USER_UNKNOWN),
    (550, None, "5.1.1 <a@b.example>: Recipient address rejected: User unknown in local recipient table",
     H, Reason.USER_UNKNOWN),
    (550, None, "Requested action not taken: mailbox unavailable", H, Reason.USER_UNKNOWN),
    (553, "5.1.3", "Bad recipient address syntax", H, Reason.BAD_ADDRESS_SYNTAX),
    (550, "5.1.2", "Host unknown", H, Reason.DOMAIN_NOT_FOUND),
    (554, "5.4.4", "Host or domain name not found. Name service error for name=x.example type=MX",
     H, Reason.DOMAIN_NOT_FOUND),
    (556, "5.1.10", "Recipient address rejected: Domain does not accept mail (nullMX)", H, Reason.NULL_MX),
    (551, "5.1.6", "User has moved; please try <new@elsewhere.example>", H, Reason.MAILBOX_MOVED),
    (550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281)", H, Reason.USER_UNKNOWN),
    (550, None, "No such user here", H, Reason.USER_UNKNOWN),
    (None, None, "Sorry, no mailbox here by that name. (#5.1.1)", H, Reason.USER_UNKNOWN),
    (550, "5.0.0", "Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416", H,
     Reason.USER_UNKNOWN),
    (550, "5.7.1", "Recipient unknown", H, Reason.USER_UNKNOWN),  # the words beat a sloppy x.7.1
    # Mailbox full is soft, even as a permanent 5.2.2 (RFC 3463 note; STANDARDS §2).
    (552, "5.2.2", "The recipient's inbox is out of storage space and inactive.", S, Reason.MAILBOX_FULL),
    (452, "4.2.2", "The email account that you tried to reach is over quota.", S, Reason.MAILBOX_FULL),
    (550, "5.1.1", "Mailbox full", S, Reason.MAILBOX_FULL),  # the cause named in words wins over the code
    (550, "5.2.1", "The email account that you tried to reach is disabled.", S, Reason.MAILBOX_DISABLED),
    (None, None, "This account has been disabled or discontinued", S, Reason.MAILBOX_DISABLED),
    (550, "5.1.1", "Mailbox disabled for this recipient", S, Reason.MAILBOX_DISABLED),
    (550, "5.1.0", "<news@envoi.example>: Sender address rejected: Domain not found", P, Reason.POLICY_BLOCK),
    (550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", H,
     Reason.USER_UNKNOWN),
    # Blocks aimed at the sender, its IP or content: policy, never the recipient's fault.
    (554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", P,
     Reason.BLOCKLISTED),
    (550, "5.7.1", "Our system has detected that this message is likely unsolicited mail.", P,
     Reason.SPAM_BLOCK),
    (550, "5.7.26", "This mail has been blocked because the sender is unauthenticated.", P, Reason.AUTH_FAILURE),
    (421, "4.7.27", "SPF check failed", P, Reason.AUTH_FAILURE),
    (554, "5.7.9", "Message not accepted for policy reasons.", P, Reason.POLICY_BLOCK),
    (554, "5.7.1", "<a@b.example>: Relay access denied", P, Reason.RELAY_DENIED),
    (554, "5.7.0", "Reject, id=12345-01 - INFECTED: Eicar-Test-Signature", P, Reason.CONTENT_REJECTED),
    (553, None, "5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in "
     "Spamhaus's list", P, Reason.BLOCKLISTED),
    (550, "5.1.1", "blocked using bl.spamcop.net", P, Reason.BLOCKLISTED),  # blocklist wins over a 5.1.1
    # Rate limits.
    (421, "4.7.28", "Our system has detected an unusual rate of unsolicited mail", R, Reason.RATE_LIMITED),
    (421, "4.7.0", "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume", R,
     Reason.RATE_LIMITED),
    (450, None, "Too many connections from your IP", R, Reason.RATE_LIMITED),
    # Transient replies are never hard, whatever the words.
    (450, "4.1.1", "Recipient address rejected: User unknown (try later)", S, Reason.USER_UNKNOWN),
    (451, "4.4.1", "Connection timed out", S, Reason.NETWORK_ERROR),
    (450, "4.2.0", "Recipient address rejected: Greylisted", S, Reason.UNKNOWN),
    # Unknown causes stay soft: no hard verdict without evidence about the address.
    (554, None, "Transaction failed", S, Reason.UNKNOWN),
    (552, "5.3.4", "Message size exceeds fixed maximum message size", S, Reason.MESSAGE_TOO_LARGE),
    (None, None, "", S, Reason.UNKNOWN),
    # Exim phrasing (exim4 4.96 bounces, tests/fixtures/bounces/exim/).
    (None, None, "Unrouteable address", H, Reason.USER_UNKNOWN),
    (None, None, "all relevant MX records point to non-existent hosts", H, Reason.DOMAIN_NOT_FOUND),
    (None, None, "mailbox is full: retry timeout exceeded", S, Reason.MAILBOX_FULL),
    (None, None, "retry time not reached for any host after a long failure period", S, Reason.RETRIES_EXPIRED),
    (None, None, "all hosts for 'x.example' have been failing for a long time (and retry time not reached)", S,
     Reason.RETRIES_EXPIRED),
    # cPanel's Exim routing failure hedges about blocklists: the hedge is not a citation.
    (None, None, "The mail server could not deliver mail to a@x.example.  The account or domain may not exist, "
     "they may be blacklisted, or missing the proper dns entries.", H, Reason.USER_UNKNOWN),
    (550, None, "Your IP has been blacklisted; it may be blacklisted elsewhere too", P, Reason.BLOCKLISTED),
]


@pytest.mark.parametrize(("code", "enhanced", "text", "klass", "reason"), REPLIES,
                         ids=[f"{c}-{e}-{t[:30]}" for c, e, t, _, _ in REPLIES])
def test_reply_is_classified(code: int | None, enhanced: str | None, text: str, klass: FailureClass,
                             reason: Reason) -> None:
    got = classify_reply(code, enhanced, text)
    assert (got.failure_class, got.reason) == (klass, reason)


@pytest.mark.parametrize(("reply", "counts"), [
    (ReplyClass(H, Reason.USER_UNKNOWN, permanent=True), True),
    (ReplyClass(P, Reason.BLOCKLISTED, permanent=True), False),  # a block aimed at us: never the recipient's
    (ReplyClass(R, Reason.RATE_LIMITED, permanent=False), False),
    (ReplyClass(S, Reason.MAILBOX_FULL, permanent=False), False),  # will be retried
    (ReplyClass(S, Reason.MAILBOX_FULL, permanent=True), True),  # a final refusal counts once
    (ReplyClass(S, Reason.RETRIES_EXPIRED, permanent=False), True),
])
def test_three_failure_rule_counts_only_recipient_failures(reply: ReplyClass, counts: bool) -> None:
    assert reply.counts_against_recipient is counts


def test_sender_block_does_not_count_against_recipient_end_to_end() -> None:
    reply = classify_reply(550, "5.7.1", "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact "
                           "your Internet service provider since part of their network is on our block list")
    assert reply.failure_class is P and not reply.counts_against_recipient


def test_permanence_follows_the_enhanced_class_then_the_basic_code() -> None:
    assert classify_reply(550, "4.2.2", "over quota").permanent is False
    assert classify_reply(550, None, "whatever").permanent is True
    assert classify_reply(None, None, "no code at all").permanent is False


@pytest.mark.parametrize(("value", "parsed"), [
    ("5.1.1", (5, 1, 1)), ("smtp; 550 5.1.10 null MX", (5, 1, 10)), ("#4.4.7", (4, 4, 7)),
    ("5.7.606 Access denied", (5, 7, 606)), ("", None), (None, None), ("1.2.3", None), ("550 no code", None),
])
def test_enhanced_status_is_found_in_text(value: str | None, parsed: tuple[int, int, int] | None) -> None:
    assert parse_enhanced(value) == parsed
