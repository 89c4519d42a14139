"""Complaints: RFC 5965 ARF reports, Microsoft JMRP, older provider feedback-loop shapes.

ISPs often redact the recipient (RFC 6590); the correlation hints (our Message-ID, X-Envoi-Ref) then find
the message. The recipient is taken from, in order: Original-Rcpt-To (RFC 5965 §3.2), Removal-Recipient,
Microsoft's X-HmXmrOriginalRecipient, the returned original's To.
"""

from __future__ import annotations

import re
from email.message import Message

from tracking.bounces.fields import fields_text, parse_fields
from tracking.bounces.message import (
    body_text,
    clean_address,
    content_type,
    header,
    load,
    original_text,
    param,
    walk,
)

_FEEDBACK_TYPES = ("message/feedback-report",)
_FBL_SUBJECT = re.compile(
    r"complaint about message from|abuse report|feedback report|spam report|fbl report|"
    r"email feedback report|report of (?:spam|abuse)|abuse complaint|spam complaint",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"mailer-daemon|mail delivery (?:system|subsystem)", re.IGNORECASE)
_FBL_BODY = re.compile(
    r"this is an? (?:email )?(?:abuse|spam|feedback) report|feedback[- ]loop|"
    r"this message was (?:reported|marked) as (?:spam|junk)|marked (?:this|the) (?:message|email) as spam|"
    r"has been reported as spam|user (?:has )?(?:reported|complained)",
    re.IGNORECASE,
)


def _first_address(*values: str) -> str | None:
    for value in values:
        if value:
            found = clean_address(value)
            if found:
                return found
    return None


def _original_to(msg: Message) -> str:
    text = original_text(msg)
    if not text:
        return ""
    try:
        return header(load(text.encode("utf-8", "replace")), "To")
    except Exception:
        return ""


def detect_complaint(msg: Message) -> tuple[str | None, str] | None:
    """→ (recipient, reason) for a complaint, or None."""
    report: str | None = None
    for part in walk(msg):
        if content_type(part) in _FEEDBACK_TYPES:
            report = fields_text(part)
            break
    is_arf = report is not None or (
        content_type(msg) == "multipart/report" and param(msg, "report-type") == "feedback-report"
    )
    jmrp = header(msg, "X-HmXmrOriginalRecipient") or _jmrp_in_original(msg)
    if is_arf:
        fields = dict(reversed(parse_fields(report or "")))  # first occurrence wins
        feedback_type = (fields.get("feedback-type") or "abuse").strip().lower() or "abuse"
        recipient = _first_address(
            fields.get("original-rcpt-to", ""), fields.get("removal-recipient", ""), jmrp, _original_to(msg)
        )
        return recipient, f"complaint:{feedback_type}"
    if jmrp:
        return _first_address(jmrp, _original_to(msg)), "complaint:abuse"
    if _is_delivery_report(msg):
        return None  # the weak signals below must never turn a DSN into a complaint
    subject = header(msg, "Subject")
    if (_FBL_SUBJECT.search(subject) or _FBL_BODY.search(body_text(msg)[:3000])) and original_text(msg):
        return _first_address(_original_to(msg)), "complaint:abuse"
    return None


def _is_delivery_report(msg: Message) -> bool:
    if param(msg, "report-type") == "delivery-status" or _DAEMON.search(header(msg, "From")):
        return True
    return any(content_type(part) in ("message/delivery-status", "message/global-delivery-status")
               for part in walk(msg))


def _jmrp_in_original(msg: Message) -> str:
    m = re.search(r"^X-HmXmrOriginalRecipient:\s*(\S+)", original_text(msg), re.IGNORECASE | re.MULTILINE)
    return m[1] if m else ""
