"""From a report's status and words to (kind, status, reason), through the shared SMTP reply policy.

One source of truth: `guardrails.bounce_policy` decides what is hard for synchronous replies and for
asynchronous reports alike. Only a HARD failure class becomes the `hard` kind (issue 4: everything else that
failed — mailbox full even as 5.2.2, blocks aimed at us, rate limits, expiry, unknown causes — is `soft`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guardrails.bounce_policy import FailureClass, Reason, classify_reply, parse_enhanced
from tracking.bounces.result import BounceKind

_BASIC_CODE_RE = re.compile(r"(?<![\d.])([245]\d\d)(?:[ -]|$)")


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: BounceKind
    status: str | None
    reason: str


def basic_code(text: str) -> int | None:
    m = _BASIC_CODE_RE.search(text)
    return int(m[1]) if m else None


def best_status(status_field: str | None, diagnostic: str) -> str | None:
    """The Status field, refined by the diagnostic's own code when the field is generic (x.0.0) or absent."""
    given = parse_enhanced(status_field)
    spoken = parse_enhanced(diagnostic)
    if given is None and spoken is None:
        return None
    refine = spoken is not None and (given is None or (given[1:] == (0, 0) and spoken[0] == given[0]))
    chosen = spoken if refine else given
    if chosen is None:
        return None
    return "{}.{}.{}".format(*chosen)


def failure_verdict(status_field: str | None, diagnostic: str, prose: str = "") -> Verdict:
    """Classify a failed delivery; `prose` (the report's human text) is consulted only when the
    diagnostic alone does not tell the cause."""
    status = best_status(status_field, diagnostic)
    code = basic_code(diagnostic)
    text = f"{status_field or ''} {diagnostic}".strip()
    reply = classify_reply(code, status, text)
    if reply.reason is Reason.UNKNOWN and prose:
        reply = classify_reply(code, status, f"{text}\n{prose[:4000]}")
    if status is not None and status.startswith("2."):
        # An "Action: failed" with a success status is contradictory; the words decide, cautiously.
        status = None
    kind = BounceKind.HARD if reply.failure_class is FailureClass.HARD else BounceKind.SOFT
    return Verdict(kind=kind, status=status, reason=reply.reason.value)
