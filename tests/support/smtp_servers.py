"""Real SMTP servers for tests: aiosmtpd on 127.0.0.1, an ephemeral port, its own thread and event loop.

    with smtp_server() as srv:                       # capture everything
        ... SmtpRelayConfig(host=srv.host, port=srv.port, starttls="off") ...
        srv.wait_for(lambda: len(srv.messages) == 3)

    with smtp_server(Faults(reject_rcpts={"nobody@example.org"}), tls=True, auth=("u", "p")) as srv: ...

Fault injection is keyed by recipient (deterministic under concurrency) except `transient_first`, a global
count. `srv.max_concurrent` is the highest number of simultaneous connections seen; every captured
message records the serial number of its connection, so messages per connection can be checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Faults:
    transient_first: int = 0  # answer 451 4.7.1 at RCPT for the first N transactions (greylisting)
    reject_rcpts: frozenset[str] = frozenset()  # 550 5.1.1 at RCPT
    close_421_rcpts: frozenset[str] = frozenset()  # 421 4.7.0 at RCPT, then close the connection
    stall_rcpts: frozenset[str] = frozenset()  # never answer RCPT (until the server stops)
    drop_in_data_rcpts: frozenset[str] = frozenset()  # 354, then close the connection mid-body
    reject_data_rcpts: frozenset[str] = frozenset()  # 554 5.6.0 after the body
    pipelining: bool = False  # advertise PIPELINING (RFC 2920); aiosmtpd reads commands in order anyway


@dataclass(frozen=True)
class Captured:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as received, dot-stuffing removed
    connection: int  # serial number of the connection it came on
    tls: bool


@dataclass
class SmtpTestServer:
    host: str
    port: int
    cert_file: str | None = None  # the self-signed certificate, to use as the client's ca_file
    messages: list[Captured] = field(default_factory=list)
    transactions: int = 0  # RCPT commands seen
    connections: int = 0
    max_concurrent: int = 0
    _open: int = 0
    _live: set[Any] = field(default_factory=set)  # the server protocols of open connections
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Block until predicate() holds (it is re-checked on every server event), or fail."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"condition not met within {timeout}s")

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def messages_per_connection(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for m in self.messages:
            counts[m.connection] = counts.get(m.connection, 0) + 1
        return counts


class _Handler:
    def __init__(self, srv: SmtpTestServer, faults: Faults) -> None:
        self.srv = srv
        self.faults = faults
        self.release: asyncio.Event | None = None

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.faults.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        f = self.faults
        self.srv.transactions += 1
        if self.srv.transactions <= f.transient_first:
            return "451 4.7.1 Greylisted, try again later"
        if address in f.reject_rcpts:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address in f.close_421_rcpts:
            await server.push("421 4.7.0 Too many errors, closing connection")
            server.transport.close()
            return "421 4.7.0 closing"  # not sent: the transport is closed (see _Smtp.push)
        if address in f.stall_rcpts:
            if self.release is None:
                self.release = asyncio.Event()
            await asyncio.wait_for(self.release.wait(), 60)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.faults.reject_data_rcpts.intersection(envelope.rcpt_tos):
            return "554 5.6.0 Message content rejected"
        self.srv.messages.append(
            Captured(
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
                envelope.original_content,
                server.conn_serial,
                server.uses_tls,
            )
        )
        self.srv._notify()
        return "250 2.0.0 Ok: queued"


class _Smtp(SMTP):
    """aiosmtpd's server with connection counting, a mid-DATA drop, and pushes that tolerate a close."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._h = handler
        self.conn_serial = 0

    def connection_made(self, transport: Any) -> None:
        srv = self._h.srv
        srv.connections += 1
        self.conn_serial = srv.connections
        srv._open += 1
        srv._live.add(self)
        srv.max_concurrent = max(srv.max_concurrent, srv._open)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._h.srv._open -= 1
        self._h.srv._live.discard(self)
        super().connection_lost(error)
        self._h.srv._notify()

    @property
    def uses_tls(self) -> bool:
        # STARTTLS swaps in a TLS protocol; implicit TLS shows on the transport itself.
        return self._tls_protocol is not None or self.transport.get_extra_info("sslcontext") is not None

    async def push(self, status: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        await super().push(status)

    async def smtp_DATA(self, arg: str) -> None:
        env = self.envelope
        if env is not None and self._h.faults.drop_in_data_rcpts.intersection(env.rcpt_tos):
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.read(100)  # some of the body has arrived: now drop
            self.transport.close()
            return
        await super().smtp_DATA(arg)


@functools.cache
def self_signed_cert() -> tuple[str, str]:
    """(cert_file, key_file) for 127.0.0.1 and localhost, made once per test process."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = Path(tempfile.mkdtemp(prefix="envoi-smtp-tls-"))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(d / "cert.pem"), str(d / "key.pem")


def _server_tls() -> tuple[ssl.SSLContext, str]:
    cert, key = self_signed_cert()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx, cert


@contextmanager
def smtp_server(
    faults: Faults | None = None,
    *,
    tls: bool = False,  # offer STARTTLS
    require_tls: bool = False,  # refuse mail before STARTTLS (530)
    implicit_tls: bool = False,  # TLS from the first byte (RFC 8314)
    auth: tuple[str, str] | None = None,  # require AUTH with these credentials
    auth_mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN"),  # what the server offers
) -> Iterator[SmtpTestServer]:
    faults = faults or Faults()
    ctx, cert = _server_tls() if (tls or require_tls or implicit_tls) else (None, None)
    srv = SmtpTestServer("127.0.0.1", 0, cert_file=cert)
    handler = _Handler(srv, faults)
    kwargs: dict[str, Any] = {"hostname": "test.invalid", "enable_SMTPUTF8": True}
    if tls or require_tls:
        kwargs.update(tls_context=ctx, require_starttls=require_tls)
    if auth is not None:

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == auth
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=False)
        kwargs["auth_exclude_mechanism"] = [m for m in ("LOGIN", "PLAIN") if m not in auth_mechanisms]

    loop = asyncio.new_event_loop()
    started = threading.Event()
    server_box: list[asyncio.AbstractServer] = []

    def make_protocol() -> _Smtp:
        with warnings.catch_warnings():
            # aiosmtpd warns when AUTH is allowed in clear: a test server may want exactly that.
            warnings.simplefilter("ignore", UserWarning)
            return _Smtp(handler, **kwargs)

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            server = await loop.create_server(make_protocol, srv.host, 0, ssl=ctx if implicit_tls else None)
            server_box.append(server)
            srv.port = server.sockets[0].getsockname()[1]
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="smtp-test-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("SMTP test server did not start")
    try:
        yield srv
    finally:

        async def stop() -> None:
            if handler.release is not None:
                handler.release.set()
            server_box[0].close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
            for proto in list(srv._live):
                if proto.transport is not None:
                    proto.transport.close()
            for _ in range(200):  # bounded: let connection_lost run for every closed transport
                if not srv._live:
                    break
                await asyncio.sleep(0.005)
            await server_box[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


SMTP_SINK = "/usr/sbin/smtp-sink"


@dataclass
class SinkServer:
    host: str
    port: int
    dump_dir: Path | None

    def dumped(self) -> list[bytes]:
        """Every transaction smtp-sink dumped (-d): its envelope lines followed by the message."""
        if self.dump_dir is None:
            return []
        return [p.read_bytes() for p in sorted(self.dump_dir.iterdir()) if p.is_file()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_sink(*options: str, dump: bool = False, backlog: int = 256) -> Iterator[SinkServer]:
    """Postfix's smtp-sink (C, advertises PIPELINING) on 127.0.0.1; options as in smtp-sink(1), e.g. "-Q", "RCPT".

    Never the Postfix service: only the test tool. It needs -u when run as root.
    """
    dump_dir = Path(tempfile.mkdtemp(prefix="envoi-sink-")) if dump else None
    args = [SMTP_SINK, *options]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    if dump_dir is not None:
        dump_dir.chmod(0o777)
        args += ["-d", f"{dump_dir}/%H%M%S."]
    port = _free_port()
    proc = subprocess.Popen(
        [*args, f"127.0.0.1:{port}", str(backlog)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded wait for the listening socket
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    raise RuntimeError(f"smtp-sink did not start: {err}") from None
                time.sleep(0.02)
        yield SinkServer("127.0.0.1", port, dump_dir)
    finally:
        if proc.stderr is not None:
            proc.stderr.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if dump_dir is not None:
            shutil.rmtree(dump_dir, ignore_errors=True)
