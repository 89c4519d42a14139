"""Correlation hints, cheapest exact signal first: the VERP return-path, our X-Envoi-Ref header in the returned
original, the original Message-ID. Extracted as strings; verifying the VERP signature is the caller's job."""

from __future__ import annotations

import re
from email.message import Message

from tracking.bounces.message import body_text, header, original_text, split_inline_original
from tracking.bounces.result import Correlation

# Our return-path: b.<base36 message id>.<signature>@<bounce domain>.
VERP_RE = re.compile(r"(?<![\w.+-])(b\.[0-9a-z]+\.[A-Za-z0-9_-]+)@[A-Za-z0-9.-]+", re.IGNORECASE)
_REF_RE = re.compile(r"^X-Envoi-Ref:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_MSGID_RE = re.compile(r"^Message-ID:[ \t]*\n?[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_ADDRESSED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "X-Rcpt-To",
                 "Original-Recipient")


def verp_local(msg: Message, envelope_to: str | None = None) -> str | None:
    candidates = [envelope_to or ""] + [header(msg, name) for name in _ADDRESSED_TO]
    for value in candidates:
        m = VERP_RE.search(value)
        if m:
            return m[1]
    # The returned original's Return-Path / envelope sender is our VERP too.
    m = VERP_RE.search(original_text(msg)[:20000])
    return m[1] if m else None


def correlate(msg: Message, envelope_to: str | None = None) -> Correlation:
    original = original_text(msg)
    if not original:
        _, original = split_inline_original(body_text(msg))
    ref = _REF_RE.search(original)
    mid = _MSGID_RE.search(original)
    return Correlation(
        verp_local=verp_local(msg, envelope_to),
        envoi_ref=ref[1] if ref else None,
        message_id=mid[1] if mid else None,
    )
