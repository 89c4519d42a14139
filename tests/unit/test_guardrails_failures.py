"""The three-failure rule (contract, Annex 1, "Obligations du Client" (iii))."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.failures import (
    COUNTED,
    DELIVERED,
    NOT_COUNTED,
    USER_UNKNOWN,
    DisableCause,
    FailureRule,
    FailureState,
    Outcome,
    record_outcome,
)


def run(outcomes: list[Outcome], rule: FailureRule = FailureRule()) -> tuple[FailureState, list[bool]]:
    state, disables = FailureState(), []
    for outcome in outcomes:
        transition = record_outcome(state, outcome, rule)
        state = transition.state
        disables.append(transition.disable)
    return state, disables


def test_address_is_disabled_after_third_counted_failure() -> None:
    state, disables = run([COUNTED, COUNTED, COUNTED])
    assert disables == [False, False, True]
    assert state.disabled and state.cause is DisableCause.CONSECUTIVE_FAILURES


def test_success_in_between_resets_the_count() -> None:
    state, disables = run([COUNTED, COUNTED, DELIVERED, COUNTED, COUNTED])
    assert not any(disables)
    assert state == FailureState(consecutive_failures=2)


def test_policy_blocks_and_rate_limits_do_not_count_nor_reset() -> None:
    state, disables = run([COUNTED, NOT_COUNTED, COUNTED, NOT_COUNTED, NOT_COUNTED, COUNTED])
    assert disables[-1] is True and disables.count(True) == 1
    assert state.consecutive_failures == 3


def test_disabled_is_final_even_after_a_success() -> None:
    state, _ = run([COUNTED, COUNTED, COUNTED])
    transition = record_outcome(state, DELIVERED)
    assert transition.state.disabled and not transition.disable


def test_user_unknown_counts_like_any_failure_by_default() -> None:
    state, disables = run([USER_UNKNOWN, USER_UNKNOWN])
    assert not any(disables) and state.consecutive_failures == 2


def test_stricter_account_disables_on_first_user_unknown() -> None:
    rule = FailureRule(disable_on_first_user_unknown=True)
    state, disables = run([COUNTED, USER_UNKNOWN], rule)
    assert disables == [False, True]
    assert state.cause is DisableCause.USER_UNKNOWN


def test_stricter_failure_count_is_allowed() -> None:
    _, disables = run([COUNTED], FailureRule(failures_to_disable=1))
    assert disables == [True]


@pytest.mark.parametrize("limit", [0, 4, 10])
def test_looser_or_nonsense_failure_count_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="failures_to_disable"):
        FailureRule(failures_to_disable=limit)


def test_contradictory_outcomes_are_refused() -> None:
    with pytest.raises(ValueError):
        Outcome(delivered=False, counts_against_recipient=False, is_user_unknown=True)
    with pytest.raises(ValueError):
        Outcome(delivered=True, counts_against_recipient=True)


outcomes = st.sampled_from([DELIVERED, NOT_COUNTED, COUNTED, USER_UNKNOWN])
rules = st.builds(FailureRule, st.integers(1, 3), st.booleans())


def reference(sequence: list[Outcome], rule: FailureRule) -> tuple[int | None, DisableCause | None]:
    """Independent model: index of the outcome that disables the address, scanning the history."""
    streak = 0
    for index, outcome in enumerate(sequence):
        if outcome.delivered:
            streak = 0
        elif outcome.counts_against_recipient:
            streak += 1
            if outcome.is_user_unknown and rule.disable_on_first_user_unknown:
                return index, DisableCause.USER_UNKNOWN
            if streak == rule.failures_to_disable:
                return index, DisableCause.CONSECUTIVE_FAILURES
    return None, None


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.lists(outcomes, max_size=40), rules)
def test_rule_matches_reference_model(sequence: list[Outcome], rule: FailureRule) -> None:
    state, disables = run(sequence, rule)
    expected_index, expected_cause = reference(sequence, rule)
    assert disables.count(True) == (0 if expected_index is None else 1)
    if expected_index is None:
        assert not state.disabled
    else:
        assert disables.index(True) == expected_index
        assert state.disabled and state.cause is expected_cause


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.lists(outcomes, max_size=40))
def test_stricter_rule_never_disables_later_than_the_contract(sequence: list[Outcome]) -> None:
    contract_index, _ = reference(sequence, FailureRule())
    strict_state, strict_disables = run(sequence, FailureRule(2, True))
    if contract_index is not None:
        assert strict_state.disabled and strict_disables.index(True) <= contract_index
