"""Open-pixel throughput: Envoi's `/o/<token>` (token check, machine detection, buffering) against a bare
Starlette app returning the same 43-byte GIF, both under uvicorn (1 worker, same loop and HTTP parser), driven
by `wrk` on loopback with the same script (requests rotate over --messages distinct tokens).

    .venv/bin/python bench/tracking.py [--seconds 10] [--connections 16] [--messages 1000]

"Recorded" counts the open events in the SQL ledger after the API stopped gracefully (it flushes its buffer to
the Redis stream on shutdown) and the workers' consumer drained the stream (run here, after the load, so that
it does not share the two cores with the measured API); "answered" is wrk's count of completed responses (warm-up
included); lost = answered - recorded (never negative: a request the server answered as wrk's clock ran out is
recorded but not counted by wrk).
Targets (issue 4): ratio >= 0.6 of the bare app's requests/s, p99 < 50 ms, no open lost.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "bench-signing-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def bare_app():  # type: ignore[no-untyped-def]
    """The reference: same GIF, same headers, no token check and no recording."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tracking.web import GIF

    async def pixel(request):  # type: ignore[no-untyped-def]
        return Response(GIF, media_type="image/gif", headers={"Cache-Control": "no-store, no-cache, must-revalidate, "
                                                              "private", "Pragma": "no-cache"})

    return Starlette(routes=[Route("/o/{token}", pixel)])


def _uvicorn_options() -> dict[str, str]:
    import importlib.util

    return {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11"}


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", **_uvicorn_options())  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def seed(env: dict[str, str], messages: int) -> tuple[object, list[str]]:
    """An account, a campaign and `messages` sent messages (an hour ago: not "too fast"); their open tokens."""
    from sqlalchemy import insert

    from crm.accounts import create_account
    from crm.db import make_engine, migrate, utcnow
    from crm.schema import campaigns, contacts, lists, templates
    from crm.schema import messages as messages_t
    from tracking.tokens import TrackingTokens

    engine = make_engine(env["ENVOI_DATABASE_URL"])
    migrate(engine)
    now = utcnow()
    with engine.begin() as conn:
        account_id, _ = create_account(conn, "Bench")
        list_id = conn.execute(insert(lists).values(account_id=account_id, name="L", created_at=now)
                               .returning(lists.c.id)).scalar_one()
        tpl = conn.execute(insert(templates).values(account_id=account_id, name="T", subject="S", html="<p>x</p>",
                                                    text="x", created_at=now).returning(templates.c.id)).scalar_one()
        cid = conn.execute(insert(campaigns).values(
            account_id=account_id, name="C", channel="email", kind="marketing", list_id=list_id, template_id=tpl,
            from_email="news@bench.example", status="completed", fanout_cursor=0, fanout_done=True, audience={},
            created_at=now).returning(campaigns.c.id)).scalar_one()
        conn.execute(insert(contacts), [
            {"account_id": account_id, "email": f"r{i}@d{i % 20}.example", "attributes": {}, "created_at": now,
             "updated_at": now, "email_consent": "granted", "sms_consent": "none"} for i in range(messages)])
        contact_ids = [r[0] for r in conn.exec_driver_sql(
            f"SELECT id FROM contacts WHERE account_id = {int(account_id)} ORDER BY id")]
        sent_at = now - timedelta(hours=1)
        conn.execute(insert(messages_t), [
            {"account_id": account_id, "campaign_id": cid, "contact_id": c, "channel": "email",
             "kind": "marketing", "recipient": f"r{i}@d{i % 20}.example", "recipient_domain": f"d{i % 20}.example",
             "status": "sent", "attempts": 1, "queued_at": sent_at, "sent_at": sent_at, "updated_at": sent_at}
            for i, c in enumerate(contact_ids)])
        ids = [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM messages WHERE campaign_id = {int(cid)}")]
    tokens = TrackingTokens([KEY])
    return engine, [tokens.open_token(int(account_id), mid, int(cid)) for mid in ids]


def opens_recorded(engine: object) -> int:
    from sqlalchemy import func, select

    from crm.schema import events

    with engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(select(func.count()).select_from(events).where(
            events.c.type.in_(["opened", "opened_machine"]))).scalar_one())


def drain(engine: object, redis_url: str) -> float:
    """Run the workers' consumer until the hit stream is empty; returns the seconds it took."""
    import asyncio

    from redis.asyncio import Redis

    from tracking.engagement import EngagementConsumer

    async def go() -> float:
        redis = Redis.from_url(redis_url)
        started = time.perf_counter()
        try:
            consumer = EngagementConsumer(engine, redis, consumer="bench")  # type: ignore[arg-type]
            while await consumer.run_once(budget_s=5.0, count=50):
                pass
        finally:
            await redis.aclose()
        return time.perf_counter() - started

    return asyncio.run(go())


def wrk(port: int, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def latency_ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not m:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{out}")
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    total = re.search(r"^\s*(\d+) requests in", out, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if not total or not rps:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {"requests": int(total[1]), "rps": float(rps[1]), "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99"),
            "non_2xx": int(non2xx[1]) if non2xx else 0, "socket_errors": errors[0] if errors else ""}


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    from envoi.redis_server import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="envoi-bench-tracking-"))
    redis = RedisServer(tmp / "redis", appendonly=False).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api_port, bare_port = free_port(), free_port()
        env = dict(os.environ, ENVOI_VAR_DIR=str(tmp / "var"), ENVOI_DATABASE_URL=f"sqlite:///{tmp / 'envoi.db'}",
                   ENVOI_REDIS_URL=redis.url, ENVOI_SIGNING_KEYS=KEY, ENVOI_API_PORT=str(api_port),
                   ENVOI_METRICS_PORT="0", PYTHONPATH=str(ROOT))
        engine, tokens = seed(env, args.messages)
        script = tmp / "paths.lua"
        script.write_text("paths = {" + ",".join(f'"/o/{t}"' for t in tokens) + "}\n"
                          "i = 0\nrequest = function()\n  i = i % #paths + 1\n"
                          "  return wrk.format(\"GET\", paths[i], {[\"User-Agent\"] = \"Mozilla/5.0 (X11; Linux) "
                          "Gecko/20100101 Firefox/128.0\"})\nend\n")

        bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)], env=env)
        procs.append(bare)
        wait_port(bare_port, bare)
        wrk(bare_port, script, 2, args.connections)  # warm-up
        bare_run = wrk(bare_port, script, args.seconds, args.connections)
        stop(bare)

        api = subprocess.Popen([sys.executable, "-m", "envoi", "api"], env=env, cwd=str(ROOT))
        procs.append(api)
        wait_port(api_port, api)
        warm = wrk(api_port, script, 2, args.connections)
        api_run = wrk(api_port, script, args.seconds, args.connections)
        stop(api)  # graceful: the API flushes what it buffered to the Redis stream
        consumed_in = drain(engine, redis.url)  # what the workers' chore does: stream → SQL events + counters
        recorded = opens_recorded(engine)
        answered = int(warm["requests"] + api_run["requests"])
        engine.dispose()  # type: ignore[attr-defined]
    finally:
        for p in procs:
            stop(p)
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    ratio = api_run["rps"] / bare_run["rps"] if bare_run["rps"] else 0.0
    print(f"bare Starlette GIF : {bare_run['rps']:>9.0f} req/s  p50 {bare_run['p50_ms']:.2f} ms  "
          f"p99 {bare_run['p99_ms']:.2f} ms")
    print(f"envoi /o/<token>   : {api_run['rps']:>9.0f} req/s  p50 {api_run['p50_ms']:.2f} ms  "
          f"p99 {api_run['p99_ms']:.2f} ms  non-2xx {api_run['non_2xx']}  {api_run['socket_errors']}")
    print(f"ratio {ratio:.2f}; opens answered {answered}, recorded {recorded} "
          f"(stream to SQL by the worker consumer: {consumed_in:.1f} s, {recorded / max(consumed_in, 1e-9):.0f}/s)")
    print(json.dumps({"requests_per_s": round(api_run["rps"], 1), "bare_requests_per_s": round(bare_run["rps"], 1),
                      "ratio": round(ratio, 3), "p50_ms": round(api_run["p50_ms"], 2),
                      "p99_ms": round(api_run["p99_ms"], 2), "answered": answered, "recorded": recorded,
                      "lost": max(0, answered - recorded), "seconds": args.seconds,
                      "connections": args.connections, "at": datetime.now(UTC).isoformat(timespec="seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
