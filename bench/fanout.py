"""Import N contacts through the streaming import endpoint, then fan a campaign out into the Redis queue.

    .venv/bin/python bench/fanout.py --contacts 1000000

Reports contacts/s for the import (the API process, one NDJSON request streamed from a generator), recipients/s
for the fan-out (ledger rows + stream entries, batches of 1,000, run in this process against a real redis-server
and the database), and the peak RSS of the API process and of the fan-out process: both must stay flat in N.
The last line is one JSON object. Bounded by --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import free_port, peak_rss_mb, wait_ready  # noqa: E402
from crm.accounts import create_account  # noqa: E402
from crm.db import make_engine, migrate  # noqa: E402
from envoi.redis_server import RedisServer  # noqa: E402
from sender.fanout import run_fanout  # noqa: E402
from sender.queue import DispatchQueue  # noqa: E402


def ndjson(n: int, chunk: int = 2000) -> Iterator[bytes]:
    for start in range(0, n, chunk):
        yield "".join(json.dumps({
            "email": f"c{i}@example.com", "first_name": f"P{i}", "last_name": "Nom", "attributes": {"city": "Lyon"},
            "consents": [{"channel": "email", "source": "bench form v1"}],
        }) + "\n" for i in range(start, min(n, start + chunk))).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--max-seconds", type=float, default=1500)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="envoi-fanout-"))
    redis = RedisServer(workdir / "redis", appendonly=True).start()
    db_url = args.database_url or f"sqlite:///{workdir / 'envoi.db'}"
    port = free_port()
    env = dict(os.environ, ENVOI_VAR_DIR=str(workdir / "var"), ENVOI_DATABASE_URL=db_url, ENVOI_REDIS_URL=redis.url,
               ENVOI_API_PORT=str(port), ENVOI_METRICS_PORT="0",
               ENVOI_SIGNING_KEYS="bench-signing-key-0123456789abcdefghijklmnopqrstuv")
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        _, key = create_account(conn, "Bench SARL", actor="bench")
    api_proc = subprocess.Popen([sys.executable, "-m", "envoi", "api"], env=env, stdout=subprocess.DEVNULL,
                                stderr=(workdir / "api.log").open("wb"))
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                           timeout=args.max_seconds)
        wait_ready(api)
        api.put("/v1/account/sender-profile", json={
            "legal_name": "Bench SARL", "postal_address": "1 place Bellecour, 69002 Lyon", "phone": "+33 4 00 00 00 00",
            "from_email": "news@bench-envoi.fr"}).raise_for_status()
        lst = api.post("/v1/lists", json={"name": "all"}).json()
        t = time.perf_counter()
        report = api.post(f"/v1/contacts/import?list_id={lst['id']}", content=ndjson(args.contacts),
                          headers={"Content-Type": "application/x-ndjson"}).json()
        import_s = time.perf_counter() - t
        api_rss = peak_rss_mb(api_proc.pid)
        tpl = api.post("/v1/templates", json={"name": "t", "subject": "Hello {{ contact.first_name }}",
                                              "text": "Bonjour"}).json()
        camp = api.post("/v1/campaigns", json={"name": "c", "list_id": lst["id"], "template_id": tpl["id"]}).json()
        api.post(f"/v1/campaigns/{camp['id']}/send").raise_for_status()
    finally:
        api_proc.terminate()
        api_proc.wait(30)

    async def fan() -> tuple[float, int]:
        from redis.asyncio import Redis

        client = Redis.from_url(redis.url)
        queue = DispatchQueue(client, 8, "bench")
        await queue.ensure_groups()
        started = time.perf_counter()
        await asyncio.wait_for(run_fanout(engine, queue, camp["id"], 1000), args.max_seconds)
        seconds = time.perf_counter() - started
        depth = await queue.depth()
        await client.aclose()
        return seconds, depth["bulk"]

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fan_s, queued = asyncio.run(fan())
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine.dispose()
    redis.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({
        "contacts": args.contacts, "imported": report["imported"], "import_seconds": round(import_s, 1),
        "import_contacts_per_s": round(report["imported"] / import_s, 1),
        "fanout_seconds": round(fan_s, 1), "queued": queued, "fanout_recipients_per_s": round(queued / fan_s, 1),
        "api_peak_rss_mb": round(api_rss, 1), "fanout_process_peak_rss_mb": round(rss_after, 1),
        "fanout_rss_growth_mb": round(rss_after - rss_before, 1),
    }))


if __name__ == "__main__":
    main()
