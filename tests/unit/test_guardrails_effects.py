"""Issue 3: the small pure parts of the guardrail effects (no servers)."""

from __future__ import annotations

import pytest

from crm.domain import MessageStatus
from crm.ledger import Outcome
from guardrails.bounce_policy import FailureClass
from guardrails.signals import Signals
from sender.address_failures import AddressOutcome, classify, from_recorded
from sender.hooks import Recorded
from sender.thresholds_monitor import deltas, snapshot_from
from sender.transport import DeliveryResult
from sender.transport import Outcome as Wire
from sender.webhook_delivery import UrlRefused, check_url, signature, verify


def _rec(mid, status, attempts=0, code=None, enhanced=None, text="", error=None, campaign=7, handed=True):
    m = {"id": mid, "account_id": 1, "campaign_id": campaign, "channel": "email", "recipient": f"U{mid}@Ex.com",
         "attempts": attempts}
    wire = {MessageStatus.SENT: Wire.SENT, MessageStatus.DEFERRED: Wire.TRANSIENT}.get(status, Wire.PERMANENT)
    result = DeliveryResult(mid, wire, code, enhanced, text) if handed else None
    return Recorded(Outcome(mid, status, code, enhanced, error), m, result)


def test_what_counts_against_an_address():
    hard = classify(AddressOutcome(1, "a@x.fr", False, 550, "5.1.1", "User unknown"))[1]
    assert hard.counts_against_recipient and hard.is_user_unknown
    policy_reply, policy = classify(AddressOutcome(1, "a@x.fr", False, 550, "5.7.1", "rejected: spam content"))
    assert policy_reply.failure_class is FailureClass.POLICY and not policy.counts_against_recipient
    soft = classify(AddressOutcome(1, "a@x.fr", False, 451, "4.3.0", "try later"))[1]
    assert not soft.counts_against_recipient
    exhausted = classify(AddressOutcome(1, "a@x.fr", False, 451, "4.3.0", "try later", retries_exhausted=True))[1]
    assert exhausted.counts_against_recipient
    throttled = classify(AddressOutcome(1, "a@x.fr", False, 421, "4.7.28", "rate limited", retries_exhausted=True))
    assert not throttled[1].counts_against_recipient  # a rate limit is about us, even when retries ran out


def test_only_final_outcomes_after_a_hand_off_feed_the_rule():
    batch = [_rec(1, MessageStatus.SENT), _rec(2, MessageStatus.DEFERRED, code=451),
             _rec(3, MessageStatus.FAILED, code=451, error="retries exhausted: 451 try later"),
             _rec(4, MessageStatus.FAILED, error="render: bad", handed=False),
             _rec(5, MessageStatus.HELD, handed=False)]
    out = from_recorded(batch)
    assert [(o.message_id, o.delivered, o.retries_exhausted) for o in out] == [(1, True, False), (3, False, True)]
    assert out[0].address == "u1@ex.com"


def test_counters_count_each_message_once_as_attempted():
    batch = [_rec(1, MessageStatus.SENT), _rec(2, MessageStatus.DEFERRED, code=451),
             _rec(3, MessageStatus.FAILED, attempts=2, code=451, error="retries exhausted"),
             _rec(4, MessageStatus.FAILED, code=550, enhanced="5.7.1",
                  text="blocked using zen.spamhaus.org"),
             _rec(5, MessageStatus.HELD, handed=False), _rec(6, MessageStatus.SENT, campaign=None)]
    d = deltas(batch)
    assert (d[(1, 7)].attempted, d[(1, 7)].failed, d[(1, 7)].delivered) == (3, 2, 1)
    assert "spamhaus" in d[(1, 7)].blocklist
    assert (d[(1, None)].attempted, d[(1, None)].delivered) == (1, 1)


def test_the_transactional_window_sums_the_last_24_hours():
    now = 1000 * 3600 + 10
    fields = {"a:1000": "5", "a:977": "7", "a:976": "100", "f:1000": "2", "blocklist": "550 listed at x"}
    snap = snapshot_from("tx:1", fields, Signals(), now, None)
    assert (snap.attempted, snap.failed) == (12, 2) and snap.blocklisted_by == ("550 listed at x",)


def test_webhook_signature_binds_time_and_body():
    header = signature("s3cret", 1_700_000_000, b'{"a":1}')
    assert verify(header, b'{"a":1}', "s3cret", now=1_700_000_100)
    assert not verify(header, b'{"a":2}', "s3cret", now=1_700_000_100)
    assert not verify(header, b'{"a":1}', "other", now=1_700_000_100)
    assert not verify(header, b'{"a":1}', "s3cret", now=1_700_001_000)  # replayed later
    assert not verify("garbage", b"", "s3cret")


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "https://10.0.0.8/x", "https://192.168.1.1/x",
                                 "https://169.254.169.254/x", "https://[::1]/x", "https://[::ffff:127.0.0.1]/x",
                                 "https://0.0.0.0/x", "http://93.184.215.14/x", "https://u:p@93.184.215.14/x",
                                 "file:///etc/passwd"])
def test_private_or_unsafe_webhook_urls_are_refused(url):
    with pytest.raises(UrlRefused):
        check_url(url, allow_private=False)


def test_public_webhook_urls_pass_and_private_ones_when_allowed():
    assert check_url("https://93.184.215.14/hook", allow_private=False)
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True)


def test_a_relay_accepted_message_that_bounces_later_does_not_reset_the_count():
    from sqlalchemy import create_engine, insert, select

    from crm.schema import accounts, address_failures, metadata
    from guardrails.policy import CONTRACT_DEFAULTS
    from sender.address_failures import AddressOutcome, apply_outcomes

    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    fail = lambda mid: AddressOutcome(1, "a@x.fr", False, 550, "5.1.1", "User unknown", message_id=mid)  # noqa: E731
    with engine.begin() as conn:
        conn.execute(insert(accounts).values(id=1, name="a", status="active", billing_state="current", settings={},
                                             created_at=__import__("crm.db", fromlist=["utcnow"]).utcnow()))
        policy = lambda _aid: CONTRACT_DEFAULTS  # noqa: E731
        assert apply_outcomes(conn, [fail(1), fail(2)], policy) == []
        assert apply_outcomes(conn, [AddressOutcome(1, "a@x.fr", True, message_id=3)], policy) == []
        assert conn.execute(select(address_failures.c.consecutive)).scalar_one() == 0  # reset by the hand-off
        disabled = apply_outcomes(conn, [fail(3)], policy)  # ...but message 3 bounced (DSN): third failure
        assert [d.address for d in disabled] == ["a@x.fr"]
        assert [h["message_id"] for h in disabled[0].history] == [1, 2, 3]


def test_asynchronous_failures_reported_by_tracking_count_toward_the_failure_rate():
    snap = snapshot_from("campaign:3", {"attempted": "100", "failed": "4"}, Signals(async_failures=7), 0, None)
    assert (snap.attempted, snap.failed) == (100, 11)
