"""Mailing thresholds (contract, Annex 1, "Suspension" (ii)) over counter snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.account_state import SuspensionReason
from guardrails.policy import CONTRACT_DEFAULTS, resolve_policy
from guardrails.thresholds import (
    DomainCounters,
    MailingSnapshot,
    Threshold,
    evaluate,
    evaluate_blocklist,
    evaluate_complaints,
    evaluate_domain_complaints,
    evaluate_failure_rate,
    evaluate_open_rate,
    open_rate_due_at,
)

DONE = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempted", "failed", "judged", "crossed"),
    [
        (0, 0, False, False),
        (99, 99, False, False),  # below the minimum volume: a handful of messages cannot decide
        (100, 10, True, False),  # exactly 10 % is not "plus de 10 %"
        (100, 11, True, True),
        (2000, 201, True, True),
        (2000, 200, True, False),
        (90, 100, True, True),  # lagging attempt counter: a failure proves an attempt
    ],
)
def test_failure_rate(attempted: int, failed: int, judged: bool, crossed: bool) -> None:
    e = evaluate_failure_rate(attempted, failed)
    assert (e.judged, e.crossed) == (judged, crossed)
    assert e.limit == 0.10


def test_failure_rate_distance_is_margin_to_the_line() -> None:
    e = evaluate_failure_rate(200, 10)
    assert e.value == pytest.approx(0.05)
    assert e.distance == pytest.approx(0.05)
    assert evaluate_failure_rate(200, 30).distance == pytest.approx(-0.05)


def test_stricter_policy_lowers_the_volume_and_the_limit() -> None:
    policy = resolve_policy(account={"failure_rate_limit": 0.05, "failure_min_attempts": 20})
    assert evaluate_failure_rate(20, 2, policy).crossed
    assert not evaluate_failure_rate(20, 2).crossed


def test_complaint_burst_at_one_domain_crosses() -> None:
    e = evaluate_domain_complaints(DomainCounters("orange.fr", delivered=400, complaints=3))
    assert e.crossed and e.scope == "orange.fr"
    assert e.value == pytest.approx(0.0075)


def test_complaints_spread_thinly_across_domains_do_not_cross() -> None:
    domains = [DomainCounters(f"d{i}.fr", delivered=400, complaints=2) for i in range(10)]
    assert not any(e.crossed for e in evaluate_complaints(domains))


def test_one_complaint_in_fifty_messages_does_not_suspend() -> None:
    e = evaluate_domain_complaints(DomainCounters("free.fr", delivered=50, complaints=1))
    assert e.value == pytest.approx(0.02) and not e.judged and not e.crossed


def test_complaint_rate_exactly_on_the_line_is_not_crossed() -> None:
    assert not evaluate_domain_complaints(DomainCounters("sfr.fr", 1000, 5)).crossed
    assert evaluate_domain_complaints(DomainCounters("sfr.fr", 1000, 6)).crossed


def test_complaints_are_sorted_crossed_first_then_closest() -> None:
    domains = [
        DomainCounters("far.fr", 10_000, 3),
        DomainCounters("close.fr", 700, 3),
        DomainCounters("over.fr", 300, 3),
    ]
    assert [e.scope for e in evaluate_complaints(domains)] == ["over.fr", "close.fr", "far.fr"]


@pytest.mark.parametrize(
    ("delivered", "opens", "hours_after", "judged", "crossed"),
    [
        (1000, 10, 47, False, False),  # not yet: judged once, at the configured time
        (1000, 10, 48, True, True),
        (1000, 50, 48, True, False),  # exactly 5 % is not "inférieur à 5 %"
        (1000, 49, 72, True, True),
        (50, 0, 48, False, False),  # below the minimum delivered volume
    ],
)
def test_open_rate_is_judged_at_the_configured_time(
    delivered: int, opens: int, hours_after: int, judged: bool, crossed: bool
) -> None:
    e = evaluate_open_rate(delivered, opens, DONE, DONE + timedelta(hours=hours_after))
    assert (e.judged, e.crossed) == (judged, crossed)


def test_open_rate_is_not_judged_while_sending() -> None:
    assert not evaluate_open_rate(1000, 0, None, DONE).judged


def test_open_rate_due_time_follows_the_policy() -> None:
    policy = resolve_policy(platform={"open_rate_judge_after": 6 * 3600})
    assert open_rate_due_at(DONE, policy) == DONE + timedelta(hours=6)
    assert evaluate_open_rate(1000, 0, DONE, DONE + timedelta(hours=6), policy).crossed


def test_blocklisting_crosses_and_names_the_sources() -> None:
    e = evaluate_blocklist(["zen.spamhaus.org", "bl.spamcop.net", "zen.spamhaus.org"])
    assert e.crossed and e.note == "bl.spamcop.net, zen.spamhaus.org"
    assert not evaluate_blocklist([]).crossed


def test_mailing_evaluation_gives_suspension_evidence() -> None:
    snapshot = MailingSnapshot(
        "campaign:42",
        attempted=300,
        failed=45,
        delivered=255,
        unique_human_opens=100,
        machine_opens=40,
        domains=(DomainCounters("gmail.com", 200, 0), DomainCounters("orange.fr", 55, 0)),
    )
    now = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    result = evaluate(snapshot, now)
    assert [e.threshold for e in result.crossed] == [Threshold.FAILURE_RATE]
    assert result.suspension_reason() is SuspensionReason.FAILURE_RATE
    assert result.suspension_evidence() == {
        "mailing": "campaign:42",
        "evaluated_at": "2026-11-26T13:00:00+00:00",
        "reason": "failure_rate",
        "crossed": [
            {
                "threshold": "failure_rate",
                "value": 0.15,
                "limit": 0.1,
                "distance": -0.05,
                "numerator": 45,
                "denominator": 300,
                "minimum": 100,
                "judged": True,
                "crossed": True,
            }
        ],
    }
    assert result.machine_opens == 40
    assert len(result.evaluations) == 5  # failure, 2 domains, open rate, blocklist


def test_healthy_mailing_has_no_evidence() -> None:
    snapshot = MailingSnapshot("campaign:7", attempted=500, failed=5, delivered=495, unique_human_opens=120)
    result = evaluate(snapshot, datetime(2026, 11, 26, tzinfo=UTC))
    assert result.crossed == () and result.suspension_evidence() is None and result.suspension_reason() is None


def test_negative_counters_are_refused() -> None:
    with pytest.raises(ValueError, match="failed"):
        evaluate_failure_rate(10, -1)


counts = st.integers(min_value=0, max_value=10**7)


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(counts, counts)
def test_failure_rate_never_divides_by_zero_and_matches_exact_arithmetic(attempted: int, failed: int) -> None:
    e = evaluate_failure_rate(attempted, failed)
    denominator = max(attempted, failed)
    exact = Fraction(failed, denominator) if denominator else Fraction(0)
    assert 0 <= e.value <= 1
    assert e.judged == (denominator >= 100)
    assert e.crossed == (denominator >= 100 and exact > Fraction(1, 10))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.text(max_size=10), counts, counts)
def test_complaint_rate_never_divides_by_zero_and_matches_exact_arithmetic(
    domain: str, delivered: int, complaints: int
) -> None:
    e = evaluate_domain_complaints(DomainCounters(domain, delivered, complaints))
    denominator = max(delivered, complaints)
    exact = Fraction(complaints, denominator) if denominator else Fraction(0)
    assert 0 <= e.value <= 1
    assert e.crossed == (complaints >= 3 and exact > Fraction(5, 1000))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(counts, counts, st.integers(0, 100 * 3600))
def test_open_rate_never_divides_by_zero_and_matches_exact_arithmetic(
    delivered: int, opens: int, seconds_after: int
) -> None:
    now = DONE + timedelta(seconds=seconds_after)
    e = evaluate_open_rate(delivered, opens, DONE, now)
    denominator = max(delivered, opens)
    exact = Fraction(opens, denominator) if denominator else Fraction(0)
    judged = seconds_after >= 48 * 3600 and denominator >= 100
    assert 0 <= e.value <= 1
    assert e.judged == judged
    assert e.crossed == (judged and exact < Fraction(5, 100))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(
    st.builds(
        MailingSnapshot,
        st.just("m"),
        counts,
        counts,
        counts,
        counts,
        counts,
        st.lists(st.builds(DomainCounters, st.text(max_size=5), counts, counts), max_size=5).map(tuple),
        st.none() | st.just(DONE),
        st.lists(st.sampled_from(["zen.spamhaus.org", "b.barracudacentral.org"]), max_size=2).map(tuple),
    )
)
def test_evidence_exists_exactly_when_a_threshold_is_crossed(snapshot: MailingSnapshot) -> None:
    result = evaluate(snapshot, DONE + timedelta(days=3), CONTRACT_DEFAULTS)
    evidence = result.suspension_evidence()
    assert (evidence is None) == (result.crossed == ())
    if evidence is not None:
        assert all(item["crossed"] for item in evidence["crossed"])  # type: ignore[attr-defined]
        assert result.suspension_reason() is not None
