"""SMTP client rate against Postfix's `smtp-sink` on loopback, same ~5 KB message for every contender:

  1. `smtp-source -s 10 -l 5000 -m N` (C): the SMTP ceiling of this machine (the reference of the
     ratios), and the same with -d (connections kept open) for information;
  2. a plain aiosmtplib loop, 10 persistent connections, re-sending one pre-built message;
  3. `SmtpPool` (aiosmtplib behind our port: results, pool, timeouts);
  4. `PipelinedSmtpTransport` (our client, RFC 2920 PIPELINING).

    .venv/bin/python bench/smtp_client.py [--messages 20000] [--batch 1000] [--uvloop]

Every contender sends at most --messages and stops after --max-seconds; the rate counts what the sink
accepted (250 after the body). The last line is one JSON object. Never the Postfix service: only its
test tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiosmtplib

from sender.smtp_pipelined import PipelinedSmtpTransport
from sender.smtp_pool import SmtpPool
from sender.smtp_replies import SmtpRelayConfig
from sender.transport import EmailTransport, Envelope, Outcome
from tests.support.smtp_servers import smtp_sink

SMTP_SOURCE = "/usr/sbin/smtp-source"
CONNECTIONS = 10


def sample_message(size: int = 5_000) -> bytes:
    head = (
        b"From: Boutique <news@shop.example>\r\nTo: camille@example.org\r\n"
        b"Subject: =?utf-8?q?Nouveaut=C3=A9s_de_la_semaine?=\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <1.2.3@shop.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"List-Unsubscribe: <https://u.example/u/abc>, <mailto:u@u.example>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n"
    )
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"
    body = bytearray(head)
    while len(body) < size - 40:
        body += line
    body += b".a line that starts with a dot\r\n"  # exercise the transparency path
    return bytes(body)


def run_smtp_source(host: str, port: int, n: int, max_seconds: float, *extra: str) -> tuple[int, float]:
    cmd = [SMTP_SOURCE, *extra, "-s", str(CONNECTIONS), "-l", "5000", "-m", str(n), f"{host}:{port}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=max_seconds + 30, stdout=subprocess.DEVNULL)
    return n, time.perf_counter() - started


async def run_plain_aiosmtplib(host: str, port: int, n: int, msg: bytes, max_seconds: float) -> tuple[int, float]:
    sent = 0
    remaining = n
    started = time.perf_counter()
    deadline = started + max_seconds

    async def conn() -> None:
        nonlocal sent, remaining
        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=10)
        await client.connect()
        try:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                errors, _ = await client.sendmail("bounce@shop.example", ["r@example.org"], msg)
                sent += not errors
        finally:
            await client.quit()

    await asyncio.gather(*(conn() for _ in range(CONNECTIONS)))
    return sent, time.perf_counter() - started


async def run_transport(
    make: Callable[[], EmailTransport], n: int, batch: int, msg: bytes, max_seconds: float
) -> tuple[int, float]:
    transport = make()
    envs = [Envelope(i, f"bounce-{i}@shop.example", f"r{i}@example.org", msg) for i in range(n)]
    sent = 0
    started = time.perf_counter()
    try:
        # Batches as the dispatcher hands them over, several in flight so every connection stays busy.
        in_flight = 4
        chunks = [envs[i : i + batch] for i in range(0, n, batch)]
        for k in range(0, len(chunks), in_flight):
            if time.perf_counter() - started > max_seconds:
                break
            done: list[list[object]] = await asyncio.gather(*(transport.deliver(c) for c in chunks[k : k + in_flight]))
            sent += sum(r.outcome is Outcome.SENT for rs in done for r in rs)  # type: ignore[attr-defined]
    finally:
        await transport.close()
    return sent, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="per contender")
    ap.add_argument("--uvloop", action="store_true", help="run the Python clients on uvloop")
    args = ap.parse_args()
    n, msg = args.messages, sample_message()
    runner: Callable[[Awaitable[tuple[int, float]]], tuple[int, float]] = asyncio.run
    if args.uvloop:
        import uvloop

        runner = uvloop.run

    rates: dict[str, float] = {}
    with smtp_sink() as sink:
        cfg = SmtpRelayConfig(
            host=sink.host, port=sink.port, starttls="off", timeout_s=10, max_connections=CONNECTIONS,
            max_messages_per_connection=1_000, helo_name="bench.local",
        )  # fmt: skip
        contenders: list[tuple[str, Callable[[], tuple[int, float]]]] = [
            ("smtp_source", lambda: run_smtp_source(sink.host, sink.port, n, args.max_seconds)),
            # informative: smtp-source keeping its connections open (-d), as our clients do
            ("smtp_source_persistent", lambda: run_smtp_source(sink.host, sink.port, n, args.max_seconds, "-d")),
            ("plain_aiosmtplib", lambda: runner(run_plain_aiosmtplib(sink.host, sink.port, n, msg, args.max_seconds))),
            ("smtp_pool", lambda: runner(run_transport(lambda: SmtpPool(cfg), n, args.batch, msg, args.max_seconds))),
            ("pipelined", lambda: runner(
                run_transport(lambda: PipelinedSmtpTransport(cfg), n, args.batch, msg, args.max_seconds))),
        ]  # fmt: skip
        for name, run in contenders:
            sent, seconds = run()
            rates[name] = sent / seconds
            print(f"{name:22s} {sent:8d} msgs {seconds:7.2f} s {rates[name]:9.0f} msg/s", flush=True)
    ref = rates["smtp_source"]
    for name in ("smtp_source_persistent", "plain_aiosmtplib", "smtp_pool", "pipelined"):
        print(f"{name:22s} ratio to smtp-source {rates[name] / ref:.2f}")
    summary: dict[str, object] = {
        "messages": n,
        "message_bytes": len(msg),
        "connections": CONNECTIONS,
        "uvloop": args.uvloop,
        "cores": os.cpu_count(),
        **{f"{k}_per_second": round(v) for k, v in rates.items()},
        **{
            f"ratio_{k}_to_smtp_source": round(rates[k] / ref, 3)
            for k in ("smtp_source_persistent", "plain_aiosmtplib", "smtp_pool", "pipelined")
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
