"""Issue 6 under issue 3's rules: what an SMS failure counts for (pure), how SMS outcomes of a dispatch batch
reach the 3-failure rule and the failure-rate counters, and the rule applied to numbers (SQLite in memory)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select

from crm.db import utcnow
from crm.domain import Channel, MessageStatus
from crm.ledger import Outcome
from crm.schema import accounts, address_failures, metadata, suppressions, webhook_events
from guardrails import failures
from guardrails.policy import CONTRACT_DEFAULTS, GuardrailPolicy
from guardrails.sms_failures import SmsFailureClass, classify_sms_failure, counts_toward_failure_rate
from sender.address_failures import AddressOutcome, apply_outcomes, from_recorded
from sender.hooks import Recorded
from sender.thresholds_monitor import deltas

NUMBER = "+33612345678"


@pytest.mark.parametrize(("code", "klass", "against_number", "rate"), [
    (21211, SmsFailureClass.RECIPIENT, True, True),
    (21614, SmsFailureClass.RECIPIENT, True, True),
    (30005, SmsFailureClass.RECIPIENT, True, True),
    (30006, SmsFailureClass.RECIPIENT, True, True),
    (30007, SmsFailureClass.POLICY, False, True),  # carrier filtering: the account's rate, never the number
    (21610, SmsFailureClass.UNSUBSCRIBED, False, True),
    (30008, SmsFailureClass.OTHER, False, True),
    (None, SmsFailureClass.OTHER, False, True),
    (20429, SmsFailureClass.TRANSIENT, False, False),  # our own throttling says nothing of the number
    (30001, SmsFailureClass.TRANSIENT, False, False),
    (429, SmsFailureClass.TRANSIENT, False, False),
    (503, SmsFailureClass.TRANSIENT, False, False),
])
def test_what_an_sms_failure_counts_for(code: int | None, klass: SmsFailureClass, against_number: bool,
                                        rate: bool) -> None:
    f = classify_sms_failure(code)
    assert (f.failure_class, f.counts_against_number, counts_toward_failure_rate(code)) == (
        klass, against_number, rate)
    assert f.outcome.counts_against_recipient is against_number


def test_an_invalid_or_non_mobile_number_is_the_user_unknown_of_sms() -> None:
    assert classify_sms_failure(21211).outcome == failures.USER_UNKNOWN
    assert classify_sms_failure(21614).outcome == failures.USER_UNKNOWN
    assert classify_sms_failure(30005).outcome == failures.COUNTED  # the handset may come back: counted only


def _sms(mid: int, status: MessageStatus, code: int | None = None, error: str | None = None, attempts: int = 0,
         campaign: int | None = 9) -> Recorded:
    m = {"id": mid, "account_id": 1, "campaign_id": campaign, "channel": "sms", "recipient": f"+3361200{mid:04d}",
         "attempts": attempts}
    return Recorded(Outcome(mid, status, code, None, error), m, None)  # SmsResult is no DeliveryResult


def test_sms_outcomes_of_a_batch_feed_the_failure_rate_counters() -> None:
    batch = [
        _sms(1, MessageStatus.SENT),
        _sms(2, MessageStatus.FAILED, 21211, "twilio: invalid"),  # refused at creation: attempted + failed
        _sms(3, MessageStatus.FAILED, 30007, "twilio: filtered"),
        _sms(4, MessageStatus.DEFERRED, 20429, "twilio: throttled"),  # first attempt, retried later
        _sms(5, MessageStatus.DEFERRED, None, "quiet hours until ...", ),  # held: no attempt
        _sms(6, MessageStatus.FAILED, None, "render: bad template"),  # never handed to Twilio
        _sms(7, MessageStatus.FAILED, 20429, "retries exhausted: twilio: throttled", attempts=4),
        _sms(8, MessageStatus.SUPPRESSED, None, "suppressed"),
        _sms(9, MessageStatus.SENT, campaign=None),  # transactional: the account's 24 h window
    ]
    d = deltas(batch)
    assert (d[(1, 9)].attempted, d[(1, 9)].failed, d[(1, 9)].delivered) == (4, 2, 1)
    assert (d[(1, None)].attempted, d[(1, None)].delivered) == (1, 1)


def test_only_twilio_refusals_reach_the_three_failure_rule_from_a_batch() -> None:
    batch = [_sms(1, MessageStatus.SENT), _sms(2, MessageStatus.FAILED, 21211, "twilio: invalid"),
             _sms(3, MessageStatus.FAILED, None, "render: x"), _sms(4, MessageStatus.DEFERRED, 20429, "twilio")]
    [o] = from_recorded(batch)  # Twilio's acceptance is no delivery: only a `delivered` callback resets
    assert (o.address, o.delivered, o.code, o.channel) == ("+33612000002", False, 21211, Channel.SMS)


def _db() -> Any:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(accounts).values(id=1, name="a", status="active", billing_state="current", settings={},
                                             created_at=utcnow()))
    return engine


def sms(code: int | None, mid: int, delivered: bool = False) -> AddressOutcome:
    return AddressOutcome(1, NUMBER, delivered, None if delivered else code, None, "twilio", False, mid, 5,
                          Channel.SMS)


def test_three_counted_failures_disable_a_number_for_good_and_delivered_resets() -> None:
    engine = _db()
    policy = lambda _aid: CONTRACT_DEFAULTS  # noqa: E731
    with engine.begin() as conn:
        assert apply_outcomes(conn, [sms(30005, 1), sms(30007, 2), sms(21610, 3), sms(30006, 4)], policy) == []
        assert conn.execute(select(address_failures.c.consecutive)).scalar_one() == 2  # 30007 / 21610 not counted
        assert apply_outcomes(conn, [sms(None, 5, delivered=True)], policy) == []
        assert conn.execute(select(address_failures.c.consecutive)).scalar_one() == 0
        assert apply_outcomes(conn, [sms(30005, 6), sms(21614, 7)], policy) == []
        [disabled] = apply_outcomes(conn, [sms(30006, 8)], policy)
        assert (disabled.address, disabled.cause) == (NUMBER, "consecutive_failures")
        assert apply_outcomes(conn, [sms(None, 9, delivered=True), sms(30005, 10)], policy) == []  # for good
        row = conn.execute(select(suppressions)).one()
        assert (row.channel, row.address, row.reason, row.source) == ("sms", NUMBER, "disabled",
                                                                     "guardrails:consecutive_failures")
        hook = conn.execute(select(webhook_events.c.event_type, webhook_events.c.payload)).one()
    assert hook.event_type == "address.disabled" and hook.payload["channel"] == "sms"
    assert [(h["code"], h["counted"], h["class"]) for h in disabled.history if not h["delivered"]][-3:] == [
        (30005, True, "recipient"), (21614, True, "recipient"), (30006, True, "recipient")]


def test_a_stricter_account_disables_on_the_first_invalid_number() -> None:
    engine = _db()
    strict = GuardrailPolicy(disable_on_first_user_unknown=True)
    with engine.begin() as conn:
        assert apply_outcomes(conn, [sms(30005, 1)], lambda _a: strict) == []  # unreachable: counted only
        [d] = apply_outcomes(conn, [sms(21211, 2)], lambda _a: strict)
    assert d.cause == "user_unknown"
