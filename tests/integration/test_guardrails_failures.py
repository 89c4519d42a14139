"""Issue 3: the three-failure rule across campaigns, against real SMTP servers (one rejecting, one accepting)."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from crm.schema import webhook_events
from tests.integration.conftest import SENDER, ok
from tests.support.smtp_servers import Faults
from tests.support.stack import wait_until

ADMIN = {"Authorization": "Bearer admin-test-key"}
BAD = "flaky@example.com"  # 550 5.1.1 on the rejecting server
BLOCKED = "blocked@example.com"  # 554 5.6.0 content rejected: a policy block, never counted against the address
GOOD = "fine@example.com"


class Mailer:
    """One account, one list, one template; a new campaign per send."""

    def __init__(self, client: httpx.Client, emails: list[str]) -> None:
        self.client = client
        ok(client.put("/v1/account/sender-profile", json=SENDER))
        self.list_id = ok(client.post("/v1/lists", json={"name": "L"}))["id"]
        lines = [json.dumps({"email": e, "consents": [{"channel": "email", "source": "form"}]}) for e in emails]
        report = ok(client.post(f"/v1/contacts/import?list_id={self.list_id}", content="\n".join(lines).encode()))
        assert report["error_count"] == 0, report
        self.template_id = ok(client.post("/v1/templates", json={
            "name": "T", "subject": "Les nouveautés", "html": "<p>Bonjour</p>", "text": "Bonjour"}))["id"]

    def send(self, env, n: int) -> dict:
        cid = ok(self.client.post("/v1/campaigns", json={"name": f"C{n}", "list_id": self.list_id,
                                                         "template_id": self.template_id}))["id"]
        with env.worker():
            ok(self.client.post(f"/v1/campaigns/{cid}/send"))
            return wait_until(lambda: (v := ok(self.client.get(f"/v1/campaigns/{cid}")))["status"] == "completed"
                              and v, 30, message=f"campaign {n} completed")


def _disabled(client: httpx.Client) -> dict[str, dict]:
    return {i["address"]: i for i in ok(client.get("/v1/suppressions/disabled"))["items"]}


def test_three_failures_disable_an_address_and_a_success_in_between_resets_the_count(make_env):
    rejecting = make_env(Faults(reject_rcpts=frozenset({BAD}), reject_data_rcpts=frozenset({BLOCKED})))
    accepting = make_env()  # same database and Redis, an SMTP server that accepts everyone
    _, client = rejecting.account()
    mailer = Mailer(client, [BAD, BLOCKED, GOOD])
    mailer.send(rejecting, 1)
    mailer.send(rejecting, 2)  # BAD: two counted failures
    mailer.send(accepting, 3)  # ...then a success: the count starts again
    mailer.send(rejecting, 4)
    mailer.send(rejecting, 5)
    assert _disabled(client) == {}, "two failures since the last success: not disabled yet"
    view = mailer.send(rejecting, 6)  # third consecutive failure
    disabled = _disabled(client)
    assert list(disabled) == [BAD]
    entry = disabled[BAD]
    assert entry["cause"] == "consecutive_failures" and entry["consecutive_failures"] == 3
    history = entry["history"]
    assert [h["delivered"] for h in history] == [False, False, True, False, False, False]
    assert all(h["counted"] and h["class"] == "hard" and h["reason"] == "user_unknown"
               for h in history if not h["delivered"])
    # BLOCKED failed six times, but a content block is about the sender, never the address.
    assert view["counters"]["failed"] == 2
    # The suppression list shows the history too, and the address is no longer mailed.
    supp = {i["address"]: i for i in ok(client.get("/v1/suppressions"))["items"]}
    assert supp[BAD]["reason"] == "disabled" and len(supp[BAD]["history"]) == 6
    assert BLOCKED not in supp
    view = mailer.send(rejecting, 7)
    # skipped at fan-out (the reason's name is the suppression slice's: "bounced" for a disabled address)
    assert sum(view["audience"]["skipped"].values()) == 1 and view["counters"]["failed"] == 1
    with rejecting.engine.connect() as conn:
        events = [(t, p) for t, p in conn.execute(select(webhook_events.c.event_type, webhook_events.c.payload))]
    assert [p["address"] for t, p in events if t == "address.disabled"] == [BAD]


def test_the_stricter_account_setting_disables_on_the_first_user_unknown(make_env):
    env = make_env(Faults(reject_rcpts=frozenset({BAD})))
    account_id, client = env.account()
    r = httpx.put(f"{env.api.url}/admin/v1/accounts/{account_id}/guardrails", headers=ADMIN,
                  json={"settings": {"failures_to_disable": 4}})
    assert r.status_code == 422 and r.json()["field"] == "settings.failures_to_disable"  # looser: refused
    r = httpx.put(f"{env.api.url}/admin/v1/accounts/{account_id}/guardrails", headers=ADMIN,
                  json={"settings": {"disable_on_first_user_unknown": True}})
    assert r.status_code == 200, r.text
    mailer = Mailer(client, [BAD, GOOD])
    mailer.send(env, 1)
    disabled = _disabled(client)
    assert list(disabled) == [BAD] and disabled[BAD]["cause"] == "user_unknown"
