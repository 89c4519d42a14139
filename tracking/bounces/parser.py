"""parse_bounce: one raw report (bytes) → BounceResult. Never raises.

Detectors run cheapest and most exact first (flufl.bounce's lesson): complaint reports, RFC 3464 fields,
provider JSON, receipts, then the plain-text heuristics; auto-replies and anything unrecognised are `other`.
"""

from __future__ import annotations

from email.message import Message

from tracking.bounces.autoreply import detect_receipt, is_strong_auto_reply, is_weak_auto_reply
from tracking.bounces.complaint import detect_complaint
from tracking.bounces.correlate import correlate
from tracking.bounces.dsn import detect_dsn
from tracking.bounces.message import addresses, body_text, header, load
from tracking.bounces.plaintext import (
    diagnostic_near,
    find_recipient,
    from_mail_system,
    is_success_notice,
    is_warning,
    looks_like_bounce,
    report_prose,
)
from tracking.bounces.provider_json import detect_provider_json
from tracking.bounces.result import BounceKind, BounceResult, Correlation, OtherReason
from tracking.bounces.verdict import failure_verdict


def parse_bounce(raw: bytes, envelope_to: str | None = None) -> BounceResult:
    """Classify one raw RFC 5322 message received at the bounce or feedback-loop address.

    `envelope_to` is the SMTP RCPT address when the listener knows it (the VERP return-path).
    """
    try:
        if not raw or not raw.strip():
            return _other(OtherReason.MALFORMED, "empty")
        msg = load(raw)
        result = _classify(msg)
    except Exception as exc:  # the contract is "never raise": a report we cannot read is `other`
        return _other(OtherReason.MALFORMED, f"error:{type(exc).__name__}")
    try:
        hints = correlate(msg, envelope_to)
    except Exception:
        hints = Correlation()
    return BounceResult(result.kind, result.recipient, result.status, result.reason, result.detector,
                        result.diagnostic, hints)


def _other(reason: OtherReason, detector: str, recipient: str | None = None) -> BounceResult:
    return BounceResult(BounceKind.OTHER, recipient, None, reason.value, detector)


def _replier(msg: Message) -> str | None:
    """An auto-reply or a read receipt comes from the recipient's own mailbox (RFC 3834 §3.1.5, RFC 8098)."""
    for name in ("From", "Reply-To", "Sender"):
        found = [a for a in addresses(header(msg, name)) if not a.startswith("b.")]
        if found:
            return found[0]
    return None


def _excluded(msg: Message) -> set[str]:
    """Addresses of the report's own envelope: never the failed recipient."""
    found: set[str] = set()
    for name in ("From", "To", "Sender", "Return-Path", "Reply-To"):
        found.update(a.lower() for a in addresses(header(msg, name)))
    return found


def _classify(msg: Message) -> BounceResult:
    complaint = detect_complaint(msg)
    if complaint is not None:
        recipient, reason = complaint
        return BounceResult(BounceKind.COMPLAINT, recipient, None, reason, "arf")

    dsn = detect_dsn(msg)
    prose = report_prose(msg)
    if dsn is not None:
        recipient, verdict, diagnostic = dsn
        if recipient is None:
            recipient, _ = find_recipient(msg, prose, _excluded(msg))
        return BounceResult(verdict.kind, recipient, verdict.status, verdict.reason, "dsn", diagnostic)

    provider = detect_provider_json(body_text(msg))
    if provider is not None:
        recipient, verdict, diagnostic = provider
        return BounceResult(verdict.kind, recipient, verdict.status, verdict.reason, "provider-json", diagnostic)

    receipt = detect_receipt(msg)
    if receipt is not None:
        return BounceResult(BounceKind.OTHER, _replier(msg), None, receipt, "receipt")

    if is_strong_auto_reply(msg) and not from_mail_system(msg):
        return _other(OtherReason.AUTO_REPLY, "auto-reply", _replier(msg))
    if looks_like_bounce(msg, prose):
        recipient, offset = find_recipient(msg, prose, _excluded(msg))
        if is_success_notice(msg, prose):
            return _other(OtherReason.DELIVERED, "text-success", recipient)
        if is_warning(msg, prose):
            return _other(OtherReason.DELAYED, "text-warning", recipient)
        diagnostic = diagnostic_near(prose, offset)
        verdict = failure_verdict(None, diagnostic, prose)
        return BounceResult(verdict.kind, recipient, verdict.status, verdict.reason, "text", diagnostic or None)
    if is_weak_auto_reply(msg) or is_strong_auto_reply(msg):
        return _other(OtherReason.AUTO_REPLY, "auto-reply", _replier(msg))
    return _other(OtherReason.NOT_A_BOUNCE, "none")
