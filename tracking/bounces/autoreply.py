"""Messages that come back but are not failures: auto-replies (RFC 3834), read receipts (RFC 8098 MDN).

Bounces themselves carry `Auto-Submitted: auto-replied` (Postfix adds it, RFC 3834 §5), so that header alone is
only a weak signal, consulted after the bounce detectors found nothing.
"""

from __future__ import annotations

import re
from email.message import Message

from tracking.bounces.fields import fields_text
from tracking.bounces.message import content_type, header, param, walk
from tracking.bounces.result import OtherReason

_AUTO_SUBJECT = re.compile(
    r"^\s*(?:\[?auto(?:matic|matische)?[ -]?(?:reply|response|antwort|svar|risposta|respuesta|r[ée]ponse)|"
    r"auto:|autoreply|out of (?:the )?office|ooo\b|vacation|on vacation|on leave|away from|absent|absence|"
    r"abwesen|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|automatisch antwoord|"
    r"fuera de la oficina|fuori ufficio|hors du bureau|I am out|I'm out|je suis absent|congés?)",
    re.IGNORECASE,
)
_READ_SUBJECT = re.compile(r"^\s*(?:read|lu|gelesen|le[íi]do|letto|gelezen)\s*:", re.IGNORECASE)
_DELIVERED_SUBJECT = re.compile(r"^\s*(?:delivered|relayed|zugestellt|remis|entregado)\s*:", re.IGNORECASE)


_MDN_FAILURE = re.compile(r"deleted|failed|error|denied|rejected|quota", re.IGNORECASE)


def detect_receipt(msg: Message) -> str | None:
    """Read receipts (MDN) and delivery receipts that are not RFC 3464 shaped.

    An MDN whose disposition is "deleted"/"failed" (Sieve reject, Dovecot's quota refusal, RFC 5429) is a
    refusal in receipt's clothing: None, so the bounce heuristics read it.
    """
    mdn = content_type(msg) == "multipart/report" and param(msg, "report-type") == "disposition-notification"
    for part in walk(msg):
        if content_type(part) in ("message/disposition-notification", "message/global-disposition-notification"):
            mdn = True
            if _MDN_FAILURE.search(fields_text(part)):
                return None
    if mdn:
        if _MDN_FAILURE.search(header(msg, "Subject")):
            return None
        return OtherReason.READ_RECEIPT.value
    subject = header(msg, "Subject")
    if _READ_SUBJECT.search(subject):
        return OtherReason.READ_RECEIPT.value
    if _DELIVERED_SUBJECT.search(subject):
        return OtherReason.DELIVERED.value
    return None


def is_strong_auto_reply(msg: Message) -> bool:
    if header(msg, "X-Autoreply") or header(msg, "X-Autorespond") or header(msg, "X-Autoresponder"):
        return True
    if header(msg, "Precedence").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(header(msg, "Subject")))


def is_weak_auto_reply(msg: Message) -> bool:
    value = header(msg, "Auto-Submitted").strip().lower()
    return value.startswith("auto-replied") or value.startswith("auto-generated")
