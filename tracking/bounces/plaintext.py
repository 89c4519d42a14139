"""Non-standard (plain-text) bounces: Postfix/Exim/qmail/Sendmail prose, Exchange, Yahoo, Gmail and others.

Cheapest exact signal first: the `X-Failed-Recipients` header (Exim and friends), then the recipient lines of
the known formats, then any address in the report's prose that is not a daemon or ours, then the returned
original's To. The failure's words are taken near an SMTP code when one is quoted.
"""

from __future__ import annotations

import re
from email.message import Message

from tracking.bounces.message import (
    ADDRESS_RE,
    addresses,
    body_text,
    clean_address,
    header,
    is_daemon,
    load,
    normalise,
    original_text,
    split_inline_original,
)

_BOUNCE_FROM = re.compile(
    r"mailer-daemon|mail-daemon|postmaster|mail delivery|delivery subsystem|mail administrator|"
    r"microsoft outlook|mail system|mailer|mdaemon|internet mail delivery|notification|daemon",
    re.IGNORECASE,
)
_DAEMON_FROM = re.compile(r"mailer-daemon|mail-daemon|postmaster@|mail delivery (?:system|subsystem)", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status )?notification|delivery fail|failure notice|failed mail|"
    r"returned mail|returned to sender|mail delivery (?:failed|failure|system|problem)|non[- ]?delivery|"
    r"nondeliverable|not delivered|could not be delivered|delivery problem|delivery error|mail system error|"
    r"permanent error|message not delivered|delivery has failed|unzustellbar|non remis|ne peut .{0,20}remis|"
    r"no se puede entregar|impossibile recapitare|onbestelbaar|bounce|delivery report|rejected|error|"
    r"warning|delayed|nicht zugestellt|unable to deliver|mail failure|delivery notice|\\bfail",
    re.IGNORECASE,
)
_BOUNCE_BODY = re.compile(
    r"qmail-send program|this is the mail system at|created automatically by mail delivery software|"
    r"could not be delivered|couldn't be delivered|cannot be delivered|can't be delivered|was not delivered|"
    r"delivery (?:has |to the following recipients? )?failed|undeliverable|permanent(?:ly)? (?:fatal )?error|"
    r"following address(?:es)? (?:had|failed)|did not reach|unable to deliver|wasn't able to deliver|"
    r"could not deliver|message (?:was )?(?:rejected|returned)|returned to you|delivery failure|"
    r"were unable to deliver|unknown user|user unknown|no such user|mailbox (?:is )?full|rcpt to|"
    r"smtp error|remote host said|does not exist|failed permanently|delivery status notification|"
    r"no valid recipients|failed address|automatically rejected",
    re.IGNORECASE,
)
_WARNING = re.compile(
    r"will (?:continue|keep) (?:trying|to try|retrying|attempting)|will be retried|will retry|"
    r"still (?:being )?(?:retried|trying|attempting)|this is a warning message only|you do not need to resend|"
    r"no action is required on your part|delivery (?:has been |is )?delayed|delayed mail|"
    r"warning: could not send|has not yet been delivered|not been delivered yet|message (?:is|was|has been) delayed|"
    r"delivery delay|will be retried until|retry until|is still in the queue|"
    r"(?:delivery )?attempts will continue|please do not resend|will be (?:re)?attempted|"
    r"delivery will continue to be attempted",
    re.IGNORECASE,
)
_FINAL = re.compile(
    r"permanent(?:ly)? (?:fatal )?(?:error|failure)|giving up|given up|failed permanently|has been returned|"
    r"retry timeout exceeded|will not be retried|no further attempts|deleted from (?:the )?queue|"
    r"has been rejected|(?<!non-)(?<!non )fatal error",
    re.IGNORECASE,
)
# Delivery *success* notices in prose (Exim's "had successful delivery notifications", Exchange's "Delivery to
# these recipients or groups is complete"): RFC 3464 `Action: delivered` without the machine-readable part.
_SUCCESS = re.compile(
    r"had successful delivery notifications|relayed to non-dsn-aware mailer|successfully delivered|"
    r"(?:was|were|has been|have been) delivered (?:to|successfully)|successful delivery|"
    r"delivery to (?:the following|these) recipients? (?:or groups )?(?:is complete|was successful|succeeded)",
    re.IGNORECASE,
)
_FAILURE_WORDS = re.compile(
    r"could not|couldn't|cannot|can't|not (?:yet )?(?:been |be )?delivered|undeliver|fail|error|reject|unable|"
    r"permanent|bounced|delayed|will (?:continue|retry)|unknown|\bquota\b|\bfull\b",
    re.IGNORECASE,
)
# Exim names the address it failed *and*, when that address came from a redirect (alias, .forward), the
# address that was mailed: "forwarded@elsewhere\n    (generated from alias@here)". The report is about the
# address we sent to (Exim's own DSN puts it in Final-Recipient).
_GENERATED_FROM = r">?\s*\(generated from\s+<?([^\s<>()]+@[^\s<>()]+?)>?\)"
_SMTP_LINE = re.compile(r"(?:^|\s)(?:[45]\d\d[ -]|[45]\.\d{1,3}\.\d{1,3}\b|#[45]\.\d\.\d)", re.MULTILINE)

_ADDR = r"<?([^\s<>()\[\]\"',;:]+@[A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9])>?"
# Exact recipient lines of the known formats, tried first; group 1 is the address.
_EXACT = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in (
    r"^\s*(?:Final|Original)-Recipient:\s*(?:rfc822;)?\s*" + _ADDR,  # DSN fields pasted as text
    r"^\s*<([^\s<>]+@[^\s<>]+)>(?: \(expanded from [^)]*\))?:",  # Postfix / qmail / Yahoo "<addr>:"
)]
# Phrases after which the failed recipient follows (within a few lines): Exim, Sendmail, Exchange, Gmail, ...
_LEAD_IN = re.compile(
    r"following (?:\w+ )?(?:e-?mail )?(?:address(?:es|\(es\))?|recipients?(?:\(s\))?|users?|destinations?|"
    r"mailbox(?:es)?)|permanent fatal errors|could not be delivered to|couldn't be delivered to|"
    r"was not delivered to|wasn't delivered to|undeliverable to|delivery to|failed to deliver to|"
    r"(?:rejected|failed|bounced) (?:these|the following)|did not reach|failed (?:address|recipient)(?:es|s)?|"
    r"not be delivered to|addressed(?: to)?,?|message to|delivery has failed to these recipients|"
    r"unable to deliver (?:your message )?to|"
    r"your message to|recipient address:|original address:|failed address:|bad address:|invalid address:|"
    r"unknown address:|invalid recipient:|recipient:|addressee:|destinataire\s*:|empf[äa]nger\s*:",
    re.IGNORECASE,
)
# Weaker recipient shapes, tried after the lead-ins.
_WEAK = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in (
    r"(?:RCPT TO|rcpt to)\s*:?\s*<([^\s<>]+@[^\s<>]+)>",
    r"^\s*" + _ADDR + r"\s*(?:\.\.\.|:)?\s*(?:user unknown|unknown user|no such|mailbox|host unknown|"
    r"unknown address|address rejected|invalid|quota|over quota|not found|delivery failed|failed)",
    r"\bto\s*:\s*" + _ADDR,
)]


def from_mail_system(msg: Message) -> bool:
    """Sent by a mail system (MAILER-DAEMON, postmaster) or naming failed recipients: never an auto-reply."""
    return bool(header(msg, "X-Failed-Recipients") or _DAEMON_FROM.search(header(msg, "From")))


def looks_like_bounce(msg: Message, prose: str) -> bool:
    if header(msg, "X-Failed-Recipients"):
        return True
    sender = f"{header(msg, 'From')} {header(msg, 'Sender')} {header(msg, 'Return-Path')}"
    subject = header(msg, "Subject")
    if _DAEMON_FROM.search(header(msg, "From")):
        return True  # MAILER-DAEMON / postmaster never send auto-replies (RFC 3834 §2)
    by_sender = bool(_BOUNCE_FROM.search(sender)) or header(msg, "Return-Path").strip() == "<>"
    by_subject = bool(_BOUNCE_SUBJECT.search(subject))
    by_body = bool(_BOUNCE_BODY.search(prose[:6000]))
    return ((by_sender or by_subject) and by_body) or (by_sender and by_subject)


def is_warning(msg: Message, prose: str) -> bool:
    text = f"{header(msg, 'Subject')}\n{prose[:6000]}"
    return bool(_WARNING.search(text)) and not _FINAL.search(prose[:6000])


def is_success_notice(msg: Message, prose: str) -> bool:
    """A prose delivery (or relay) receipt that reports no failure at all."""
    text = f"{header(msg, 'Subject')}\n{prose[:6000]}"
    return bool(_SUCCESS.search(text)) and not _FAILURE_WORDS.search(text)


def _ours_or_daemon(address: str, excluded: set[str]) -> bool:
    return is_daemon(address) or address in excluded or address.startswith("b.")


def find_recipient(msg: Message, prose: str, excluded: set[str]) -> tuple[str | None, int]:
    """→ (recipient, offset in prose where it was found or -1)."""
    found, offset = _find_recipient(msg, prose, excluded)
    if found:
        parent = re.search(re.escape(found) + _GENERATED_FROM, prose, re.IGNORECASE)
        if parent is not None:
            mailed = clean_address(parent[1])
            if mailed and mailed not in excluded:
                return mailed, offset
    return found, offset


def _find_recipient(msg: Message, prose: str, excluded: set[str]) -> tuple[str | None, int]:
    failed = header(msg, "X-Failed-Recipients")
    if failed:
        found = clean_address(failed.split(",")[0])
        if found:
            return found, prose.lower().find(found)

    def acceptable(candidate: str | None) -> bool:
        return bool(candidate) and "." in str(candidate).rsplit("@", 1)[-1] and not _ours_or_daemon(
            str(candidate), excluded)

    for pattern in _EXACT:
        for m in pattern.finditer(prose):
            found = clean_address(m[1])
            if acceptable(found):
                return found, m.start(1)
    for lead in _LEAD_IN.finditer(prose):
        window = prose[lead.end() : lead.end() + 400]
        for m in ADDRESS_RE.finditer(window):
            found = normalise(m[1])
            if acceptable(found) and not _in_noise_context(window, m.start()):
                return found, lead.end() + m.start()
    for pattern in _WEAK:
        for m in pattern.finditer(prose):
            found = clean_address(m[1])
            if acceptable(found):
                return found, m.start(1)
    for m in ADDRESS_RE.finditer(prose):
        found = normalise(m[1])
        if acceptable(found) and not _in_noise_context(prose, m.start()):
            return found, m.start()
    original = original_text(msg)
    if original:
        try:
            to = header(load(original.encode("utf-8", "replace")), "To")
        except Exception:
            to = ""
        candidates = addresses(to)
        if candidates:
            return candidates[0], -1
    return None, -1


def _in_noise_context(text: str, offset: int) -> bool:
    """Addresses in Received/Message-ID/From lines of quoted headers are not the recipient."""
    line_start = text.rfind("\n", 0, offset) + 1
    line = text[line_start : offset].lower()
    return any(key in line for key in ("message-id", "from:", "received:", "return-path", "sender:", "by ",
                                       "reply-to", "envelope-from", "mail from", "id <", "errors-to"))


def diagnostic_near(prose: str, offset: int) -> str:
    """The failure's words: the SMTP-coded lines after the recipient, else the lines that follow it."""
    scope = prose[offset:] if offset >= 0 else prose
    m = _SMTP_LINE.search(scope[:3000])
    if m is not None:
        start = scope.rfind("\n", 0, m.start()) + 1
        lines = scope[start:].split("\n")[:4]
        return " ".join(line.strip() for line in lines if line.strip())[:1000]
    lines = [line.strip() for line in scope.split("\n")[:8] if line.strip()]
    return " ".join(lines)[:1000]


def report_prose(msg: Message) -> str:
    prose, _ = split_inline_original(body_text(msg))
    return prose
