"""SMTP on the wire, bytes only: an asyncio.Protocol that frames replies and waits for them with a timeout.

It knows the reply grammar of RFC 5321 §4.2 (three digits, "-" for a continuation line, " " or nothing
for the last) and nothing of what the replies mean; `sender.smtp_pipelined` gives them meaning. Replies
are queued as they arrive, so a pipelined client (RFC 2920) writes a group of commands and then collects
exactly as many replies, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import Any

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; allow generous slack before calling it garbage.
_MAX_LINE = 8192


class SmtpConnectionLost(ConnectionError):
    """The server closed the connection (or it broke) before the awaited replies arrived."""


class SmtpProtocolError(ValueError):
    """A reply line that is not SMTP: the session cannot be trusted any more."""


class SmtpWire(asyncio.Protocol):
    __slots__ = (
        "_buf",
        "_closed",
        "_drain",
        "_gone",
        "_lines",
        "_loop",
        "_need",
        "_paused",
        "_waiter",
        "replies",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._lines: list[str] = []  # continuation lines of the reply being read
        self.replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._need = 0
        self._closed: BaseException | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] = loop.create_future()  # resolved by connection_lost

    # -- asyncio callbacks -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        start = 0
        try:
            while True:
                end = buf.find(b"\n", start)
                if end < 0:
                    break
                self._line(buf[start:end])
                start = end + 1
        except SmtpProtocolError as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.abort()
            return
        self._buf = buf[start:]
        if len(self._buf) > _MAX_LINE:
            self._fail(SmtpProtocolError("reply line too long"))
            if self.transport is not None:
                self.transport.abort()
            return
        if self._waiter is not None and len(self.replies) >= self._need and not self._waiter.done():
            self._waiter.set_result(None)

    def _line(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) < 3 or not raw[:3].isdigit() or (len(raw) > 3 and raw[3] not in b" -"):
            raise SmtpProtocolError(f"not an SMTP reply: {raw[:80]!r}")
        text = raw[4:].decode("utf-8", "replace")
        if len(raw) > 3 and raw[3] == 0x2D:  # "-": more lines follow (RFC 5321 §4.2.1)
            self._lines.append(text)
            return
        if self._lines:
            self._lines.append(text)
            text = "\n".join(self._lines)
            self._lines = []
        self.replies.append((int(raw[:3]), text))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._gone.done():
            self._gone.set_result(None)
        self._fail(SmtpConnectionLost(f"connection lost: {exc}" if exc else "connection closed by server"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(SmtpConnectionLost("connection lost while writing"))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._closed is None:
            self._closed = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    # -- what the client calls -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._closed is None and self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._closed is not None or self.transport is None:
            raise SmtpConnectionLost("write on a closed connection")
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until the kernel has taken our writes (flow control), bounded by the timeout."""
        if not self._paused:
            return
        self._drain = self._loop.create_future()
        await self._bounded(self._drain, timeout, "timeout writing to server")

    async def read(self, n: int, timeout: float) -> None:
        """Wait until at least n replies are queued in `replies`; raise if the connection ends first."""
        if len(self.replies) >= n:
            return
        if self._closed is not None:
            raise self._closed
        self._need = n
        self._waiter = self._loop.create_future()
        await self._bounded(self._waiter, timeout, "timeout waiting for server reply")

    async def _bounded(self, fut: asyncio.Future[Any], timeout: float, what: str) -> None:
        def expire() -> None:
            if not fut.done():
                fut.set_exception(TimeoutError(what))

        timer = self._loop.call_later(timeout, expire)
        try:
            await fut
        finally:
            timer.cancel()

    async def reply(self, timeout: float) -> tuple[int, str]:
        await self.read(1, timeout)
        return self.replies.popleft()

    async def start_tls(self, ctx: ssl.SSLContext, server_hostname: str, timeout: float) -> None:
        """Upgrade this connection in place (RFC 3207), after the server's 220 to STARTTLS."""
        if self.transport is None or self._closed is not None:
            raise SmtpConnectionLost("connection lost before STARTTLS")
        tls_transport = await self._loop.start_tls(
            self.transport, self, ctx, server_hostname=server_hostname, ssl_handshake_timeout=timeout
        )
        if tls_transport is None:
            raise SmtpConnectionLost("connection lost during the TLS handshake")
        self.transport = tls_transport

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self, timeout: float) -> None:
        """After abort(): wait (bounded) until the socket is released, so that nothing outlives close()."""
        if self.transport is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._gone), timeout)
