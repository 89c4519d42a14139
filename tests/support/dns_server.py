"""A small authoritative DNS server for tests: 127.0.0.1, an ephemeral port, UDP and TCP, a live zone.

Built on dnspython's wire format (`dns.message`), served from one background thread (UDP + TCP accept) plus
one thread per TCP connection, so it answers both synchronous code and code running on an asyncio loop.

Usage::

    from tests.support.dns_server import DnsServer

    with DnsServer() as dns_srv:
        dns_srv.zone.add("example.com", "MX", "10 mx1.example.com.", "20 mx2.example.com.", ttl=60)
        dns_srv.zone.add("mx1.example.com", "A", "127.0.0.1")
        dns_srv.zone.add_null_mx("nomail.example")              # RFC 7505: MX 0 .
        dns_srv.zone.add_txt("s1._domainkey.example.com", "v=DKIM1; k=rsa; p=" + "A" * 400)  # split at 255
        dns_srv.zone.add("www.example.com", "CNAME", "example.com.")
        dns_srv.zone.fail("broken.example", "SERVFAIL")          # or drop("slow.example"): no answer at all
        resolver = dns_srv.resolver()                            # a dns.resolver.Resolver aimed at it
        resolver.resolve("example.com", "MX")
        assert dns_srv.query_count("example.com", "MX") == 1    # e.g. to prove a TTL cache works

The server is authoritative for every name: a name with no record (and no record below it) is NXDOMAIN; an
existing name without the asked type is NOERROR with an empty answer. DNSBL tests just add
`2.0.0.127.zen.example` as `A 127.0.0.2`. A pytest fixture is two lines in your test module::

    @pytest.fixture
    def dns_srv() -> Iterator[DnsServer]:
        with DnsServer() as server:
            yield server
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from dataclasses import dataclass
from types import TracebackType

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
from dns.rdtypes.ANY.TXT import TXT

_MAX_CNAME_CHAIN = 8
_UDP_DEFAULT_PAYLOAD = 512  # RFC 1035 §4.2.1, when the query carries no EDNS (RFC 6891) payload size


def _name(name: str | dns.name.Name) -> dns.name.Name:
    return name if isinstance(name, dns.name.Name) else dns.name.from_text(name)


def _rdtype(rdtype: str | int) -> dns.rdatatype.RdataType:
    return dns.rdatatype.RdataType.make(rdtype)


def txt_strings(value: str | bytes) -> list[bytes]:
    """A TXT value as DNS character-strings of at most 255 bytes each (RFC 1035 §3.3.14; RFC 7208 §3.3)."""
    data = value.encode() if isinstance(value, str) else value
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


def _snapshot(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    # Answers are serialised outside the zone lock: copy, so a test editing the zone cannot tear one.
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, list(rrset))


class Zone:
    """The records the server answers with; safe to change while the server runs (tests mutate it live)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rrsets: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        self._rcodes: dict[dns.name.Name, dns.rcode.Rcode | None] = {}  # None: drop the query

    def add(self, name: str, rdtype: str, *values: str, ttl: int = 300) -> None:
        """Add records given in zone-file text form (`"10 mx.example.com."`, `"192.0.2.1"`...).
        Relative names in values are taken as absolute: end them with a dot anyway for clarity."""
        rdt = _rdtype(rdtype)
        rdatas = [
            dns.rdata.from_text(dns.rdataclass.IN, rdt, v, origin=dns.name.root, relativize=False) for v in values
        ]
        self._add(_name(name), rdt, rdatas, ttl)

    def set(self, name: str, rdtype: str, *values: str, ttl: int = 300) -> None:
        """Replace the records of that type (e.g. to change an MX between two lookups)."""
        self.remove(name, rdtype)
        self.add(name, rdtype, *values, ttl=ttl)

    def add_txt(self, name: str, value: str | bytes, *, ttl: int = 300) -> None:
        """One TXT record holding `value`, split into 255-byte strings as a DNS provider publishes it."""
        rdata = TXT(dns.rdataclass.IN, dns.rdatatype.TXT, txt_strings(value))
        self._add(_name(name), dns.rdatatype.TXT, [rdata], ttl)

    def add_null_mx(self, name: str, *, ttl: int = 300) -> None:
        """RFC 7505 null MX: the domain accepts no mail (`MX 0 .`)."""
        self.add(name, "MX", "0 .", ttl=ttl)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove one type at `name`, or the whole name (it becomes NXDOMAIN) when `rdtype` is None."""
        key = _name(name)
        with self._lock:
            if rdtype is None:
                self._rrsets.pop(key, None)
                self._rcodes.pop(key, None)
            else:
                types = self._rrsets.get(key, {})
                types.pop(_rdtype(rdtype), None)
                if not types:
                    self._rrsets.pop(key, None)

    def fail(self, name: str, rcode: str = "SERVFAIL") -> None:
        """Answer every query for `name` with this rcode (SERVFAIL, REFUSED...): a temporary DNS failure."""
        with self._lock:
            self._rcodes[_name(name)] = dns.rcode.from_text(rcode)

    def drop(self, name: str) -> None:
        """Never answer queries for `name`: the client times out (use a short resolver lifetime)."""
        with self._lock:
            self._rcodes[_name(name)] = None

    def clear(self) -> None:
        with self._lock:
            self._rrsets.clear()
            self._rcodes.clear()

    def _add(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, rdatas: list[dns.rdata.Rdata], ttl: int
    ) -> None:
        with self._lock:
            types = self._rrsets.setdefault(name, {})
            rrset = types.get(rdtype)
            if rrset is None:
                rrset = types[rdtype] = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
            for rdata in rdatas:
                rrset.add(rdata, ttl)
            rrset.update_ttl(ttl)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response to `query`, or None to stay silent (a dropped name)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rdtype = question.name, question.rdtype
        with self._lock:
            if name in self._rcodes:
                rcode = self._rcodes[name]
                if rcode is None:
                    return None
                response.set_rcode(rcode)
                return response
            for _ in range(_MAX_CNAME_CHAIN):
                types = self._rrsets.get(name)
                if types is None:
                    if not self._has_descendant(name):
                        response.set_rcode(dns.rcode.NXDOMAIN)  # RFC 8020: empty non-terminals exist
                    return response
                cname = types.get(dns.rdatatype.CNAME)
                if cname is not None and rdtype != dns.rdatatype.CNAME:
                    response.answer.append(_snapshot(cname))  # RFC 1034 §4.3.2: follow the alias in-zone
                    name = next(iter(cname)).target
                    continue
                if rdtype == dns.rdatatype.ANY:
                    response.answer.extend(_snapshot(r) for r in types.values())
                elif rdtype in types:
                    response.answer.append(_snapshot(types[rdtype]))
                return response
        response.set_rcode(dns.rcode.SERVFAIL)  # CNAME loop
        return response

    def _has_descendant(self, name: dns.name.Name) -> bool:
        return any(other.is_subdomain(name) for other in self._rrsets)


@dataclass(frozen=True, slots=True)
class QueryRecord:
    name: str  # lower-case, no trailing dot
    rdtype: str  # "MX", "TXT"...
    transport: str  # "udp" | "tcp"


class DnsServer:
    """Serves `zone` on `host`, UDP and TCP on the same ephemeral port, between `start()` and `stop()`."""

    def __init__(self, zone: Zone | None = None, *, host: str = "127.0.0.1") -> None:
        self.zone = zone if zone is not None else Zone()
        self.host = host
        self.port = 0
        self.queries: list[QueryRecord] = []  # every query received, in order
        self.errors: list[BaseException] = []  # failures while answering (answered SERVFAIL): assert it empty
        self._log_lock = threading.Lock()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> DnsServer:
        if self._threads:
            raise RuntimeError("DnsServer already started")
        self._udp, self._tcp = self._bind_same_port()
        self.port = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        thread = threading.Thread(target=self._serve, name=f"dns-server:{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every socket and join every thread; safe to call twice."""
        if not self._threads or self._stopping.is_set():
            return
        self._stopping.set()
        assert self._wake_w is not None
        self._wake_w.send(b"x")
        self._threads[0].join(timeout=5)  # the accept loop first: after it, no new connection appears
        with self._log_lock:
            conns = list(self._conns)
        for conn in conns:
            _shutdown(conn)  # unblocks its thread's recv()
        for thread in self._threads[1:]:
            thread.join(timeout=5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clients --------------------------------------------------------------------------------------

    def resolver(self, *, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A synchronous resolver that asks only this server; no cache, so every lookup reaches it."""
        resolver = dns.resolver.Resolver(configure=False)
        _aim(resolver, self.host, self.port, timeout)
        return resolver

    def async_resolver(self, *, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
        """The same, for asyncio code (`await resolver.resolve(name, "MX")`)."""
        resolver = dns.asyncresolver.Resolver(configure=False)
        _aim(resolver, self.host, self.port, timeout)
        return resolver

    def query_count(self, name: str, rdtype: str | None = None) -> int:
        """How many queries arrived for `name` (and that type, if given), over UDP and TCP."""
        wanted = name.lower().rstrip(".")
        with self._log_lock:
            return sum(1 for q in self.queries if q.name == wanted and (rdtype is None or q.rdtype == rdtype))

    # -- serving --------------------------------------------------------------------------------------

    def _bind_same_port(self) -> tuple[socket.socket, socket.socket]:
        # A resolver retries a truncated UDP answer over TCP on the same port, so both must share it.
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            return udp, tcp
        raise OSError("no port free for both UDP and TCP")

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake_r is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "tcp")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.data == "udp":
                        try:
                            self._serve_udp(self._udp)
                        except Exception as exc:  # keep serving: one bad answer must not kill the server
                            self.errors.append(exc)
                    elif key.data == "tcp":
                        conn, _addr = self._tcp.accept()
                        with self._log_lock:
                            self._conns.add(conn)
                        thread = threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True)
                        self._threads.append(thread)
                        thread.start()

    def _serve_udp(self, sock: socket.socket) -> None:
        wire, addr = sock.recvfrom(65535)
        query = self._parse(wire, "udp")
        if query is None:
            return
        response = self._answer(query)
        if response is None:
            return
        limit = max(query.payload, _UDP_DEFAULT_PAYLOAD) if query.edns >= 0 else _UDP_DEFAULT_PAYLOAD
        # Too big for UDP: answer with TC set, and the client retries over TCP (RFC 7766).
        sock.sendto(response.to_wire(max_size=limit, prefer_truncation=True), addr)

    def _serve_tcp(self, conn: socket.socket) -> None:
        # RFC 1035 §4.2.2 / RFC 7766: two-byte length prefix, several queries per connection allowed.
        try:
            conn.settimeout(10)
            while not self._stopping.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                wire = _recv_exact(conn, struct.unpack("!H", header)[0])
                if wire is None:
                    return
                query = self._parse(wire, "tcp")
                if query is None:
                    return
                response = self._answer(query)
                if response is not None:
                    conn.sendall(response.to_wire(prepend_length=True))
        except OSError:
            return
        finally:
            with self._log_lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        try:
            response = self.zone.answer(query)
            if response is not None:
                response.to_wire()  # fail here, where SERVFAIL can still be sent
            return response
        except Exception as exc:
            self.errors.append(exc)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response

    def _parse(self, wire: bytes, transport: str) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: ignore, as a real server would drop garbage
        if query.question:
            q = query.question[0]
            record = QueryRecord(
                q.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(q.rdtype), transport
            )
            with self._log_lock:
                self.queries.append(record)
        return query


def _aim(resolver: dns.resolver.Resolver | dns.asyncresolver.Resolver, host: str, port: int, timeout: float) -> None:
    resolver.port = port  # before `nameservers`: dnspython binds the port when the list is set
    resolver.nameservers = [host]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = conn.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
