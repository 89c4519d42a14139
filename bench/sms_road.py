"""SMS throughput through the whole road (issue 6): API → fan-out → Redis Streams → dispatcher (SMS road: gate,
render, compose, quiet hours) → official Twilio SDK → the local Twilio-shaped server → ledger.

    .venv/bin/python -m bench.sms_road [--messages 2000] [--rate 1000] [--deadline 120]

One API (uvicorn, in a thread) and one in-thread worker, redis-server (no AOF) and SQLite in a temporary folder.
The contacts are imported before the clock starts; the figure is recipients / (campaign send → campaign
completed). The per-sender rate is set high by default so that the figure measures the road, not the shaping
(`--rate 10` shows the shaping: ≈ 10 messages/s for one sender). Bounded in count (at most 20,000) and time
(--deadline). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crm.accounts import create_account  # noqa: E402
from crm.db import make_engine, migrate  # noqa: E402
from envoi.redis_server import RedisServer  # noqa: E402
from tests.integration.conftest import SENDER  # noqa: E402
from tests.integration.sms_support import SMS_SETTINGS, Clock, SmsThreadWorker, ok  # noqa: E402
from tests.support.stack import ApiServer, make_settings  # noqa: E402
from tests.support.twilio_server import TwilioTestServer  # noqa: E402

MAX_MESSAGES = 20_000


def run(messages: int, rate: float, deadline: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="envoi-sms-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        redis = RedisServer(tmp / "redis", appendonly=False).start()
        try:
            settings = make_settings(tmp, f"sqlite:///{tmp / 'envoi.db'}", redis.url, ENVOI_BATCH_SIZE="200")
            engine = make_engine(settings.effective_database_url)
            migrate(engine)
            with engine.begin() as conn:
                _, key = create_account(conn, "Bench", actor="bench")
            with ApiServer(settings, engine) as api, TwilioTestServer() as twilio, \
                    httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
                ok(c.put("/v1/account/sender-profile", json=SENDER))
                ok(c.put("/v1/account/sms-settings", json=SMS_SETTINGS))
                lst = ok(c.post("/v1/lists", json={"name": "bench"}))
                lines = [json.dumps({"mobile": f"+3361{i:07d}", "crm_id": f"b{i}", "first_name": f"Ana{i}",
                                     "consents": [{"channel": "sms", "source": "bench"}]}) for i in range(messages)]
                ok(c.post(f"/v1/contacts/import?list_id={lst['id']}", content="\n".join(lines).encode(),
                          headers={"Content-Type": "application/x-ndjson"}))
                tpl = ok(c.post("/v1/templates", json={"name": "t", "subject": "s",
                                                       "text": "Bonjour {{ contact.first_name }}, -20% ce samedi !"}))
                camp = ok(c.post("/v1/campaigns", json={"name": "c", "list_id": lst["id"], "template_id": tpl["id"],
                                                        "channel": "sms"}))
                clock = Clock(datetime(2026, 3, 17, 10, 0, tzinfo=ZoneInfo("Europe/Paris")))  # a Tuesday, open
                with SmsThreadWorker(settings, engine, twilio, clock, rate_per_sender=rate):
                    started = time.perf_counter()
                    ok(c.post(f"/v1/campaigns/{camp['id']}/send"))
                    end = started + deadline
                    view = ok(c.get(f"/v1/campaigns/{camp['id']}"))
                    while view["status"] != "completed" and time.perf_counter() < end:
                        time.sleep(0.05)
                        view = ok(c.get(f"/v1/campaigns/{camp['id']}"))
                    elapsed = time.perf_counter() - started
                counters = view["counters"]
                accepted = sum(1 for r in twilio.requests if r.status == 201)
            engine.dispose()
        finally:
            redis.stop()
    return {"bench": "sms_road", "messages": messages, "sent": counters["sent"], "twilio_accepted": accepted,
            "completed": view["status"] == "completed", "seconds": round(elapsed, 3),
            "messages_per_s": round(counters["sent"] / elapsed, 1), "rate_per_sender": rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s per sender (shaping)")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds, the bound of the timed part")
    args = parser.parse_args()
    if not 1 <= args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be within 1..{MAX_MESSAGES}")
    result = run(args.messages, args.rate, args.deadline)
    print(f"{result['sent']} SMS sent through the road in {result['seconds']} s: {result['messages_per_s']} msg/s")
    print(json.dumps(result))
    return 0 if result["completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
