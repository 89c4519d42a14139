"""Account state machine (issue 3, rule 5) and non-payment (CGV, "Suspension des services")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm.domain import AccountStatus, BillingState
from guardrails.account_state import (
    AccountAction,
    AccountState,
    InvalidTransition,
    SuspensionReason,
    Transition,
    check_billing,
    may_send,
    reinstate,
    suspend,
    terminate,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EVIDENCE = {"threshold": "failure_rate", "value": 0.15, "limit": 0.1}


def test_only_an_active_account_may_send() -> None:
    assert may_send(AccountStatus.ACTIVE)
    assert not may_send(AccountStatus.SUSPENDED)
    assert not may_send(AccountStatus.TERMINATED)


def test_suspension_records_reason_and_evidence_in_the_audit() -> None:
    t = suspend(AccountState(), SuspensionReason.FAILURE_RATE, EVIDENCE, at=T0)
    assert t.state.status is AccountStatus.SUSPENDED and not t.state.may_send
    assert t.audit is not None
    assert t.audit.action is AccountAction.SUSPEND and t.audit.actor == "system"
    assert t.audit.data == {
        "from": "active",
        "to": "suspended",
        "reason": "failure_rate",
        "note": "",
        "evidence": EVIDENCE,
    }


def test_evidence_is_copied_not_shared() -> None:
    evidence = dict(EVIDENCE)
    t = suspend(AccountState(), SuspensionReason.FAILURE_RATE, evidence, at=T0)
    evidence["value"] = 0.0
    assert t.state.evidence["value"] == 0.15


def test_second_suspension_keeps_the_first_reason() -> None:
    first = suspend(AccountState(), SuspensionReason.COMPLAINT_RATE, {"domain": "orange.fr"}, at=T0)
    second = suspend(first.state, SuspensionReason.FAILURE_RATE, EVIDENCE, at=T0 + timedelta(seconds=1))
    assert not second.changed
    assert second.state.reason is SuspensionReason.COMPLAINT_RATE


def test_ops_reinstate_with_a_note() -> None:
    suspended = suspend(AccountState(), SuspensionReason.FAILURE_RATE, EVIDENCE, at=T0).state
    t = reinstate(suspended, actor="ops:claire", note="list cleaned", at=T0 + timedelta(hours=2))
    assert t.state.status is AccountStatus.ACTIVE and t.state.reason is None
    assert t.audit is not None and t.audit.note == "list cleaned" and t.audit.reason is SuspensionReason.FAILURE_RATE


@pytest.mark.parametrize(("actor", "note"), [("ops:claire", "  "), ("system", "auto"), ("", "x")])
def test_reinstatement_needs_an_operator_and_a_note(actor: str, note: str) -> None:
    suspended = suspend(AccountState(), SuspensionReason.OPEN_RATE, {}, at=T0).state
    with pytest.raises(ValueError):
        reinstate(suspended, actor=actor, note=note, at=T0)


def test_reinstating_an_active_account_is_refused() -> None:
    with pytest.raises(InvalidTransition):
        reinstate(AccountState(), actor="ops:claire", note="?", at=T0)


def test_terminated_is_final() -> None:
    terminated = terminate(AccountState(), actor="ops:claire", note="contract ended", at=T0).state
    assert terminated.status is AccountStatus.TERMINATED
    with pytest.raises(InvalidTransition):
        suspend(terminated, SuspensionReason.MANUAL, {}, at=T0)
    with pytest.raises(InvalidTransition):
        reinstate(terminated, actor="ops:claire", note="oops", at=T0)
    with pytest.raises(InvalidTransition):
        terminate(terminated, actor="ops:claire", note="again", at=T0)


def test_suspended_account_can_be_terminated_keeping_its_reason() -> None:
    suspended = suspend(AccountState(), SuspensionReason.BLOCKLISTED, {"zone": "zen"}, at=T0).state
    t = terminate(suspended, actor="ops:claire", note="repeated spam", at=T0)
    assert t.state.reason is SuspensionReason.BLOCKLISTED
    assert t.audit is not None and t.audit.from_status is AccountStatus.SUSPENDED


@pytest.mark.parametrize(
    ("days_overdue", "suspended"),
    [(0, False), (14, False), (15, False), (16, True), (40, True)],
)
def test_unpaid_for_more_than_fifteen_days_suspends(days_overdue: int, suspended: bool) -> None:
    today = date(2026, 11, 26)
    t = check_billing(AccountState(), BillingState.OVERDUE, today - timedelta(days=days_overdue), today=today, at=T0)
    assert (t.state.status is AccountStatus.SUSPENDED) is suspended
    if suspended:
        assert t.state.reason is SuspensionReason.NON_PAYMENT
        assert t.state.evidence["overdue_days"] == days_overdue


def test_current_billing_never_suspends() -> None:
    today = date(2026, 11, 26)
    t = check_billing(AccountState(), BillingState.CURRENT, today - timedelta(days=90), today=today, at=T0)
    assert not t.changed


def test_looser_grace_period_is_refused() -> None:
    today = date(2026, 11, 26)
    with pytest.raises(ValueError, match="grace_days"):
        check_billing(AccountState(), BillingState.OVERDUE, today, today=today, at=T0, grace_days=30)


# A random walk over every operation; each step either applies or raises InvalidTransition/ValueError.
operations = st.sampled_from(["suspend", "reinstate", "terminate", "billing", "reinstate_bad"])


def apply(state: AccountState, op: str, step: int) -> Transition:
    at = T0 + timedelta(minutes=step)
    if op == "suspend":
        return suspend(state, SuspensionReason.FAILURE_RATE, EVIDENCE, at=at)
    if op == "reinstate":
        return reinstate(state, actor="ops:claire", note="checked", at=at)
    if op == "reinstate_bad":
        return reinstate(state, actor="system", note="", at=at)
    if op == "terminate":
        return terminate(state, actor="ops:claire", note="end", at=at)
    today = date(2026, 11, 26)
    return check_billing(state, BillingState.OVERDUE, today - timedelta(days=30), today=today, at=at)


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.lists(operations, max_size=30))
def test_state_machine_invariants(ops: list[str]) -> None:
    state = AccountState()
    ever_terminated = False
    for step, op in enumerate(ops):
        try:
            t = apply(state, op, step)
        except (InvalidTransition, ValueError):
            continue
        if t.audit is not None:
            # every change is audited, and the audit tells the truth about it
            assert (t.audit.from_status, t.audit.to_status) == (state.status, t.state.status)
            assert t.audit.from_status != t.audit.to_status
        else:
            assert t.state == state
        # a suspended or terminated account never sends; terminated is never left
        assert t.state.may_send == (t.state.status is AccountStatus.ACTIVE)
        if ever_terminated:
            assert t.state.status is AccountStatus.TERMINATED
        if t.state.status is AccountStatus.SUSPENDED:
            assert t.state.reason is not None
        state = t.state
        ever_terminated = state.status is AccountStatus.TERMINATED
    if ever_terminated:
        assert not may_send(state.status)
