"""The inbound SMTP listener (aiosmtpd): DSNs at the VERP return-paths, ARF reports at the feedback-loop
mailbox, and whatever other slices register (the unsubscribe slice's `unsubscribe+<token>@...` mailto).

Mail is routed by RCPT address through a pluggable router (`register(predicate, handler)`); an address no
handler claims is refused at RCPT with 550 5.1.1, so this is never an open relay. A handler error answers
451 4.3.0 so the reporting MTA retries later (RFC 5321 §4.2.5) rather than the report being lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP

from tracking.bounces.parser import parse_bounce
from tracking.feedback import FeedbackRecorder

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 10_000_000  # a DSN returns at most the original; bigger is abuse


@dataclass(frozen=True, slots=True)
class InboundMessage:
    mail_from: str
    rcpt: str  # the one recipient of ours this copy is for
    data: bytes
    peer: str


Predicate = Callable[[str], bool]
Handler = Callable[[InboundMessage], Awaitable[None]]


class InboundRouter:
    """First registered predicate that accepts the RCPT address wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, Predicate, Handler]] = []

    def register(self, predicate: Predicate, handler: Handler, name: str = "") -> None:
        self._routes.append((name or getattr(handler, "__name__", "handler"), predicate, handler))

    def route(self, rcpt: str) -> Handler | None:
        address = rcpt.strip().strip("<>")
        for _, predicate, handler in self._routes:
            try:
                if predicate(address):
                    return handler
            except Exception:  # a broken predicate must not refuse the others' mail
                log.exception("inbound predicate failed")
        return None

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self._routes]


def domain_is(domain: str) -> Predicate:
    """Any local part at `domain` (the VERP return-paths: b.<id>.<sig>@<bounce domain>)."""
    want = domain.lower().rstrip(".")
    return lambda address: address.rpartition("@")[2].lower().rstrip(".") == want


def mailbox_is(mailbox: str) -> Predicate:
    """The mailbox itself and its sub-addresses (`local+tag@domain`)."""
    local, _, domain = mailbox.lower().partition("@")

    def match(address: str) -> bool:
        a_local, _, a_domain = address.lower().partition("@")
        return a_domain == domain and (a_local == local or a_local.startswith(local + "+"))

    return match


def report_handler(recorder: FeedbackRecorder, source: str) -> Handler:
    """Parse a DSN / ARF report (in a thread: parsing is CPU work) and record it on its message."""

    async def handle(msg: InboundMessage) -> None:
        result = await asyncio.to_thread(parse_bounce, msg.data, msg.rcpt)
        outcome = await recorder.record(result, source)
        log.info("inbound %s report for %s: kind=%s reason=%s message=%s matched_by=%s", source, msg.rcpt,
                 result.kind.value, result.reason, outcome.message_id, outcome.matched_by)

    handle.__name__ = f"{source}_reports"
    return handle


class _Handler:
    def __init__(self, router: InboundRouter) -> None:
        self.router = router
        self.received = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.router.route(address) is None:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        peer = str(session.peer[0]) if session.peer else ""
        mail_from = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)  # "" = null reverse-path
        for rcpt in envelope.rcpt_tos:
            handler = self.router.route(rcpt)
            if handler is None:
                continue
            try:
                await handler(InboundMessage(mail_from, rcpt, data, peer))
            except Exception:
                log.exception("inbound handler failed for %s", rcpt)
                return "451 4.3.0 Temporary failure, try again later"
        self.received += 1
        return "250 2.0.0 OK"


class InboundServer:
    """Runs on the caller's event loop (`envoi inbound`, tests)."""

    def __init__(self, router: InboundRouter, host: str = "127.0.0.1", port: int = 2526,
                 hostname: str = "envoi.localhost") -> None:
        self.router = router
        self.host = host
        self.port = port
        self.hostname = hostname
        self.handler = _Handler(router)
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> InboundServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self.handler, hostname=self.hostname, data_size_limit=MAX_REPORT_BYTES,
                         enable_SMTPUTF8=True, decode_data=False, timeout=60),
            host=self.host, port=self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])  # port 0: the ephemeral port chosen
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
