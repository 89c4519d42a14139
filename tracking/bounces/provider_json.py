"""Provider notifications delivered by email as JSON (Amazon SES through SNS email subscriptions).

Shape: {"notificationType"|"eventType": "Bounce"|"Complaint"|"Delivery", "bounce": {"bounceType":
"Permanent"|"Transient"|"Undetermined", "bouncedRecipients": [{"emailAddress", "status", "diagnosticCode"}]},
"complaint": {"complainedRecipients": [{"emailAddress"}], "complaintFeedbackType"}}.
"""

from __future__ import annotations

import json
from typing import Any

from tracking.bounces.result import BounceKind, OtherReason
from tracking.bounces.verdict import Verdict, failure_verdict


def _load(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start : end + 1])
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):  # raw SNS envelope
        try:
            data = json.loads(data["Message"])
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def _first_email(items: Any) -> str | None:
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("emailAddress"), str):
                return str(item["emailAddress"]).strip().lower()
    return None


def detect_provider_json(text: str) -> tuple[str | None, Verdict, str | None] | None:
    if "notificationType" not in text and "eventType" not in text:
        return None
    data = _load(text)
    if data is None:
        return None
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    if kind == "complaint":
        complaint = _dict(data.get("complaint"))
        feedback = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        recipient = _first_email(complaint.get("complainedRecipients"))
        return recipient, Verdict(BounceKind.COMPLAINT, None, f"complaint:{feedback}"), None
    if kind == "delivery":
        recipients = _dict(data.get("delivery")).get("recipients")
        first = recipients[0] if isinstance(recipients, list) and recipients else None
        recipient = first.strip().lower() if isinstance(first, str) else None
        return recipient, Verdict(BounceKind.OTHER, None, OtherReason.DELIVERED.value), None
    if kind != "bounce":
        return None
    bounce = _dict(data.get("bounce"))
    bounced = bounce.get("bouncedRecipients")
    first_bounced = _dict(bounced[0]) if isinstance(bounced, list) and bounced else {}
    diagnostic = str(first_bounced.get("diagnosticCode") or "")
    verdict = failure_verdict(str(first_bounced.get("status") or ""), diagnostic)
    permanent_address = bounce.get("bounceType") == "Permanent" and bounce.get("bounceSubType") in (
        "General", "NoEmail")
    if permanent_address and verdict.kind is BounceKind.SOFT and verdict.reason == "unknown":
        # SES's own judgement when the remote words say nothing: Permanent/General and NoEmail are
        # address-level failures (SES suppresses them).
        verdict = Verdict(BounceKind.HARD, verdict.status, "user_unknown")
    return _first_email(bounced), verdict, diagnostic or None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
