"""Tolerant access to a raw report: decoding, parts, addresses, the returned original.

Every helper here swallows decoding errors: a bounce parser meets broken MIME daily and must never raise.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import re
from collections.abc import Iterator
from email.message import Message

# A pragmatic address pattern: good enough to pick recipients out of prose, not an RFC 5322 validator.
ADDRESS_RE = re.compile(
    r"(?<![\w.+=/-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z][A-Za-z0-9-]{0,23})(?![\w-])"
)
_ANY_DOMAIN_ADDRESS_RE = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9][A-Za-z0-9.-]*)")

# Daemon mailboxes that appear in reports but are never the failed recipient.
_DAEMON_LOCALS = re.compile(
    r"^(?:mailer-daemon|postmaster|mail-daemon|maildaemon|root|abuse|nobody|no-?reply|double-bounce|"
    r"bounces?|mail ?delivery ?(?:system|subsystem)|fbl|feedback|arf|staff|scomp|daemon)$",
    re.IGNORECASE,
)


def load(raw: bytes) -> Message:
    """Parse bytes with the compat32 policy: it keeps malformed headers as strings instead of raising later."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a broken header object must not stop the parse
        return ""
    if value is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except Exception:
        return str(value)


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return str(value or "").lower()


def walk(msg: Message) -> Iterator[Message]:
    try:
        yield from msg.walk()
    except Exception:
        yield msg


def payload_text(part: Message) -> str:
    """The decoded text of a non-multipart part (or the raw text of a message/* part)."""
    try:
        if part.is_multipart():
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0].as_string() if content_type(part).startswith("message/") else ""
            return ""
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            raw = part.get_payload()
            return raw if isinstance(raw, str) else ""
        charset = part.get_content_charset() or "utf-8"
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            return data.decode("utf-8", errors="replace")
    except Exception:
        return ""


def body_text(msg: Message) -> str:
    """Concatenated text/* parts that belong to the report itself (not the returned original), HTML stripped."""
    chunks: list[str] = []
    for part in _report_parts(msg):
        ctype = content_type(part)
        if ctype == "text/plain" or ctype == "text/html" or (ctype.startswith("text/") and "rfc822" not in ctype):
            text = payload_text(part)
            chunks.append(strip_html(text) if ctype == "text/html" else text)
    return "\n".join(chunks)


def _report_parts(msg: Message) -> Iterator[Message]:
    """Parts of the report, skipping anything inside an attached message/rfc822."""
    if not msg.is_multipart():
        yield msg
        return
    try:
        payload = msg.get_payload()
    except Exception:
        return
    if not isinstance(payload, list):
        return
    for part in payload:
        if not isinstance(part, Message):
            continue
        ctype = content_type(part)
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"):
            continue
        if part.is_multipart() and not ctype.startswith("message/"):
            yield from _report_parts(part)
        else:
            yield part


_TAG_RE = re.compile(r"<(?:script|style)[^>]*>.*?</(?:script|style)>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&nbsp;": " ", "&quot;": '"', "&#39;": "'"}


def strip_html(text: str) -> str:
    text = re.sub(r"<br\s*/?>|</p>|</div>|</tr>|</li>", "\n", text, flags=re.IGNORECASE)
    text = _TAG_RE.sub(" ", text)
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    return text


def original_text(msg: Message) -> str:
    """The returned original (headers at least), from a message/rfc822 or text/rfc822-headers part."""
    for part in walk(msg):
        ctype = content_type(part)
        if ctype in ("message/rfc822", "message/global", "message/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                try:
                    return inner[0].as_string()
                except Exception:
                    return payload_text(part)
            return payload_text(part)
        if ctype in ("text/rfc822-headers", "text/x-rfc822-headers"):
            return payload_text(part)
    return ""


# Markers after which non-MIME bounces quote the original message (Postfix, Exim, qmail, Sendmail, others).
_ORIGINAL_MARKERS = re.compile(
    r"^[ \t>]*(?:[-=*_]{2,}[^\n]*(?:original|returned|copy|headers?|undelivered|unsent|rejected message)[^\n]*"
    r"|[^\n]{0,40}(?:original message follows|below this line is a copy|this is a copy of the message|"
    r"unsent message below|original message headers|returned message follows|message headers follow|"
    r"headers of the original message|original message header|start of returned message|"
    r"here is a copy of the first part of the message)[^\n]*)$",
    re.IGNORECASE | re.MULTILINE,
)


def split_inline_original(text: str) -> tuple[str, str]:
    """Split a plain-text bounce into (report prose, quoted original) at the first marker."""
    m = _ORIGINAL_MARKERS.search(text)
    if m is None:
        return text, ""
    return text[: m.start()], text[m.end():]


_PREFIX_RE = re.compile(r"^(?:smtp|rfc822|x400|ex|sip)[:=]|^['`]+", re.IGNORECASE)


def normalise(address: str) -> str:
    """Lower-case, strip quoting and Exchange's "SMTP=" / "smtp:" prefixes."""
    return _PREFIX_RE.sub("", address.strip().strip(".").strip("'`")).lower()


def addresses(text: str) -> list[str]:
    return [normalise(a) for a in ADDRESS_RE.findall(text)]


def is_daemon(address: str) -> bool:
    local = address.split("@", 1)[0]
    return bool(_DAEMON_LOCALS.match(local))


def clean_address(value: str) -> str | None:
    """'rfc822; <User@Example.COM>' → 'user@example.com'; None when no address is in it."""
    value = value.strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    value = value.strip().strip("<>\"' ").strip()
    m = ADDRESS_RE.search(value) or _ANY_DOMAIN_ADDRESS_RE.search(value)
    return normalise(m.group(1)) if m else None
