"""Parse the "Name: value" blocks of message/delivery-status and message/feedback-report (RFC 3464 §2.1,
RFC 5965 §3.1): unfolded, names lower-cased, tolerant of missing blank lines between recipient blocks."""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from email.message import Message

from tracking.bounces.message import payload_text

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)\s*:\s*(.*)$")


def fields_text(part: Message) -> str:
    """Raw text of a message/* report part, whatever the stdlib parser made of it."""
    text = _fields_text(part)
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    # Some MTAs base64- or QP-encode the report part; the stdlib then parses the encoded text as headers.
    try:
        if encoding == "base64":
            text = base64.b64decode("".join(text.split()), validate=False).decode("utf-8", "replace")
        elif encoding == "quoted-printable":
            text = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    except (ValueError, binascii.Error):
        pass
    return text


def _fields_text(part: Message) -> str:
    try:
        payload = part.get_payload()
        if isinstance(payload, list):
            chunks = []
            for sub in payload:
                if isinstance(sub, Message):
                    chunks.append("".join(f"{k}: {v}\n" for k, v in sub.items()))
                    body = sub.get_payload()
                    if isinstance(body, str) and body.strip():
                        chunks.append(body)
                    chunks.append("\n")
            return "".join(chunks)
    except Exception:
        return ""
    return payload_text(part)


def parse_fields(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and out and line.strip():
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
            continue
        m = _FIELD_RE.match(line.strip())
        if m:
            out.append((m[1].lower(), m[2].strip()))
    return out


RECIPIENT_FIELDS = frozenset(
    {"original-recipient", "final-recipient", "action", "status", "remote-mta", "diagnostic-code",
     "last-attempt-date", "will-retry-until", "x-actual-recipient", "x-supplementary-info", "x-display-name"}
)


def recipient_groups(text: str) -> list[dict[str, str]]:
    """Per-recipient field groups (RFC 3464 §2.1: blocks separated by blank lines).

    Within a block, a repeated Original-/Final-Recipient starts a new group (MTAs that forget the blank line);
    fields that precede the first recipient field of a block (Action before Final-Recipient) belong to it.
    """
    groups: list[dict[str, str]] = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        fields = parse_fields(block)
        if not any(name in ("original-recipient", "final-recipient") for name, _ in fields):
            continue
        current: dict[str, str] = {}
        block_groups = [current]
        for name, value in fields:
            if name in ("original-recipient", "final-recipient") and name in current:
                current = {}
                block_groups.append(current)
            if name in RECIPIENT_FIELDS:
                current.setdefault(name, value)
        groups.extend(g for g in block_groups if g)
    return groups
