"""MIME assembly for one recipient, from a skeleton compiled once per campaign (never the `email` package per
message: it costs ~1–3 ms a message, see issue 7).

Every marketing message carries (contract Annex 1, obligations 1 and 4; RFC 8058; RFC 2369):
- the sender block (legal name, postal address, phone) and a visible unsubscribe link in the HTML and text parts;
- `List-Unsubscribe` with an HTTPS URL (signed token) and a mailto, and `List-Unsubscribe-Post`;
- `Message-ID`, `Date`, `Feedback-ID`, and a VERP return-path used as the envelope sender.
Header values can never carry CR/LF.
"""

from __future__ import annotations

import base64
import binascii
import html
import secrets
import time
from dataclasses import dataclass
from email.utils import formatdate

from crm.domain import MessageKind, SenderProfile
from sender.render import Rendered


class HeaderInjectionError(ValueError):
    pass


def clean_header(value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise HeaderInjectionError("header values cannot contain CR, LF or NUL")
    return value


def encode_word(value: str) -> str:
    """RFC 2047 encoded-words for non-ASCII header text, folded so that no line exceeds 78 characters."""
    clean_header(value)
    if value.isascii() and len(value) < 900:
        return value
    data = value.encode()
    words, start = [], 0
    while start < len(data):
        end = min(start + 45, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # never split a UTF-8 sequence
            end -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[start:end]).decode() + "?=")
        start = end
    return "\r\n ".join(words)


def format_address(name: str, address: str) -> str:
    clean_header(address)
    if not name:
        return f"<{address}>"
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{clean_header(quoted)}" <{address}>'
    return f"{encode_word(name)} <{address}>"


def _qp(text: str) -> bytes:
    # binascii.b2a_qp is C: quoted-printable with soft line breaks at 76 columns.
    body = (text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text).encode()
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")


_LABELS = {
    "fr": ("Se désinscrire", "Vous recevez ce message de"),
    "en": ("Unsubscribe", "You receive this message from"),
}


def labels(locale: str | None) -> tuple[str, str]:
    return _LABELS["en"] if (locale or "").lower().startswith("en") else _LABELS["fr"]


@dataclass(frozen=True, slots=True)
class PerMessage:
    message_id: int
    to: str
    return_path: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    ref: str  # signed X-Envoi-Ref (finds the message in a returned original)
    locale: str | None


class Composer:
    """Built once per campaign (or per transactional template): the static headers are pre-encoded."""

    def __init__(self, *, from_email: str, from_name: str, reply_to: str, sender: SenderProfile,
                 kind: MessageKind, feedback_id: str, list_id: str | None) -> None:
        self.kind = kind
        self.sender = sender
        self.domain = from_email.rpartition("@")[2]
        static = [f"From: {format_address(from_name, from_email)}"]
        if reply_to:
            static.append(f"Reply-To: {format_address('', reply_to)}")
        static.append("MIME-Version: 1.0")
        # Feedback-ID must be constant per stream, never unique per message (Gmail, STANDARDS §4).
        static.append(f"Feedback-ID: {clean_header(feedback_id)}")
        if list_id:
            static.append(f"List-Id: {clean_header(list_id)}")
        self._static = ("\r\n".join(static) + "\r\n").encode()
        self._date = ""
        self._date_at = 0
        # Message-IDs and MIME boundaries only need to be unique: the ledger id + a nonce drawn once per
        # composer (secrets per message cost ~5 % of the hot path).
        self._nonce = secrets.token_hex(6)

    def _now(self) -> str:
        now = int(time.time())
        if now != self._date_at:
            self._date, self._date_at = formatdate(now, localtime=False), now
        return self._date

    def _sender_block(self, per: PerMessage) -> tuple[str, str]:
        unsub, intro = labels(per.locale)
        s = self.sender
        text = (f"\n\n-- \n{intro} {s.legal_name}\n{s.postal_address}\nTél. : {s.phone}\n"
                f"{unsub} : {per.unsubscribe_url}\n")
        e = html.escape
        block = (
            '<div style="margin-top:24px;font-size:12px;color:#555;font-family:sans-serif">'
            f"<p>{e(intro)} {e(s.legal_name)}<br>{e(s.postal_address)}<br>Tél. : {e(s.phone)}</p>"
            f'<p><a href="{e(per.unsubscribe_url)}">{e(unsub)}</a></p></div>'
        )
        return text, block

    def compose(self, rendered: Rendered, per: PerMessage) -> bytes:
        text, html_body = rendered.text, rendered.html
        marketing = self.kind is MessageKind.MARKETING
        if marketing:
            text_block, html_block = self._sender_block(per)
            text = text.rstrip("\n") + text_block
            if html_body:
                lower = html_body.lower()
                at = lower.rfind("</body>")
                html_body = html_body[:at] + html_block + html_body[at:] if at >= 0 else html_body + html_block
        headers = [
            f"To: <{clean_header(per.to)}>",
            f"Subject: {encode_word(rendered.subject)}",
            f"Date: {self._now()}",
            f"Message-ID: <{per.message_id}.{self._nonce}@{self.domain}>",
            f"X-Envoi-Ref: {per.ref}",
        ]
        if marketing:
            headers.append(f"List-Unsubscribe: <{per.unsubscribe_url}>, <{per.unsubscribe_mailto}>")
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        head = self._static + ("\r\n".join(clean_header(h) for h in headers) + "\r\n").encode()
        if not html_body:
            return (head + b"Content-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(text) + b"\r\n")
        boundary = f"=_envoi_{per.message_id:x}_{self._nonce}".encode()
        return b"".join((
            head, b'Content-Type: multipart/alternative; boundary="', boundary, b'"\r\n\r\n',
            b"--", boundary, b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n", _qp(text), b"\r\n",
            b"--", boundary, b"\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n", _qp(html_body), b"\r\n",
            b"--", boundary, b"--\r\n",
        ))
