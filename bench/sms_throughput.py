"""SMS throughput of the Twilio transport (official SDK, async) against the local Twilio-shaped server.

    .venv/bin/python -m bench.sms_throughput [--messages 2000] [--senders 4] [--batch 200] [--in-flight 32]

Bounded in count (--messages, at most 20,000) and time (--deadline seconds). The per-sender rate limit is
set high (--rate) so that the figure measures the transport itself, not the shaping. Prints a few human
lines, then one JSON object (last line) with messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from sender.sms_transport import Outcome, SmsEnvelope, SmsSender
from sender.twilio_transport import TwilioSettings, TwilioSmsTransport
from tests.support.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioTestServer

MAX_MESSAGES = 20_000


async def run(
    messages: int, senders: int, batch: int, in_flight: int, rate: float, deadline: float
) -> dict[str, object]:
    pool = [SmsSender(from_=f"SENDER{i}") for i in range(senders)]
    body = "Boulangerie Martin: -20% sur les viennoiseries ce samedi !\nSTOP au 36180"
    with TwilioTestServer() as server:
        settings = TwilioSettings(
            account_sid=TEST_ACCOUNT_SID,
            auth_token=TEST_AUTH_TOKEN,
            status_callback_url="https://envoi.example.fr/twilio/status?m={message_id}",
            rate_per_sender=rate,
            max_in_flight=in_flight,
        )
        transport = TwilioSmsTransport(settings, http_client=server.http_client(max_connections=in_flight))
        outcomes: dict[str, int] = {}
        sent = 0
        started = time.perf_counter()
        try:
            while sent < messages and time.perf_counter() - started < deadline:
                size = min(batch, messages - sent)
                envelopes = [
                    SmsEnvelope(sent + i, f"+336{(sent + i) % 10**8:08d}", body, pool[(sent + i) % senders])
                    for i in range(size)
                ]
                for result in await transport.send(envelopes):
                    outcomes[str(result.outcome)] = outcomes.get(str(result.outcome), 0) + 1
                sent += size
        finally:
            await transport.close()
        elapsed = time.perf_counter() - started
        received = len(server.requests)
    return {
        "bench": "sms_throughput",
        "transport": "twilio-sdk-async",
        "messages": sent,
        "server_requests": received,
        "sent": outcomes.get(str(Outcome.SENT), 0),
        "failed": sent - outcomes.get(str(Outcome.SENT), 0),
        "senders": senders,
        "in_flight": in_flight,
        "batch": batch,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(sent / elapsed, 1) if elapsed else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100_000.0, help="messages/s per sender")
    parser.add_argument("--deadline", type=float, default=120.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    if not 0 < args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be in 1..{MAX_MESSAGES}")
    report = asyncio.run(run(args.messages, args.senders, args.batch, args.in_flight, args.rate, args.deadline))
    print(
        f"{report['messages']} SMS in {report['seconds']} s through the Twilio SDK to the local server "
        f"({report['in_flight']} in flight, {report['senders']} senders): {report['messages_per_s']} msg/s"
    )
    print(json.dumps(report), flush=True)
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
