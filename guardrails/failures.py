"""The three-failure rule, as a pure state transition per (account, email address).

Contract, Annex 1, "Obligations du Client" (iii): « après trois (3) échecs de la distribution d'un e-mail,
désactiver définitivement les adresses e-mail concernées ».

Our executable reading (BRIEF, contract table): three *counted* failures with no success in between disable
the address for good; a success resets the count. What is counted is decided by the bounce policy
(`guardrails.bounce_policy`), which the caller applies: hard bounces and soft failures whose retries are
exhausted count; policy / reputation blocks (5.7.x about our sender) and rate limits do not, because they
say nothing about the recipient's address (STANDARDS.md §2). A retry that is still scheduled is not an
outcome yet and must not be fed here.

A per-account rule may be stricter, never looser: fewer failures (1 or 2), or disabling at the first
"user unknown" (5.1.1), which is the one reply that proves the mailbox does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CONTRACT_FAILURES_TO_DISABLE = 3


class DisableCause(StrEnum):
    CONSECUTIVE_FAILURES = "consecutive_failures"
    USER_UNKNOWN = "user_unknown"  # the stricter per-account setting


@dataclass(frozen=True, slots=True)
class FailureRule:
    failures_to_disable: int = CONTRACT_FAILURES_TO_DISABLE
    disable_on_first_user_unknown: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.failures_to_disable <= CONTRACT_FAILURES_TO_DISABLE:
            raise ValueError(
                f"failures_to_disable must be within 1..{CONTRACT_FAILURES_TO_DISABLE} "
                f"(contract, Annex 1, obligation iii), got {self.failures_to_disable}"
            )


@dataclass(frozen=True, slots=True)
class FailureState:
    """Per (account, address): counted failures since the last success; whether the address is disabled."""

    consecutive_failures: int = 0
    disabled: bool = False
    cause: DisableCause | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final outcome of one delivery attempt to the address.

    `delivered`: accepted by the next hop. Otherwise a final failure, with `counts_against_recipient` and
    `is_user_unknown` as decided by the bounce policy.
    """

    delivered: bool
    counts_against_recipient: bool = False
    is_user_unknown: bool = False

    def __post_init__(self) -> None:
        if self.delivered and (self.counts_against_recipient or self.is_user_unknown):
            raise ValueError("a delivered outcome cannot count as a failure")
        if self.is_user_unknown and not self.counts_against_recipient:
            # "user unknown" is the strongest evidence against an address; not counting it is a caller bug.
            raise ValueError("a user-unknown failure always counts against the recipient")


DELIVERED = Outcome(delivered=True)
NOT_COUNTED = Outcome(delivered=False, counts_against_recipient=False)
COUNTED = Outcome(delivered=False, counts_against_recipient=True)
USER_UNKNOWN = Outcome(delivered=False, counts_against_recipient=True, is_user_unknown=True)


@dataclass(frozen=True, slots=True)
class FailureTransition:
    state: FailureState
    disable: bool  # True exactly once: on the outcome that disables the address

    @property
    def cause(self) -> DisableCause | None:
        return self.state.cause if self.disable else None


def record_outcome(state: FailureState, outcome: Outcome, rule: FailureRule = FailureRule()) -> FailureTransition:
    """Apply one final delivery outcome. Disabled is final ("définitivement"): nothing re-enables here."""
    if state.disabled:
        return FailureTransition(state, False)
    if outcome.delivered:
        return FailureTransition(FailureState(), False)  # a success in between resets the count (BRIEF)
    if not outcome.counts_against_recipient:
        return FailureTransition(state, False)
    count = state.consecutive_failures + 1
    if outcome.is_user_unknown and rule.disable_on_first_user_unknown:
        return FailureTransition(FailureState(count, True, DisableCause.USER_UNKNOWN), True)
    if count >= rule.failures_to_disable:
        return FailureTransition(FailureState(count, True, DisableCause.CONSECUTIVE_FAILURES), True)
    return FailureTransition(FailureState(count, False), False)
