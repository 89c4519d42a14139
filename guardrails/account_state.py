"""The account state machine: active → suspended(reason, evidence) → active | terminated.

Pure: every transition is a function from a state to a new state plus the audit record that the caller
writes to the audit log in the same transaction as the new status (BRIEF, "suspension"; issue 3, rule 5).

    active ──suspend──▶ suspended ──reinstate (ops, with a note)──▶ active
       │                    │
       └──terminate──▶ terminated ◀──terminate──┘        (terminated is final)

Contract, Annex 1, "Suspension": « le Prestataire se réserve le droit de suspendre immédiatement l'accès du
Client à la Solution (i) … l'envoi de courriers électroniques indésirables … (ii) … plus de dix pour cent
(10 %) d'échecs de distribution … plaintes … dépassant le taux de cinq (5) pour mille par domaine … taux
d'ouverture inférieur à cinq pour cent (5 %) … mise sur liste noire ».
CGV, "Suspension des services": « En cas de non-paiement des factures non contestées, le Prestataire pourra
suspendre les services après un délai de quinze (15) jours calendaires sans effet. »
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType

from crm.domain import AccountStatus, BillingState

# CGV, "Suspension des services": « après un délai de quinze (15) jours calendaires sans effet ».
CONTRACT_OVERDUE_GRACE_DAYS = 15

SYSTEM_ACTOR = "system"


class SuspensionReason(StrEnum):
    """Why an account was suspended; stored in `accounts.suspension_reason` and sent in the webhook."""

    FAILURE_RATE = "failure_rate"  # Annex 1, Suspension (ii): > 10 % delivery failures per mailing
    COMPLAINT_RATE = "complaint_rate"  # (ii): complaints > 5 ‰ per domain and mailing
    OPEN_RATE = "open_rate"  # (ii): open rate < 5 % per mailing
    BLOCKLISTED = "blocklisted"  # (ii): « mise sur liste noire en raison d'envois non sollicités »
    NON_PAYMENT = "non_payment"  # CGV: unpaid for more than 15 calendar days
    ILLEGAL_USE = "illegal_use"  # (i): spam, sale of address lists … (an ops decision)
    MANUAL = "manual"  # any other ops decision, explained in the note


class AccountAction(StrEnum):
    SUSPEND = "account.suspended"
    REINSTATE = "account.reinstated"
    TERMINATE = "account.terminated"


class InvalidTransition(ValueError):
    """A transition the state machine does not allow (e.g. anything out of `terminated`)."""

    def __init__(self, action: AccountAction, status: AccountStatus, why: str) -> None:
        super().__init__(f"cannot {action.value.removeprefix('account.')} an account that is {status.value}: {why}")
        self.action = action
        self.status = status


def _frozen(evidence: Mapping[str, object] | None) -> Mapping[str, object]:
    return MappingProxyType(dict(evidence or {}))


@dataclass(frozen=True, slots=True)
class AccountState:
    status: AccountStatus = AccountStatus.ACTIVE
    reason: SuspensionReason | None = None
    evidence: Mapping[str, object] = field(default_factory=lambda: _frozen(None))
    since: datetime | None = None  # when the current status began

    @property
    def may_send(self) -> bool:
        return may_send(self.status)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit-log row. `data` is JSON-serialisable when the evidence given was."""

    action: AccountAction
    actor: str
    at: datetime
    from_status: AccountStatus
    to_status: AccountStatus
    reason: SuspensionReason | None = None
    note: str = ""
    evidence: Mapping[str, object] = field(default_factory=lambda: _frozen(None))

    @property
    def data(self) -> dict[str, object]:
        return {
            "from": self.from_status.value,
            "to": self.to_status.value,
            "reason": self.reason.value if self.reason else None,
            "note": self.note,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """The new state, and the audit record to write; `audit is None` means nothing changed (idempotent)."""

    state: AccountState
    audit: AuditRecord | None

    @property
    def changed(self) -> bool:
        return self.audit is not None


def may_send(status: AccountStatus) -> bool:
    """Only an active account hands messages to a transport; a suspended one has them held, not dropped."""
    return status is AccountStatus.ACTIVE


def suspend(
    state: AccountState,
    reason: SuspensionReason,
    evidence: Mapping[str, object] | None,
    *,
    at: datetime,
    actor: str = SYSTEM_ACTOR,
    note: str = "",
) -> Transition:
    """active → suspended. Suspending a suspended account is a no-op that keeps the first reason and evidence:
    several workers may see the same crossing, and ops must see what stopped the account first."""
    if state.status is AccountStatus.TERMINATED:
        raise InvalidTransition(AccountAction.SUSPEND, state.status, "terminated is final")
    if state.status is AccountStatus.SUSPENDED:
        return Transition(state, None)
    frozen = _frozen(evidence)
    new = AccountState(AccountStatus.SUSPENDED, reason, frozen, at)
    record = AuditRecord(AccountAction.SUSPEND, actor, at, state.status, new.status, reason, note, frozen)
    return Transition(new, record)


def reinstate(state: AccountState, *, actor: str, note: str, at: datetime) -> Transition:
    """suspended → active, by ops only and with a note saying why (the held messages then resume)."""
    if state.status is not AccountStatus.SUSPENDED:
        raise InvalidTransition(AccountAction.REINSTATE, state.status, "only a suspended account is reinstated")
    if not actor.strip() or actor == SYSTEM_ACTOR:
        raise ValueError("reinstatement is an ops decision: name the operator")
    if not note.strip():
        raise ValueError("reinstatement needs a note explaining why")
    new = AccountState(AccountStatus.ACTIVE, None, _frozen(None), at)
    record = AuditRecord(
        AccountAction.REINSTATE,
        actor,
        at,
        state.status,
        new.status,
        state.reason,
        note.strip(),
        state.evidence,
    )
    return Transition(new, record)


def terminate(state: AccountState, *, actor: str, note: str, at: datetime) -> Transition:
    """active | suspended → terminated (final: no transition leaves it)."""
    if state.status is AccountStatus.TERMINATED:
        raise InvalidTransition(AccountAction.TERMINATE, state.status, "terminated is final")
    if not note.strip():
        raise ValueError("termination needs a note explaining why")
    new = AccountState(AccountStatus.TERMINATED, state.reason, state.evidence, at)
    record = AuditRecord(
        AccountAction.TERMINATE,
        actor,
        at,
        state.status,
        new.status,
        state.reason,
        note.strip(),
        state.evidence,
    )
    return Transition(new, record)


def overdue_days(overdue_since: date, today: date) -> int:
    return (today - overdue_since).days


def check_billing(
    state: AccountState,
    billing: BillingState,
    overdue_since: date | None,
    *,
    today: date,
    at: datetime,
    grace_days: int = CONTRACT_OVERDUE_GRACE_DAYS,
) -> Transition:
    """Suspend an account whose invoice is overdue for more than `grace_days` calendar days.

    CGV, "Suspension des services": « le Prestataire pourra suspendre les services après un délai de quinze
    (15) jours calendaires sans effet » — day 15 is still within the delay, day 16 is not. Paying does not
    reinstate by itself: reinstatement stays an ops decision with a note.
    """
    if not 0 <= grace_days <= CONTRACT_OVERDUE_GRACE_DAYS:
        raise ValueError(f"grace_days must be within 0..{CONTRACT_OVERDUE_GRACE_DAYS}, got {grace_days}")
    if billing is not BillingState.OVERDUE or overdue_since is None or state.status is not AccountStatus.ACTIVE:
        return Transition(state, None)
    days = overdue_days(overdue_since, today)
    if days <= grace_days:
        return Transition(state, None)
    evidence: dict[str, object] = {
        "overdue_since": overdue_since.isoformat(),
        "overdue_days": days,
        "grace_days": grace_days,
    }
    return suspend(state, SuspensionReason.NON_PAYMENT, evidence, at=at)
