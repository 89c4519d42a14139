"""Behaviour every SMTP EmailTransport must show against a real server.

Imported by test_smtp_pool.py and test_smtp_pipelined.py, each of which defines the `transport_cls`
and `server_pipelining` fixtures; the functions below are collected in both modules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from sender.smtp_replies import SmtpRelayConfig
from sender.transport import Envelope, Outcome
from tests.support.smtp_servers import Faults, SmtpTestServer, smtp_server

BODY = (
    b"From: a@example.com\r\nTo: r@example.org\r\nSubject: test\r\n\r\n"
    b"first line\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n"
)

MakeTransport = Callable[..., Any]
Serve = Callable[..., Any]


@pytest.fixture
def serve(server_pipelining: bool) -> Serve:
    """smtp_server(...), advertising PIPELINING or not as the including module decides."""

    def start(faults: Faults | None = None, **kw: Any) -> Any:
        faults = faults or Faults()
        return smtp_server(dataclasses.replace(faults, pipelining=server_pipelining), **kw)

    return start


def envelopes(n: int, rcpts: dict[int, str] | None = None, data: bytes = BODY) -> list[Envelope]:
    rcpts = rcpts or {}
    return [Envelope(i, f"bounce-{i}@example.com", rcpts.get(i, f"r{i}@example.org"), data) for i in range(n)]


def config(srv: SmtpTestServer, **kw: Any) -> SmtpRelayConfig:
    base: dict[str, Any] = {"host": srv.host, "port": srv.port, "starttls": "off", "timeout_s": 5.0}
    base.update(kw)
    return SmtpRelayConfig(**base)


@pytest.fixture
async def make_transport(transport_cls: type) -> Any:
    made: list[Any] = []

    def make(cfg: SmtpRelayConfig) -> Any:
        t = transport_cls(cfg)
        made.append(t)
        return t

    yield make
    for t in made:  # a test that failed half-way leaves no connection behind (close is idempotent)
        await t.close()


async def run(make: MakeTransport, cfg: SmtpRelayConfig, batch: list[Envelope]) -> list[Any]:
    t = make(cfg)
    try:
        return await t.deliver(batch)
    finally:
        await t.close()


async def test_every_message_is_delivered_byte_for_byte(make_transport: MakeTransport, serve: Serve) -> None:
    with serve() as srv:
        results = await run(make_transport, config(srv), envelopes(25))
        assert [r.message_id for r in results] == list(range(25))
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert results[0].code == 250 and results[0].enhanced == "2.0.0"
        srv.wait_for(lambda: len(srv.messages) == 25)
        # aiosmtpd removes the dot-stuffing: what arrives must be exactly what was handed over.
        assert {m.data for m in srv.messages} == {BODY}
        assert sorted(m.rcpt_tos[0] for m in srv.messages) == sorted(f"r{i}@example.org" for i in range(25))
        assert srv.messages[0].mail_from.startswith("bounce-")


async def test_rejected_recipient_is_permanent_and_the_others_are_sent(
    make_transport: MakeTransport, serve: Serve
) -> None:
    bad = {3: "nobody@example.org", 7: "nobody2@example.org"}
    with serve(Faults(reject_rcpts=frozenset(bad.values()))) as srv:
        results = await run(make_transport, config(srv, max_connections=1), envelopes(10, bad))
        for i, r in enumerate(results):
            if i in bad:
                assert (r.outcome, r.code, r.enhanced) == (Outcome.PERMANENT, 550, "5.1.1")
                assert "User unknown" in r.text
            else:
                assert r.outcome is Outcome.SENT, r
        assert len(srv.messages) == 8
        assert srv.connections == 1  # RSET after the failure kept the connection usable


async def test_451_is_transient_then_delivery_succeeds(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(Faults(transient_first=3)) as srv:
        t = make_transport(config(srv, max_connections=1))
        first = await t.deliver(envelopes(5))
        assert [r.outcome for r in first[:3]] == [Outcome.TRANSIENT] * 3
        assert (first[0].code, first[0].enhanced) == (451, "4.7.1")
        assert [r.outcome for r in first[3:]] == [Outcome.SENT] * 2
        again = await t.deliver(envelopes(3))
        assert {r.outcome for r in again} == {Outcome.SENT}
        await t.close()
        assert len(srv.messages) == 5


async def test_a_stalled_server_times_out_as_transient(make_transport: MakeTransport, serve: Serve) -> None:
    rcpts = {1: "slow@example.org"}
    with serve(Faults(stall_rcpts=frozenset(rcpts.values()))) as srv:
        started = time.monotonic()
        results = await run(make_transport, config(srv, timeout_s=1.0, max_connections=1), envelopes(4, rcpts))
        assert time.monotonic() - started < 4
        assert (results[1].outcome, results[1].code) == (Outcome.TRANSIENT, None)
        assert "timeout" in results[1].text.lower()
        # the stalled connection was discarded and replaced for the next envelopes
        assert [results[i].outcome for i in (0, 2, 3)] == [Outcome.SENT] * 3
        assert srv.connections == 2


async def test_a_connection_dropped_mid_data_is_transient_and_replaced(
    make_transport: MakeTransport, serve: Serve
) -> None:
    rcpts = {2: "drop@example.org"}
    with serve(Faults(drop_in_data_rcpts=frozenset(rcpts.values()))) as srv:
        results = await run(make_transport, config(srv, max_connections=1), envelopes(5, rcpts))
        assert (results[2].outcome, results[2].code) == (Outcome.TRANSIENT, None)
        assert [r.outcome for i, r in enumerate(results) if i != 2] == [Outcome.SENT] * 4
        assert len(srv.messages) == 4 and srv.connections == 2


async def test_421_closes_the_connection_and_is_transient(make_transport: MakeTransport, serve: Serve) -> None:
    rcpts = {1: "busy@example.org"}
    with serve(Faults(close_421_rcpts=frozenset(rcpts.values()))) as srv:
        results = await run(make_transport, config(srv, max_connections=1), envelopes(4, rcpts))
        assert (results[1].outcome, results[1].code, results[1].enhanced) == (Outcome.TRANSIENT, 421, "4.7.0")
        assert [results[i].outcome for i in (0, 2, 3)] == [Outcome.SENT] * 3
        assert srv.connections == 2


async def test_data_rejection_is_permanent(make_transport: MakeTransport, serve: Serve) -> None:
    rcpts = {0: "spamtrap@example.org"}
    with serve(Faults(reject_data_rcpts=frozenset(rcpts.values()))) as srv:
        results = await run(make_transport, config(srv, max_connections=1), envelopes(3, rcpts))
        assert (results[0].outcome, results[0].code, results[0].enhanced) == (Outcome.PERMANENT, 554, "5.6.0")
        assert [r.outcome for r in results[1:]] == [Outcome.SENT] * 2
        assert srv.connections == 1


async def test_connection_refused_is_transient_for_every_envelope(make_transport: MakeTransport, serve: Serve) -> None:
    with socket.socket() as s:  # a port that is certainly closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        cfg = SmtpRelayConfig(host="127.0.0.1", port=port, starttls="off", timeout_s=2, max_connections=3)
        started = time.monotonic()
        results = await run(make_transport, cfg, envelopes(50))
    assert time.monotonic() - started < 3
    assert len(results) == 50
    assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, None)}
    assert "refused" in results[0].text.lower() or "connect" in results[0].text.lower()


async def test_connections_are_bounded_and_used_concurrently(make_transport: MakeTransport, serve: Serve) -> None:
    with serve() as srv:
        t = make_transport(config(srv, max_connections=3))
        # two batches at once must still share the same three connections
        a, b = await asyncio.gather(t.deliver(envelopes(60)), t.deliver(envelopes(60)))
        await t.close()
        assert {r.outcome for r in a + b} == {Outcome.SENT}
        assert srv.max_concurrent == 3
        assert srv.connections == 3  # persistent: reused across batches


async def test_messages_per_connection_is_respected(make_transport: MakeTransport, serve: Serve) -> None:
    with serve() as srv:
        results = await run(
            make_transport, config(srv, max_connections=2, max_messages_per_connection=4), envelopes(21)
        )
        assert {r.outcome for r in results} == {Outcome.SENT}
        per_conn = srv.messages_per_connection()
        assert max(per_conn.values()) == 4
        assert sum(per_conn.values()) == 21 and len(per_conn) >= 6


async def test_close_quits_every_connection(make_transport: MakeTransport, serve: Serve) -> None:
    with serve() as srv:
        t = make_transport(config(srv, max_connections=4))
        await t.deliver(envelopes(20))
        assert srv._open > 0
        await t.close()
        srv.wait_for(lambda: srv._open == 0)


async def test_starttls_required_but_not_offered_sends_nothing(make_transport: MakeTransport, serve: Serve) -> None:
    with serve() as srv:
        results = await run(make_transport, config(srv, starttls="required"), envelopes(3))
        assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, None)}
        assert "STARTTLS" in results[0].text
        assert srv.messages == []


@pytest.mark.parametrize("mode", ["opportunistic", "required"])
async def test_starttls_offered_is_used_and_verified(make_transport: MakeTransport, serve: Serve, mode: str) -> None:
    with serve(tls=True) as srv:
        results = await run(make_transport, config(srv, starttls=mode, ca_file=srv.cert_file), envelopes(3))
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert all(m.tls for m in srv.messages) and len(srv.messages) == 3


async def test_starttls_with_an_untrusted_certificate_is_transient(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(tls=True) as srv:
        results = await run(make_transport, config(srv, starttls="required"), envelopes(2))
        assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, None)}
        assert "certificate" in results[0].text.lower()
        assert srv.messages == []


async def test_starttls_off_sends_in_clear(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(tls=True) as srv:
        await run(make_transport, config(srv, starttls="off"), envelopes(1))
        assert [m.tls for m in srv.messages] == [False]


async def test_implicit_tls(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(implicit_tls=True) as srv:
        cfg = config(srv, starttls="off", implicit_tls=True, ca_file=srv.cert_file)
        results = await run(make_transport, cfg, envelopes(2))
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert all(m.tls for m in srv.messages)


async def test_auth_with_the_right_credentials(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(tls=True, auth=("envoi", "s3cret")) as srv:
        cfg = config(srv, starttls="required", ca_file=srv.cert_file, username="envoi", password="s3cret")
        results = await run(make_transport, cfg, envelopes(3))
        assert {r.outcome for r in results} == {Outcome.SENT}


async def test_auth_with_wrong_credentials_is_transient(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(auth=("envoi", "s3cret")) as srv:
        results = await run(make_transport, config(srv, username="envoi", password="wrong"), envelopes(2))
        assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, 535)}
        assert srv.messages == []


async def test_missing_auth_is_not_a_recipient_failure(make_transport: MakeTransport, serve: Serve) -> None:
    with serve(auth=("envoi", "s3cret")) as srv:
        results = await run(make_transport, config(srv), envelopes(2))
        assert {(r.outcome, r.code) for r in results} == {(Outcome.TRANSIENT, 530)}


async def test_no_exception_escapes_a_mix_of_every_fault(make_transport: MakeTransport, serve: Serve) -> None:
    faults = Faults(
        transient_first=2,
        reject_rcpts=frozenset({"r3@example.org"}),
        close_421_rcpts=frozenset({"r5@example.org"}),
        stall_rcpts=frozenset({"r8@example.org"}),
        drop_in_data_rcpts=frozenset({"r11@example.org"}),
        reject_data_rcpts=frozenset({"r13@example.org"}),
    )
    with serve(faults) as srv:
        results = await run(make_transport, config(srv, timeout_s=1.0, max_connections=3), envelopes(40))
        assert [r.message_id for r in results] == list(range(40))
        by_id = {r.message_id: r for r in results}
        assert by_id[3].outcome is Outcome.PERMANENT and by_id[13].outcome is Outcome.PERMANENT
        assert all(by_id[i].outcome is Outcome.TRANSIENT for i in (5, 8, 11))
        assert sum(r.outcome is Outcome.TRANSIENT for r in results) == 5  # 2 greylisted + 421 + stall + drop
        assert len(srv.messages) == 33


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_mechanisms(make_transport: MakeTransport, serve: Serve, mechanism: str) -> None:
    with serve(auth=("envoi", "s3cret"), auth_mechanisms=(mechanism,)) as srv:
        results = await run(make_transport, config(srv, username="envoi", password="s3cret"), envelopes(2))
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert len(srv.messages) == 2


@pytest.mark.parametrize(
    "address",
    ["evil@example.org>\r\nRCPT TO:<spy@example.org", "a b@example.org", "x\udcff@example.org"],
    ids=["crlf-injection", "space", "surrogate"],
)
async def test_an_unwritable_address_is_refused_without_a_word(
    make_transport: MakeTransport, serve: Serve, address: str
) -> None:
    with serve() as srv:
        results = await run(make_transport, config(srv, max_connections=1), envelopes(3, {1: address}))
        assert [r.outcome for r in results] == [Outcome.SENT, Outcome.PERMANENT, Outcome.SENT]
        assert (results[1].code, results[1].enhanced) == (None, "5.1.3")
        assert [m.rcpt_tos for m in srv.messages] == [("r0@example.org",), ("r2@example.org",)]
        assert srv.transactions == 2


async def test_a_non_ascii_address_goes_with_smtputf8(make_transport: MakeTransport, serve: Serve) -> None:
    with serve() as srv:  # aiosmtpd offers SMTPUTF8 (RFC 6531)
        results = await run(make_transport, config(srv), envelopes(1, {0: "camille.hérault@exemple.fr"}))
        assert results[0].outcome is Outcome.SENT
        assert srv.messages[0].rcpt_tos == ("camille.hérault@exemple.fr",)


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # never greets; returns when the client gives up
    writer.close()


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await reader.read()
    writer.close()


@pytest.mark.parametrize(("handler", "words"), [(_silent, "timeout"), (_garbage, "")], ids=["silent", "garbage"])
async def test_a_server_that_does_not_speak_smtp_fails_transiently(
    make_transport: MakeTransport, handler: Any, words: str
) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        cfg = SmtpRelayConfig(host="127.0.0.1", port=port, starttls="off", timeout_s=0.5, max_connections=2)
        started = time.monotonic()
        results = await run(make_transport, cfg, envelopes(5))
        assert time.monotonic() - started < 3
        assert {r.outcome for r in results} == {Outcome.TRANSIENT}
        assert words in results[0].text.lower()
        server.close()
