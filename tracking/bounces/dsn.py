"""RFC 3464 delivery status notifications (and their text/plain look-alikes).

The cheapest exact signal: a message/delivery-status part names each recipient (Final-Recipient, MUST), what
happened (Action, MUST) and why (Status, MUST; Diagnostic-Code, MAY).
"""

from __future__ import annotations

import re
from email.message import Message

from tracking.bounces.fields import fields_text, recipient_groups
from tracking.bounces.message import body_text, clean_address, content_type, walk
from tracking.bounces.result import BounceKind, OtherReason
from tracking.bounces.verdict import Verdict, failure_verdict

_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_INLINE_DSN_RE = re.compile(r"^\s*(?:Final|Original)-Recipient\s*:", re.IGNORECASE | re.MULTILINE)
_STATUS_CLASS_RE = re.compile(r"^\s*([245])\.\d")


def _report_text(msg: Message) -> str | None:
    for part in walk(msg):
        if content_type(part) in _DSN_TYPES:
            return fields_text(part)
    return None


def _recipient(group: dict[str, str]) -> str | None:
    final = clean_address(group.get("final-recipient", ""))
    original = clean_address(group.get("original-recipient", ""))
    actual = clean_address(group.get("x-actual-recipient", ""))
    # Original-Recipient (RFC 3464 §2.3.1) is the ORCPT the sender gave, i.e. the address we mailed; the
    # Final-Recipient may be an internal rewrite ("user@mailcluster.local", "userx@sims-ms-daemon").
    for candidate in (original, final, actual):
        if candidate and "." in candidate.rsplit("@", 1)[-1]:
            return candidate
    if final or original or actual:
        return final or original or actual
    # A non-Internet address type ("Final-Recipient: unknown; nair_s", RFC 3464 §2.3.2): keep it verbatim.
    raw = group.get("final-recipient", "") or group.get("original-recipient", "")
    value = raw.split(";", 1)[-1].strip().strip("<>").lower()
    return value or None


def _action(group: dict[str, str]) -> str:
    action = group.get("action", "").strip().lower().split(" ")[0].rstrip(";")
    if action:
        return action
    # Action is a MUST, but some MTAs omit it: infer from the status class.
    m = _STATUS_CLASS_RE.match(group.get("status", ""))
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get(m[1], "") if m else ""


def detect_dsn(msg: Message) -> tuple[str | None, Verdict, str | None] | None:
    """→ (recipient, verdict, diagnostic) or None when the message carries no delivery-status fields."""
    text = _report_text(msg)
    if text is None:
        body = body_text(msg)
        if not _INLINE_DSN_RE.search(body):
            return None
        text = body[_INLINE_DSN_RE.search(body).start():]  # type: ignore[union-attr]
    groups = recipient_groups(text)
    if not groups:
        return None
    actions = [_action(g) for g in groups]
    failed = [g for g, a in zip(groups, actions, strict=True) if a.startswith("fail")]
    if not failed:
        if any(a in ("delayed", "delay") for a in actions):
            return _recipient(groups[0]), Verdict(BounceKind.OTHER, None, OtherReason.DELAYED.value), None
        if any(a in ("delivered", "relayed", "expanded") for a in actions):
            return _recipient(groups[0]), Verdict(BounceKind.OTHER, None, OtherReason.DELIVERED.value), None
        return None  # unknown actions: let the text heuristics look at it
    group = failed[0]
    diagnostic = group.get("diagnostic-code", "")
    if ";" in diagnostic[:20]:
        diagnostic = diagnostic.split(";", 1)[1].strip()
    prose = body_text(msg)
    verdict = failure_verdict(group.get("status"), diagnostic, prose)
    return _recipient(group), verdict, diagnostic or None
