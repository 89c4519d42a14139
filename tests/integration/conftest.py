from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from crm.accounts import create_account
from crm.db import make_engine, migrate
from envoi.settings import Settings
from tests.support.smtp_servers import Faults, SmtpTestServer, smtp_server
from tests.support.stack import ApiServer, ThreadWorker, make_settings

SENDER = {
    "legal_name": "Boutique Test SARL", "postal_address": "12 rue de la République, 69002 Lyon",
    "phone": "+33 4 72 00 00 00", "from_email": "news@boutique-test.fr", "from_name": "Boutique Test",
    "reply_to": "contact@boutique-test.fr",
}


@dataclass
class Env:
    settings: Settings
    engine: Engine
    smtp: SmtpTestServer
    api: ApiServer
    stack: ExitStack

    def account(self, name: str = "Acme") -> tuple[int, httpx.Client]:
        with self.engine.begin() as conn:
            account_id, key = create_account(conn, name, actor="test")
        client = httpx.Client(base_url=self.api.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        self.stack.callback(client.close)
        return account_id, client

    def worker(self) -> ThreadWorker:
        return ThreadWorker(self.settings, self.engine)


@pytest.fixture
def make_env(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Callable[..., Env]]:
    stack = ExitStack()

    def build(faults: Faults | None = None, **env: str) -> Env:
        smtp = stack.enter_context(smtp_server(faults))
        settings = make_settings(tmp_path, database_url, redis_url, ENVOI_SMTP_HOST=smtp.host,
                                 ENVOI_SMTP_PORT=str(smtp.port), **env)
        engine = make_engine(settings.effective_database_url)
        stack.callback(engine.dispose)
        migrate(engine)
        api = stack.enter_context(ApiServer(settings, engine))
        return Env(settings, engine, smtp, api, stack)

    yield build
    stack.close()


def ok(response: httpx.Response) -> Any:
    assert response.status_code < 400, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def setup_campaign(client: httpx.Client, emails: list[str], *, consent: bool = True, html: str | None = None,
                   text: str | None = None, subject: str = "Nouveautés pour {{ contact.first_name }}") -> int:
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    lst = ok(client.post("/v1/lists", json={"name": "Newsletter"}))
    lines = []
    import json

    for i, email in enumerate(emails):
        c: dict[str, Any] = {"email": email, "first_name": f"Ana{i}", "last_name": "Test", "locale": "fr"}
        if consent:
            c["consents"] = [{"channel": "email", "source": "form v1", "wording": "J'accepte", "ip": "192.0.2.1"}]
        lines.append(json.dumps(c))
    report = ok(client.post(f"/v1/contacts/import?list_id={lst['id']}", content="\n".join(lines).encode(),
                            headers={"Content-Type": "application/x-ndjson"}))
    assert report["error_count"] == 0, report
    tpl = ok(client.post("/v1/templates", json={
        "name": "T", "subject": subject,
        "html": html if html is not None else "<html><body><p>Bonjour {{ contact.first_name }}</p></body></html>",
        "text": text if text is not None else "Bonjour {{ contact.first_name }}",
    }))
    camp = ok(client.post("/v1/campaigns", json={"name": "C", "list_id": lst["id"], "template_id": tpl["id"]}))
    return int(camp["id"])
