"""`envoi demo`: a scripted tour on the embedded defaults, driven over HTTP like the CRM would.

Runs in its own var/ folder and ports so that it never disturbs a running `make run`. The last line printed is
one JSON object: {"recipients", "delivered", "seconds", ...}."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from crm.accounts import create_account
from envoi.composition import database
from envoi.runner import Stack
from envoi.settings import load_settings

DEMO_ENV = {
    "ENVOI_VAR_DIR": "var/demo",
    "ENVOI_API_PORT": "8100",
    "ENVOI_CAPTURE_SMTP_PORT": "2625",
    "ENVOI_INBOUND_SMTP_PORT": "2626",
    "ENVOI_PUBLIC_URL": "http://127.0.0.1:8100",
    "ENVOI_METRICS_PORT": "0",
}

TEMPLATE_HTML = """<!doctype html><html><body>
<h1>Bonjour {{ contact.first_name }} !</h1>
<p>Nos nouveautés d'automne sont arrivées, {{ contact.first_name }} {{ contact.last_name }}.</p>
<p>Votre ville : {{ contact.attributes.city }}.</p>
</body></html>"""
TEMPLATE_TEXT = "Bonjour {{ contact.first_name }} !\nNos nouveautés d'automne sont arrivées.\n"


def _contacts_ndjson(n: int) -> bytes:
    lines = []
    for i in range(n):
        lines.append(json.dumps({
            "email": f"client{i}@example.com", "first_name": f"Prénom{i}", "last_name": f"Nom{i}",
            "crm_id": f"CRM-{i}", "locale": "fr" if i % 3 else "en", "attributes": {"city": "Lyon"},
            "consents": [{"channel": "email", "source": "demo signup form v1",
                          "wording": "J'accepte de recevoir les offres par e-mail", "ip": "192.0.2.10"}],
        }))
    return ("\n".join(lines) + "\n").encode()


def _bar(done: int, total: int, started: float) -> str:
    width = 40
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - started, 1e-6)
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} delivered ({rate:,.0f} msg/s)"


def run_demo(n: int, workers: int | None) -> int:
    os.environ.update({k: v for k, v in DEMO_ENV.items() if k not in os.environ})
    if workers:
        os.environ["ENVOI_WORKERS"] = str(workers)
    settings = load_settings()
    if settings.var_dir.exists():
        shutil.rmtree(settings.var_dir)  # a clean inbox, so that counting files counts this run
    settings = load_settings()
    stack = Stack(settings, quiet=True)
    stack.start()
    try:
        stack.wait_ready(60)
        return _tour(settings, n)
    finally:
        stack.stop()


def _tour(settings: Any, n: int) -> int:
    engine = database(settings)
    with engine.begin() as conn:
        account_id, key = create_account(conn, "Boutique Démo SARL", actor="demo")
    engine.dispose()
    base = f"http://{settings.api_host}:{settings.api_port}"
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=h, timeout=120) as api:
        def ok(r: httpx.Response) -> dict[str, Any]:
            if r.status_code >= 400:
                raise SystemExit(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}")
            body: dict[str, Any] = r.json()
            return body

        print(f"account {account_id} created; API key {key[:12]}…")
        ok(api.put("/v1/account/sender-profile", json={
            "legal_name": "Boutique Démo SARL", "postal_address": "12 rue de la République, 69002 Lyon",
            "phone": "+33 4 72 00 00 00", "from_email": "news@boutique-demo.fr", "from_name": "Boutique Démo",
            "reply_to": "contact@boutique-demo.fr"}))
        lst = ok(api.post("/v1/lists", json={"name": "Newsletter"}))
        t0 = time.monotonic()
        report = ok(api.post(f"/v1/contacts/import?list_id={lst['id']}", content=_contacts_ndjson(n),
                             headers={"Content-Type": "application/x-ndjson"}))
        print(f"imported {report['imported']} contacts in {time.monotonic() - t0:.1f}s "
              f"({report['error_count']} line errors)")
        tpl = ok(api.post("/v1/templates", json={"name": "Automne", "subject": "Nos nouveautés d'automne, "
                                                 "{{ contact.first_name }}", "html": TEMPLATE_HTML,
                                                 "text": TEMPLATE_TEXT}))
        camp = ok(api.post("/v1/campaigns", json={"name": "Automne", "list_id": lst["id"],
                                                   "template_id": tpl["id"]}))
        started = time.monotonic()
        ok(api.post(f"/v1/campaigns/{camp['id']}/send", headers={"Idempotency-Key": f"demo-{camp['id']}"}))
        outbox = Path(settings.var_dir, "outbox")
        delivered = 0
        deadline = started + max(120.0, n / 50)
        while time.monotonic() < deadline:
            delivered = sum(1 for name in os.listdir(outbox) if name.endswith(".eml"))
            sys.stdout.write(_bar(delivered, n, started))
            sys.stdout.flush()
            if delivered >= n:
                break
            time.sleep(0.25)
        seconds = time.monotonic() - started
        print()
        stats = ok(api.get(f"/v1/campaigns/{camp['id']}/stats"))
        while stats["status"] == "sending" and time.monotonic() < deadline:
            time.sleep(0.25)
            stats = ok(api.get(f"/v1/campaigns/{camp['id']}/stats"))
        print(json.dumps(stats, indent=2, default=str))
        summary = {"recipients": stats["counters"]["total"], "delivered": delivered, "seconds": round(seconds, 2),
                   "per_second": round(delivered / seconds, 1) if seconds else None,
                   "workers": settings.workers, "cores": os.cpu_count(), "campaign_status": stats["status"]}
        print(json.dumps(summary))
        return 0 if delivered >= n else 1
