"""The headline benchmark: the whole Envoi road against Postfix's smtp-sink, with two references in the same run.

    .venv/bin/python bench/throughput.py --messages 100000 --workers 2 --dkim off

Road: API process + W worker processes + redis-server (AOF everysec) + SQLite (or --database-url); a campaign is
created through the API (contacts imported through the streaming import endpoint, not timed), sent, fanned out,
queued in Redis, rendered per recipient (~5 KB HTML + text, merge fields, sender block, unsubscribe headers,
tracking filters when wired), optionally DKIM-signed, delivered to smtp-sink on loopback.
References on the same sink, same message size: (a) `smtp-source -s 10 -l 5000 -m N` (C); (b) a plain
aiosmtplib loop with persistent connections re-sending one pre-built message.
The last line is one JSON object. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.smtp_client import run_plain_aiosmtplib, sample_message  # noqa: E402
from crm.accounts import create_account  # noqa: E402
from crm.db import make_engine, migrate  # noqa: E402
from envoi.redis_server import RedisServer  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"

PARAGRAPH = ("<p>Bonjour {{ contact.first_name }}, découvrez notre sélection d'automne : des pièces choisies "
             "pour vous à {{ contact.attributes.city }}. Livraison offerte dès 50 €, retours gratuits sous 30 jours."
             " <a href=\"https://shop.example.com/collection/{{ loop_index }}?utm_source=envoi\">Voir</a></p>\n")


def template_html() -> str:
    body = "".join(PARAGRAPH.replace("{{ loop_index }}", str(i)) for i in range(14))
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Automne</title></head><body>"
            "<h1>Nouveautés pour {{ contact.first_name }} {{ contact.last_name }}</h1>" + body + "</body></html>")


TEXT = ("Bonjour {{ contact.first_name }},\n\nDécouvrez notre sélection d'automne à {{ contact.attributes.city }}.\n"
        "https://shop.example.com/collection?utm_source=envoi\n") * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """smtp-sink with running counters (-c) written to a file; `count()` is what it accepted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.out = workdir / f"sink-{self.port}.out"
        args = [SMTP_SINK, "-c"] + (["-u", "nobody"] if os.geteuid() == 0 else []) + [f"127.0.0.1:{self.port}", "512"]
        self.proc = subprocess.Popen(args, stdout=self.out.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("smtp-sink did not start")

    def count(self) -> int:
        data = self.out.read_bytes()[-400:].decode(errors="replace")
        found = re.findall(r"mesg=(\d+)", data)
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def wait_ready(api: httpx.Client, seconds: float = 30.0) -> None:
    """Bounded wait for the API's readiness endpoint."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if api.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("API did not start")
        time.sleep(0.1)


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def smtp_source_reference(workdir: Path, n: int) -> float:
    sink = Sink(workdir)
    try:
        start = time.perf_counter()
        subprocess.run([SMTP_SOURCE, "-s", "10", "-l", "5000", "-m", str(n), f"127.0.0.1:{sink.port}"],
                       check=True, timeout=600, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        return n / elapsed
    finally:
        sink.stop()


def aiosmtplib_reference(workdir: Path, n: int) -> float:
    sink = Sink(workdir)
    try:
        sent, seconds = asyncio.run(run_plain_aiosmtplib("127.0.0.1", sink.port, n, sample_message(5000), 300))
        return sent / seconds if seconds else 0.0
    finally:
        sink.stop()


def contacts_ndjson(n: int) -> bytes:
    return "".join(json.dumps({
        "email": f"c{i}@example.com", "first_name": f"Prénom{i}", "last_name": f"Nom{i}",
        "attributes": {"city": "Lyon"},
        "consents": [{"channel": "email", "source": "bench form v1"}],
    }) + "\n" for i in range(n)).encode()


def run_road(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sink = Sink(workdir)
    redis = RedisServer(workdir / "redis", appendonly=True).start()
    db_url = args.database_url or f"sqlite:///{workdir / 'envoi.db'}"
    api_port = free_port()
    env = dict(os.environ, ENVOI_VAR_DIR=str(workdir / "var"), ENVOI_DATABASE_URL=db_url, ENVOI_REDIS_URL=redis.url,
               ENVOI_SMTP_HOST="127.0.0.1", ENVOI_SMTP_PORT=str(sink.port), ENVOI_API_PORT=str(api_port),
               ENVOI_PUBLIC_URL=f"http://127.0.0.1:{api_port}", ENVOI_METRICS_PORT="0",
               ENVOI_SIGNING_KEYS="bench-signing-key-0123456789abcdefghijklmnopqrstuv",
               ENVOI_SMTP_PIPELINING="true" if args.pipelining else "false")
    if args.dkim:
        import base64

        env.setdefault("ENVOI_DKIM_PLATFORM_KEYS", "bench:" + base64.b64encode(b"b" * 32).decode())
    else:
        env["ENVOI_DKIM_SIGN"] = "false"  # relay mode: the smarthost signs
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        _, key = create_account(conn, "Bench SARL", actor="bench")
    engine.dispose()
    procs: list[subprocess.Popen[bytes]] = []
    log = (workdir / "road.log").open("wb")
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "envoi", "api"], env=env, stdout=log, stderr=log))
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"},
                           timeout=600)
        wait_ready(api)

        def ok(r: httpx.Response) -> Any:
            if r.status_code >= 400:
                raise RuntimeError(f"{r.request.url}: {r.status_code} {r.text}")
            return r.json()

        ok(api.put("/v1/account/sender-profile", json={
            "legal_name": "Bench SARL", "postal_address": "1 place Bellecour, 69002 Lyon", "phone": "+33 4 00 00 00 00",
            "from_email": "news@bench-envoi.fr", "from_name": "Bench"}))
        if args.dkim:
            ok(api.post("/v1/domains", json={"domain": "bench-envoi.fr"}))
        lst = ok(api.post("/v1/lists", json={"name": "all"}))
        t = time.perf_counter()
        report = ok(api.post(f"/v1/contacts/import?list_id={lst['id']}", content=contacts_ndjson(args.messages),
                             headers={"Content-Type": "application/x-ndjson"}))
        import_s = time.perf_counter() - t
        tpl = ok(api.post("/v1/templates", json={"name": "bench", "subject": "Automne, {{ contact.first_name }}",
                                                 "html": template_html(), "text": TEXT}))
        camp = ok(api.post("/v1/campaigns", json={"name": "bench", "list_id": lst["id"], "template_id": tpl["id"]}))
        for i in range(args.workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "envoi", "worker", "--index", str(i)], env=env,
                                          stdout=log, stderr=log))
        time.sleep(2.0)  # let the workers connect and create the consumer groups before the clock starts
        cpu_before = {p.pid: cpu_seconds(p.pid) for p in procs}
        start = time.perf_counter()
        ok(api.post(f"/v1/campaigns/{camp['id']}/send"))
        deadline = time.monotonic() + args.max_seconds
        while sink.count() < args.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        delivered = sink.count()
        rss = [peak_rss_mb(p.pid) for p in procs]
        cpu = [cpu_seconds(p.pid) - cpu_before[p.pid] for p in procs]
        stats = ok(api.get(f"/v1/campaigns/{camp['id']}/stats"))
        return {"delivered": delivered, "seconds": seconds, "rss": rss, "cpu": cpu, "import_s": import_s,
                "imported": report["imported"], "ledger_sent": stats["counters"]["sent"]}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        redis.stop()
        sink.stop()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dkim", choices=("on", "off"), default="off")
    parser.add_argument("--pipelining", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    args.dkim = args.dkim == "on"
    workdir = Path(tempfile.mkdtemp(prefix="envoi-bench-"))
    try:
        road = run_road(args, workdir)
        ref_n = max(args.messages, 20_000)
        ref_source = smtp_source_reference(workdir, ref_n)
        ref_plain = aiosmtplib_reference(workdir, min(ref_n, 30_000))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}", file=sys.stderr)
    per_second = road["delivered"] / road["seconds"] if road["seconds"] else 0.0
    print(f"import: {road['imported']} contacts in {road['import_s']:.1f}s "
          f"({road['imported'] / road['import_s']:,.0f}/s); ledger sent={road['ledger_sent']}", file=sys.stderr)
    print(json.dumps({
        "messages": args.messages, "delivered": road["delivered"], "workers": args.workers, "dkim": args.dkim,
        "seconds": round(road["seconds"], 2), "per_second": round(per_second, 1),
        "ref_smtp_source_per_second": round(ref_source, 1),
        "ratio_to_smtp_source": round(per_second / ref_source, 3) if ref_source else None,
        "ref_plain_aiosmtplib_per_second": round(ref_plain, 1),
        "peak_rss_mb": round(max(road["rss"][1:] or [0.0]), 1), "api_peak_rss_mb": round(road["rss"][0], 1),
        "worker_cpu_us_per_message": round(1e6 * sum(road["cpu"][1:]) / max(road["delivered"], 1), 1),
    }))


if __name__ == "__main__":
    main()
