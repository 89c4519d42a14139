"""The consent and suppression gate, checked at fan-out and again just before hand-off to a transport.

Contract, Annex 1, "Obligations du Client", 5: recipients must have explicitly agreed to receive the account's
marketing; contacts who unsubscribe must receive nothing more (CPCE L34-5; GDPR art. 21).
"""

from __future__ import annotations

from dataclasses import dataclass

from crm.domain import AccountStatus, ConsentStatus, MessageKind, SkipReason


@dataclass(frozen=True, slots=True)
class GateDecision:
    allowed: bool
    reason: SkipReason | None = None


ALLOW = GateDecision(True)


def gate(
    kind: MessageKind,
    has_address: bool,
    consent: ConsentStatus,
    suppressed: bool,
) -> GateDecision:
    """May this message go to this recipient? Suppression stops every kind; marketing also needs consent."""
    if not has_address:
        return GateDecision(False, SkipReason.NO_ADDRESS)
    if suppressed:
        return GateDecision(False, SkipReason.SUPPRESSED)
    if kind is MessageKind.MARKETING:
        if consent is ConsentStatus.WITHDRAWN:
            return GateDecision(False, SkipReason.CONSENT_WITHDRAWN)
        if consent is not ConsentStatus.GRANTED:
            return GateDecision(False, SkipReason.NO_CONSENT)
    return ALLOW


def account_may_send(status: AccountStatus) -> bool:
    """Only an active account hands messages to a transport; a suspended one has them held."""
    return status is AccountStatus.ACTIVE
