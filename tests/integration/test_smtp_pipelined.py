"""PipelinedSmtpTransport: the shared contract (against aiosmtpd with and without PIPELINING), Postfix's
smtp-sink (a real pipelining server), and a strict server that proves the client pipelines — or not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sender.smtp_pipelined import PipelinedSmtpTransport
from sender.smtp_replies import SmtpRelayConfig
from sender.transport import Outcome
from tests.integration.smtp_transport_contract import *  # noqa: F403 — the shared behaviour, collected here
from tests.integration.smtp_transport_contract import BODY, envelopes
from tests.support.smtp_servers import smtp_sink


@pytest.fixture
def transport_cls() -> type:
    return PipelinedSmtpTransport


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
def server_pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def sink_config(sink: object, **kw: object) -> SmtpRelayConfig:
    base: dict[str, object] = {"host": sink.host, "port": sink.port, "starttls": "off", "timeout_s": 5.0}  # type: ignore[attr-defined]
    base.update(kw)
    return SmtpRelayConfig(**base)  # type: ignore[arg-type]


async def test_smtp_sink_receives_every_message_intact() -> None:
    with smtp_sink(dump=True) as sink:
        t = PipelinedSmtpTransport(sink_config(sink, max_connections=4, max_messages_per_connection=50))
        results = await t.deliver(envelopes(300))
        await t.close()
        assert [r.message_id for r in results] == list(range(300))
        assert {r.outcome for r in results} == {Outcome.SENT}
        dumps = sink.dumped()
        assert len(dumps) == 300
        # smtp-sink removes the dot-stuffing and stores LF line ends, after its own trace headers
        assert all(d.endswith(b"\n" + BODY.replace(b"\r\n", b"\n") + b"\n") for d in dumps)
        rcpts = {line for d in dumps for line in d.split(b"\n") if line.startswith(b"X-Rcpt-Args:")}
        assert rcpts == {f"X-Rcpt-Args: <r{i}@example.org>".encode() for i in range(300)}


async def test_smtp_sink_421_after_rcpt_is_transient_and_nothing_is_lost() -> None:
    with smtp_sink("-Q", "RCPT") as sink:
        t = PipelinedSmtpTransport(sink_config(sink, max_connections=2))
        results = await t.deliver(envelopes(10))
        await t.close()
        assert len(results) == 10
        assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, 421)}


async def test_smtp_sink_hard_reject_of_rcpt_is_permanent() -> None:
    with smtp_sink("-f", "RCPT") as sink:  # -f implies no PIPELINING: the lock-step path
        t = PipelinedSmtpTransport(sink_config(sink, max_connections=2))
        results = await t.deliver(envelopes(6))
        await t.close()
        assert {(r.outcome, r.code) for r in results} == {(Outcome.PERMANENT, 500)}  # smtp-sink says 500


async def test_smtp_sink_soft_reject_of_data_is_transient() -> None:
    with smtp_sink("-r", "DATA") as sink:
        t = PipelinedSmtpTransport(sink_config(sink, max_connections=1))
        results = await t.deliver(envelopes(4))
        await t.close()
        assert {(r.outcome, r.code // 100) for r in results} == {(Outcome.TRANSIENT, 4)}


async def test_smtp_sink_disconnect_in_the_middle_is_transient() -> None:
    with smtp_sink("-q", "DATA") as sink:
        t = PipelinedSmtpTransport(sink_config(sink, max_connections=2, timeout_s=2))
        results = await t.deliver(envelopes(5))
        await t.close()
        assert len(results) == 5
        assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, None)}


# -- a strict server that shows how the client writes --------------------------------------------------


@dataclass
class StrictServer:
    """Answers only once a whole MAIL+RCPT+DATA group has arrived (when it advertises PIPELINING), or flags
    any command written before the previous reply (when it does not)."""

    advertise: bool
    port: int = 0
    groups: int = 0  # reads that carried MAIL, RCPT and DATA together
    violations: int = 0  # commands sent ahead while PIPELINING was not advertised
    messages: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ext = b"250-strict\r\n250-PIPELINING\r\n250 8BITMIME\r\n" if self.advertise else b"250 strict\r\n"
        writer.write(b"220 strict ESMTP\r\n")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self._converse(reader, writer, ext)
        writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ext: bytes) -> None:
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
            while b"\r\n" in buf:
                if not self.advertise and buf.count(b"\r\n") > 1:
                    self.violations += 1
                if self.advertise and buf.startswith(b"MAIL"):
                    if buf.count(b"\r\n") < 3:
                        break  # wait for the whole group: a lock-step client would stall here
                    self.groups += 1
                line, buf = buf.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(ext)
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        more = await reader.read(65536)
                        if not more:
                            return
                        buf += more
                    body, buf = (b"\r\n" + buf).split(b"\r\n.\r\n", 1)
                    self.messages.append(body[2:])  # still dot-stuffed: only counted here
                    writer.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"250 2.1.0 ok\r\n")


@contextlib.asynccontextmanager
async def strict_server(advertise: bool) -> AsyncIterator[StrictServer]:
    state = StrictServer(advertise)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


async def test_commands_are_pipelined_when_the_server_advertises_it() -> None:
    async with strict_server(advertise=True) as srv:
        cfg = SmtpRelayConfig(host="127.0.0.1", port=srv.port, starttls="off", timeout_s=2, max_connections=1)
        t = PipelinedSmtpTransport(cfg)
        results = await t.deliver(envelopes(5))
        await t.close()
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert srv.groups == 5
        # the body that ends one transaction may open the next group (RFC 2920 §3.1): un-stuffed here
        assert len(srv.messages) == 5


async def test_commands_are_lock_step_when_the_server_does_not_pipeline() -> None:
    async with strict_server(advertise=False) as srv:
        cfg = SmtpRelayConfig(host="127.0.0.1", port=srv.port, starttls="off", timeout_s=2, max_connections=1)
        t = PipelinedSmtpTransport(cfg)
        results = await t.deliver(envelopes(5))
        await t.close()
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert srv.violations == 0 and len(srv.messages) == 5


async def test_a_non_ascii_address_is_refused_by_a_server_without_smtputf8() -> None:
    async with strict_server(advertise=True) as srv:
        cfg = SmtpRelayConfig(host="127.0.0.1", port=srv.port, starttls="off", timeout_s=2, max_connections=1)
        t = PipelinedSmtpTransport(cfg)
        results = await t.deliver(envelopes(3, {1: "usér@exemple.fr"}))
        await t.close()
        assert [r.outcome for r in results] == [Outcome.SENT, Outcome.PERMANENT, Outcome.SENT]
        assert (results[1].code, results[1].enhanced) == (None, "5.6.7")
        assert len(srv.messages) == 2
