"""`PipelinedSmtpTransport`: the fast path to a relay — our own asyncio SMTP client with PIPELINING.

RFC 2920 lets a client send MAIL FROM, RCPT TO and DATA in one write and read the three replies in order;
the message body may open the next group (§3.1), so a chain of transactions costs one round trip each:

    write  MAIL RCPT DATA                      read  250 250 354
    write  <body> . MAIL RCPT DATA             read  250(body) 250 250 354   ...

A server that does not advertise PIPELINING gets the same commands in lock-step. Results, errors, timeouts,
TLS and pool semantics are those of `SmtpPool` (shared code: `smtp_replies`, `smtp_slots`); session
set-up (greeting, EHLO, STARTTLS, AUTH) is in `smtp_handshake`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Sequence

from sender.smtp_handshake import open_session
from sender.smtp_replies import SmtpRelayConfig, address_refusal, describe_error, result_from_reply, transient
from sender.smtp_slots import SessionSlots
from sender.smtp_wire import SmtpProtocolError, SmtpWire
from sender.transport import DeliveryResult, Envelope

__all__ = ["PipelinedSmtpTransport", "SmtpRelayConfig"]

_ERRORS = (OSError, EOFError, SmtpProtocolError)  # TimeoutError, ssl.SSLError, ConnectionError are OSErrors
_CHUNK = 32  # transactions handed to one connection at a time: enough to keep a chain busy
_RSET = b"RSET\r\n"
_Reply = tuple[int, str]


class _Closed(Exception):
    """The server said 421 (RFC 5321 §3.8): it is closing the channel; stop using it."""


class _PipelinedSession:
    __slots__ = ("_8bit", "_broken", "_limit", "_sent", "_timeout", "_utf8", "_wire", "pipelining")

    def __init__(self, wire: SmtpWire, keywords: frozenset[str], limit: int, timeout: float) -> None:
        self._wire = wire
        self._limit = limit
        self._timeout = timeout
        self._sent = 0
        self._broken = False
        self.pipelining = "PIPELINING" in keywords
        self._utf8 = "SMTPUTF8" in keywords
        self._8bit = "8BITMIME" in keywords

    @property
    def usable(self) -> bool:
        return not self._broken and self._sent < self._limit and self._wire.is_open

    @property
    def room(self) -> int:
        return self._limit - self._sent

    def _commands(self, env: Envelope) -> bytes | DeliveryResult:
        """MAIL FROM + RCPT TO + DATA for one envelope, or the result that refuses it without a word sent."""
        refusal = address_refusal(env, self._utf8)
        if refusal is not None:
            return refusal
        frm, to = env.mail_from, env.rcpt_to
        params = "" if not self._8bit or env.data.isascii() else " BODY=8BITMIME"  # RFC 6152
        if not (frm.isascii() and to.isascii()):
            params += " SMTPUTF8"  # RFC 6531 §3.4
        return f"MAIL FROM:<{frm}>{params}\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode()

    @staticmethod
    def _body(data: bytes) -> bytes:
        # RFC 5321 §4.5.2 transparency: double the dot that starts a line; end with CRLF "." CRLF.
        if data[:1] == b".":
            data = b"." + data
        data = data.replace(b"\r\n.", b"\r\n..")
        return data + b".\r\n" if data[-2:] == b"\r\n" else data + b"\r\n.\r\n"

    async def send(self, envelope: Envelope) -> DeliveryResult:
        return (await self.send_many([envelope]))[0]

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[DeliveryResult]:
        n = len(envelopes)
        results: list[DeliveryResult | None] = [None] * n
        wire, timeout, replies = self._wire, self._timeout, self._wire.replies
        carry = b""  # written ahead with the next group: a body (reply = its result) or an RSET
        owed = -1  # index whose body is in `carry` and whose result is not read yet; -1 for an RSET
        current = -1  # index whose MAIL/RCPT/DATA exchange is in progress
        try:
            for i, env in enumerate(envelopes):
                cmds = self._commands(env)
                if isinstance(cmds, DeliveryResult):
                    results[i] = cmds
                    continue
                current = i
                self._sent += 1
                if self.pipelining:
                    wire.write(carry + cmds if carry else cmds)
                    await wire.drain(timeout)
                    await wire.read(4 if carry else 3, timeout)
                    if carry:
                        self._settle(owed, replies.popleft(), envelopes, results)
                        owed = -1
                    mail, rcpt, data = replies.popleft(), replies.popleft(), replies.popleft()
                else:
                    if carry:
                        wire.write(carry)
                        self._settle(owed, await wire.reply(timeout), envelopes, results)
                        owed = -1
                    mail, rcpt, data = await self._lockstep(cmds)
                carry = await self._conclude(i, env, mail, rcpt, data, results)
                owed = i if carry is not _RSET else -1
                current = -1
            if carry:
                wire.write(carry)
                self._settle(owed, await wire.reply(timeout), envelopes, results)
                owed = -1
        except _Closed:
            pass  # results hold the 421; what follows goes back to the batch
        except _ERRORS as exc:
            self._break()
            self._salvage(exc, owed, current, envelopes, results)
        answered: list[DeliveryResult] = []
        for r in results:  # the answered prefix; the rest was never started (see SmtpSession.send_many)
            if r is None:
                break
            answered.append(r)
        return answered

    async def _lockstep(self, cmds: bytes) -> tuple[_Reply, _Reply, _Reply]:
        """MAIL, RCPT, DATA one at a time, stopping at the first failure (later replies are left as 503)."""
        wire, timeout = self._wire, self._timeout
        skipped: _Reply = (503, "5.5.1 not sent")
        out: list[_Reply] = []
        for line in cmds.split(b"\r\n")[:3]:
            wire.write(line + b"\r\n")
            reply = await wire.reply(timeout)
            out.append(reply)
            if reply[0] >= 400:
                break
        while len(out) < 3:
            out.append(skipped)
        return out[0], out[1], out[2]

    async def _conclude(
        self,
        i: int,
        env: Envelope,
        mail: _Reply,
        rcpt: _Reply,
        data: _Reply,
        results: list[DeliveryResult | None],
    ) -> bytes:
        """Return what to write ahead next: the dot-stuffed body, or an RSET after a failed transaction."""
        if data[0] == 354:
            if mail[0] < 400 and rcpt[0] < 400:
                return self._body(env.data)
            # RFC 2920 §3.1: DATA accepted though the transaction failed: end it with an empty message.
            self._wire.write(b".\r\n")
            await self._wire.reply(self._timeout)
        failed = mail if mail[0] >= 400 else rcpt if rcpt[0] >= 400 else data
        if failed[0] < 400:  # 2xx where 354 was due: out of sequence, the session cannot be trusted
            raise SmtpProtocolError(f"unexpected reply to DATA: {failed[0]} {failed[1]}")
        results[i] = result_from_reply(env.message_id, failed[0], failed[1])
        if failed[0] == 421:
            self._break()
            raise _Closed
        return _RSET  # RFC 5321 §4.1.1.5: clear the failed transaction, pipelined ahead of the next group

    def _settle(
        self, owed: int, reply: _Reply, envelopes: Sequence[Envelope], results: list[DeliveryResult | None]
    ) -> None:
        code, text = reply
        if owed < 0:  # the reply to RSET
            if code != 250:
                if code == 421:
                    self._break()
                    raise _Closed
                raise SmtpProtocolError(f"RSET refused: {code} {text}")
            return
        results[owed] = result_from_reply(envelopes[owed].message_id, code, text)
        if code == 421:
            self._break()
            raise _Closed

    def _salvage(
        self,
        exc: BaseException,
        owed: int,
        current: int,
        envelopes: Sequence[Envelope],
        results: list[DeliveryResult | None],
    ) -> None:
        """After a broken exchange, give a result to whoever is owed one; use replies already received."""
        replies, desc = self._wire.replies, describe_error(exc)
        if owed >= 0 and results[owed] is None:
            results[owed] = (
                result_from_reply(envelopes[owed].message_id, *replies.popleft())
                if replies
                else transient(envelopes[owed].message_id, desc)
            )
            if not replies:
                return  # `current` got no reply at all: it goes back to the batch, untouched
        if current >= 0 and results[current] is None:
            mid = envelopes[current].message_id
            refusal = next((r for r in replies if r[0] >= 400), None)
            results[current] = result_from_reply(mid, *refusal) if refusal else transient(mid, desc)
        replies.clear()

    def _break(self) -> None:
        self._broken = True
        self._wire.abort()

    async def close(self) -> None:
        if not self._broken and self._wire.is_open:
            with contextlib.suppress(*_ERRORS):
                self._wire.write(b"QUIT\r\n")
                await self._wire.read(1, self._timeout)
        self._wire.abort()
        await self._wire.wait_closed(self._timeout)

    def abort(self) -> None:
        self._wire.abort()


class PipelinedSmtpTransport:
    """EmailTransport with our own pipelining client: up to `max_connections` persistent connections."""

    def __init__(self, config: SmtpRelayConfig) -> None:
        self.config = config
        self._tls: ssl.SSLContext | None = config.ssl_context() if config.uses_tls else None
        self._helo: str | None = config.helo_name
        self._slots = SessionSlots(config.max_connections, self._open, chunk=_CHUNK)

    async def _open(self) -> _PipelinedSession:
        if self._helo is None:  # getfqdn may block on DNS: once, off the loop
            self._helo = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn)
        wire, keywords = await open_session(self.config, self._tls, self._helo)
        return _PipelinedSession(wire, keywords, self.config.max_messages_per_connection, self.config.timeout_s)

    async def deliver(self, batch: Sequence[Envelope]) -> list[DeliveryResult]:
        return await self._slots.deliver(batch)

    async def close(self) -> None:
        await self._slots.close()
