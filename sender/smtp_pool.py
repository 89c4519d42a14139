"""`SmtpPool`: the email transport to a configured relay through aiosmtplib, over persistent connections.

aiosmtplib serves every relay (STARTTLS, AUTH, servers without PIPELINING) in lock-step; the fast path for
relays that pipeline is `sender.smtp_pipelined`. Every aiosmtplib and OS error is translated here into a
`DeliveryResult` — nothing escapes `deliver` but cancellation.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence

import aiosmtplib

from sender.smtp_replies import (
    SmtpRelayConfig,
    SmtpSetupError,
    StartTls,
    address_refusal,
    describe_error,
    result_from_reply,
    transient,
)
from sender.smtp_slots import SessionSlots
from sender.transport import DeliveryResult, Envelope

__all__ = ["SmtpPool", "SmtpRelayConfig"]

# What can come out of aiosmtplib or the socket under it. ssl.SSLError and TimeoutError are OSErrors;
# EOFError and ValueError cover a TLS layer torn down under a read and a malformed reply line.
_NETWORK_ERRORS = (aiosmtplib.SMTPException, OSError, EOFError, ValueError)


class _AioSession:
    """One aiosmtplib connection, used for one transaction at a time."""

    __slots__ = ("_8bit", "_broken", "_client", "_limit", "_sent", "_smtputf8")

    def __init__(self, client: aiosmtplib.SMTP, limit: int) -> None:
        self._client = client
        self._limit = limit
        self._sent = 0
        self._broken = False
        self._smtputf8 = client.supports_extension("smtputf8")
        self._8bit = client.supports_extension("8bitmime")

    @property
    def usable(self) -> bool:
        return not self._broken and self._sent < self._limit and self._client.is_connected

    @property
    def room(self) -> int:
        return self._limit - self._sent

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[DeliveryResult]:
        return [await self.send(e) for e in envelopes]

    async def send(self, envelope: Envelope) -> DeliveryResult:
        client = self._client
        self._sent += 1
        mid = envelope.message_id
        refusal = address_refusal(envelope, self._smtputf8)
        if refusal is not None:
            return refusal
        options: list[str] = []
        encoding = "ascii"
        if not (envelope.mail_from.isascii() and envelope.rcpt_to.isascii()):
            options, encoding = ["SMTPUTF8"], "utf-8"
        if self._8bit and not envelope.data.isascii():
            options.append("BODY=8BITMIME")  # RFC 6152
        try:
            await client.mail(envelope.mail_from, options=options, encoding=encoding)
            await client.rcpt(envelope.rcpt_to, encoding=encoding)
            reply = await client.data(envelope.data)
            return result_from_reply(mid, reply.code, reply.message)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 400:  # a reply out of sequence: the session can no longer be trusted
                self._break()
                return transient(mid, f"unexpected reply {exc.code} {exc.message}")
            if exc.code == 421 or not client.is_connected:
                # RFC 5321 §3.8: 421 means the server is closing the channel.
                self._break()
            else:
                await self._rset()
            return result_from_reply(mid, exc.code, exc.message)
        except _NETWORK_ERRORS as exc:
            self._break()
            return transient(mid, describe_error(exc))

    async def _rset(self) -> None:
        # RFC 5321 §4.1.1.5: clear the failed transaction before reusing the connection.
        try:
            await self._client.rset()
        except _NETWORK_ERRORS:
            self._break()

    def _break(self) -> None:
        self._broken = True
        self._client.close()

    async def close(self) -> None:
        if self._client.is_connected and not self._broken:
            with contextlib.suppress(*_NETWORK_ERRORS):
                await self._client.quit()
        self._client.close()

    def abort(self) -> None:
        self._client.close()


async def open_aiosmtplib_session(config: SmtpRelayConfig, tls: ssl.SSLContext | None) -> aiosmtplib.SMTP:
    """Connect, EHLO, STARTTLS per policy, AUTH; any failure → SmtpSetupError (never the recipient's fault)."""
    client = aiosmtplib.SMTP(
        hostname=config.host,
        port=config.port,
        timeout=config.timeout_s,
        use_tls=config.implicit_tls,
        start_tls=False,  # decided below, so that "required" and "opportunistic" are ours to enforce
        tls_context=tls,
        local_hostname=config.helo_name,
    )
    try:
        await client.connect()
        await _hello(client)
        if config.starttls is not StartTls.OFF:
            if client.supports_extension("starttls"):
                await client.starttls(tls_context=tls)
                await _hello(client)  # RFC 3207 §4.2: forget what was learnt before TLS
            elif config.starttls is StartTls.REQUIRED:
                raise SmtpSetupError(f"STARTTLS required but not offered by {config.host}:{config.port}")
        if config.username is not None and config.password is not None:
            await client.login(config.username, config.password)
    except SmtpSetupError:
        client.close()
        raise
    except aiosmtplib.SMTPResponseException as exc:
        client.close()
        raise SmtpSetupError(exc.message, exc.code) from exc
    except _NETWORK_ERRORS as exc:
        client.close()
        raise SmtpSetupError(describe_error(exc)) from exc
    except BaseException:
        client.close()
        raise
    return client


async def _hello(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()  # RFC 5321 §3.2: fall back to HELO for a non-ESMTP server


class SmtpPool:
    """EmailTransport over aiosmtplib: up to `max_connections` persistent connections to one relay."""

    def __init__(self, config: SmtpRelayConfig) -> None:
        self.config = config
        self._tls = config.ssl_context() if config.uses_tls else None
        self._slots = SessionSlots(config.max_connections, self._open)

    async def _open(self) -> _AioSession:
        client = await open_aiosmtplib_session(self.config, self._tls)
        return _AioSession(client, self.config.max_messages_per_connection)

    async def deliver(self, batch: Sequence[Envelope]) -> list[DeliveryResult]:
        return await self._slots.deliver(batch)

    async def close(self) -> None:
        await self._slots.close()
