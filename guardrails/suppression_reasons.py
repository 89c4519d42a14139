"""The audience report's reason for a suppressed contact (issue 5).

A campaign's report must tell why contacts were excluded — no consent, withdrawn, unsubscribed, bounced,
complained — (contract, Annex 1; CNIL: the customer must be able to show that objections are honoured), so the
fan-out maps the suppression's own reason instead of a generic "suppressed"."""

from __future__ import annotations

from crm.domain import SkipReason, SuppressionReason

_BY_REASON: dict[str, SkipReason] = {
    SuppressionReason.UNSUBSCRIBED.value: SkipReason.UNSUBSCRIBED,
    SuppressionReason.COMPLAINED.value: SkipReason.COMPLAINED,
    SuppressionReason.DISABLED.value: SkipReason.BOUNCED,
    SuppressionReason.ERASED.value: SkipReason.ERASED,
}


def skip_reason_for_suppression(reason: str | None) -> SkipReason:
    """SkipReason of a suppression reason; unknown or manual reasons stay the generic `suppressed`."""
    return _BY_REASON.get(reason or "", SkipReason.SUPPRESSED)


def audience_skip_reason(gate_reason: SkipReason, suppression_reason: str | None) -> SkipReason:
    """The reason to count: the gate's, refined by the suppression's reason when the gate said "suppressed"."""
    if gate_reason is SkipReason.SUPPRESSED:
        return skip_reason_for_suppression(suppression_reason)
    return gate_reason
