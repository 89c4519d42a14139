"""What the two SMTP transports share: the relay configuration and the meaning of a reply.

`SmtpPool` (aiosmtplib) and `PipelinedSmtpTransport` (our own client) must classify the same reply the
same way, so the rules live here once: 2xx → SENT, 4xx → TRANSIENT, 5xx → PERMANENT (RFC 5321 §4.2.1),
and any failure to talk to the server at all (timeout, refused, reset) → TRANSIENT with no code.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from enum import StrEnum

from sender.transport import DeliveryResult, Envelope, Outcome


class StartTls(StrEnum):
    OFF = "off"  # never upgrade (a loopback relay, a test sink)
    OPPORTUNISTIC = "opportunistic"  # upgrade when the server offers STARTTLS (RFC 3207)
    REQUIRED = "required"  # refuse to send in clear: no STARTTLS offered → transient failure


@dataclass(frozen=True, slots=True)
class SmtpRelayConfig:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: StartTls = StartTls.OPPORTUNISTIC
    implicit_tls: bool = False  # RFC 8314 submissions (port 465): TLS from the first byte
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0  # every network call: connect, each command, the whole DATA body
    max_connections: int = 10
    max_messages_per_connection: int = 100
    helo_name: str | None = None  # None: the local FQDN
    tls_verify: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        # Bad configuration fails at start-up, naming the field (STYLE: settings).
        try:
            object.__setattr__(self, "starttls", StartTls(self.starttls))
        except ValueError:
            raise ValueError(f"starttls must be off|opportunistic|required, not {self.starttls!r}") from None
        if self.implicit_tls and self.starttls is not StartTls.OFF:
            raise ValueError("implicit_tls and starttls are exclusive: set starttls='off' with implicit_tls")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")

    @property
    def uses_tls(self) -> bool:
        return self.implicit_tls or self.starttls is not StartTls.OFF

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


# RFC 3463 §2: class.subject.detail, where class matches the first digit of the basic code
# (RFC 2034 §4) and subject/detail are 1-3 digits.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


def split_enhanced(code: int, text: str) -> tuple[str | None, str]:
    """Return (enhanced status, remaining text) of a reply text that may start with "5.1.1 ..."."""
    text = text.strip()
    m = _ENHANCED.match(text)
    if m is None or m.group(1) != str(code)[:1]:
        return None, text
    return m.group(0), text[m.end() :].strip()


def outcome_of(code: int) -> Outcome:
    if code == 530:
        # RFC 4954 §6 / RFC 3207 §4: "authentication (or TLS) required" is about our session, never about
        # the recipient, so it must not count as a delivery failure of the address (contract clause 3).
        return Outcome.TRANSIENT
    if 200 <= code < 400:  # 3xx only appears mid-transaction (354); treat as not-a-failure
        return Outcome.SENT
    if 400 <= code < 500:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def result_from_reply(message_id: int, code: int, text: str) -> DeliveryResult:
    enhanced, rest = split_enhanced(code, text)
    return DeliveryResult(message_id, outcome_of(code), code, enhanced, rest)


def transient(message_id: int, text: str, code: int | None = None) -> DeliveryResult:
    """A failure that says nothing about the recipient: retry later (timeout, reset, relay setup)."""
    if code is not None:
        enhanced, rest = split_enhanced(code, text)
        return DeliveryResult(message_id, Outcome.TRANSIENT, code, enhanced, rest)
    return DeliveryResult(message_id, Outcome.TRANSIENT, None, None, text)


def describe_error(exc: BaseException) -> str:
    """A short, stable description of a network error for the ledger."""
    detail = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {detail}" if detail else name


# Both clients put addresses into command lines; one that could smuggle a command (CR, LF), break the
# Path syntax (<, >) or carry a space is refused before anything is written (RFC 5321 §4.1.2).
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")


def address_refusal(envelope: Envelope, smtputf8: bool) -> DeliveryResult | None:
    """The permanent result for an envelope whose addresses cannot be written to this server, else None."""
    frm, to = envelope.mail_from, envelope.rcpt_to
    if _UNSAFE_ADDRESS.search(frm) or _UNSAFE_ADDRESS.search(to):
        return DeliveryResult(envelope.message_id, Outcome.PERMANENT, None, "5.1.3", "unsafe address syntax")
    if frm.isascii() and to.isascii():
        return None
    try:
        frm.encode()
        to.encode()
    except UnicodeEncodeError:  # lone surrogates: not text at all
        return DeliveryResult(envelope.message_id, Outcome.PERMANENT, None, "5.1.3", "undecodable address")
    if not smtputf8:  # RFC 6531 §3.7.4.1: without SMTPUTF8 the address cannot be carried at all
        return DeliveryResult(
            envelope.message_id, Outcome.PERMANENT, None, "5.6.7", "non-ASCII address and no SMTPUTF8 at the relay"
        )
    return None


class SmtpSetupError(Exception):
    """The session could not be made ready (greeting, EHLO, STARTTLS, AUTH) — never the recipient's fault.

    With a relay, a refusal at this stage is about our configuration or the relay's health, so it is
    transient even when the code is 5xx: counting it as a permanent failure would disable addresses
    (contract Annex 1 clause 3: three failures disable an address) for a problem that is ours.
    """

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
