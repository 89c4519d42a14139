"""Bad input gets a clear 4xx problem+json naming the field, and nothing is half-written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from crm.schema import campaigns, contacts, lists, messages, templates
from tests.integration.conftest import SENDER, ok, setup_campaign

PROBLEM = "application/problem+json"


def _problem(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://") and body["title"]
    if field is not None:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


def _count(env, table) -> int:
    with env.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture
def env(make_env):
    return make_env()


def test_missing_or_wrong_api_key_is_401(env):
    import httpx

    r = httpx.get(f"{env.api.url}/v1/account")
    _problem(r, 401, "Authorization")
    r = httpx.get(f"{env.api.url}/v1/account", headers={"Authorization": "Bearer ev_nope"})
    _problem(r, 401, "Authorization")


def test_malformed_json_is_400(env):
    _, client = env.account()
    r = client.post("/v1/lists", content=b'{"name": ', headers={"Content-Type": "application/json"})
    _problem(r, 400, "body")
    assert _count(env, lists) == 0


def test_unknown_fields_are_refused(env):
    _, client = env.account()
    r = client.post("/v1/contacts", json={"email": "a@example.com", "favourite_colour": "blue"})
    _problem(r, 422, "favourite_colour")
    assert _count(env, contacts) == 0


def test_invalid_email_names_the_field(env):
    _, client = env.account()
    r = client.post("/v1/contacts", json={"email": "not-an-address"})
    _problem(r, 422, "email")
    r = client.put("/v1/account/sender-profile", json={**SENDER, "from_email": "x@@y"})
    _problem(r, 422, "from_email")
    assert _count(env, contacts) == 0


def test_header_injection_in_sender_profile_is_refused(env):
    _, client = env.account()
    r = client.put("/v1/account/sender-profile", json={**SENDER, "from_name": "Evil\r\nBcc: victim@example.com"})
    _problem(r, 422, "from_name")


def test_oversized_body_is_413(env):
    _, client = env.account()
    big = {"name": "x" * (env.settings.max_body_bytes + 10)}
    r = client.post("/v1/lists", content=json.dumps(big).encode(), headers={"Content-Type": "application/json"})
    _problem(r, 413, "body")
    assert _count(env, lists) == 0


def test_another_accounts_ids_are_404_and_nothing_is_written(env):
    _, alice = env.account("Alice")
    _, mallory = env.account("Mallory")
    cid = setup_campaign(alice, ["a1@example.com", "a2@example.com"])
    view = ok(alice.get(f"/v1/campaigns/{cid}"))
    ok(mallory.put("/v1/account/sender-profile", json=SENDER))
    before = (_count(env, campaigns), _count(env, messages), _count(env, templates))
    _problem(mallory.get(f"/v1/campaigns/{cid}"), 404, "campaign_id")
    _problem(mallory.post(f"/v1/campaigns/{cid}/send"), 404, "campaign_id")
    _problem(mallory.post(f"/v1/campaigns/{cid}/cancel"), 404, "campaign_id")
    _problem(mallory.get(f"/v1/lists/{view['list_id']}"), 404, "list_id")
    _problem(mallory.get(f"/v1/templates/{view['template_id']}"), 404, "template_id")
    _problem(mallory.post("/v1/campaigns", json={"name": "steal", "list_id": view["list_id"],
                                                 "template_id": view["template_id"]}), 404, "list_id")
    contact_id = ok(alice.get("/v1/contacts", params={"email": "a1@example.com"}))["id"]
    _problem(mallory.get(f"/v1/contacts/{contact_id}"), 404, "contact_id")
    mlist = ok(mallory.post("/v1/lists", json={"name": "mine"}))
    _problem(mallory.post(f"/v1/lists/{mlist['id']}/members", json={"contact_ids": [contact_id]}), 422,
             "contact_ids")
    assert (_count(env, campaigns), _count(env, messages), _count(env, templates)) == before
    assert ok(mallory.get(f"/v1/lists/{mlist['id']}"))["size"] == 0


def test_campaign_needs_a_complete_sender_profile(env):
    _, client = env.account()
    lst = ok(client.post("/v1/lists", json={"name": "L"}))
    tpl = ok(client.post("/v1/templates", json={"name": "T", "subject": "Hello", "text": "Hi"}))
    r = client.post("/v1/campaigns", json={"name": "C", "list_id": lst["id"], "template_id": tpl["id"]})
    body = _problem(r, 422)
    assert body["field"].startswith("sender_profile.")
    assert _count(env, campaigns) == 0


def test_template_syntax_error_names_the_part(env):
    _, client = env.account()
    r = client.post("/v1/templates", json={"name": "T", "subject": "Hi {{ contact.first_name", "text": "x"})
    _problem(r, 422, "subject")
    assert _count(env, templates) == 0


def test_import_reports_bad_lines_and_keeps_the_good_ones(env):
    _, client = env.account()
    lines = [
        json.dumps({"email": "good1@example.com"}),
        "{not json",
        json.dumps({"email": "nope"}),
        json.dumps({"email": "good2@example.com", "unknown": 1}),
        json.dumps(["a list"]),
        json.dumps({"email": "good3@example.com", "birth_date": "1990-02-30"}),
        json.dumps({"email": "good4@example.com", "first_name": "Zoé"}),
    ]
    report = ok(client.post("/v1/contacts/import", content="\n".join(lines).encode(),
                            headers={"Content-Type": "application/x-ndjson"}))
    assert report["imported"] == 2 and report["error_count"] == 5
    assert [(e["line"], e["field"]) for e in report["errors"]] == [
        (2, "line"), (3, "email"), (4, "unknown"), (5, "line"), (6, "birth_date")]
    assert _count(env, contacts) == 2


def test_csv_import_with_consent_columns(env):
    _, client = env.account()
    csv_body = ("email,first_name,attr.city,consent_email,consent_source\n"
                "c1@example.com,Léa,Lyon,granted,shop form v2\n"
                "bad-address,Bob,Paris,granted,shop form v2\n"
                "c2@example.com,Hugo,,,\n")
    report = ok(client.post("/v1/contacts/import", content=csv_body.encode(), headers={"Content-Type": "text/csv"}))
    assert report["imported"] == 2 and report["errors"][0]["line"] == 3
    c1 = ok(client.get("/v1/contacts", params={"email": "c1@example.com"}))
    assert c1["email_consent"] == "granted" and c1["attributes"] == {"city": "Lyon"}
    c2 = ok(client.get("/v1/contacts", params={"email": "c2@example.com"}))
    assert c2["email_consent"] == "none"


def test_sending_a_campaign_twice_is_409_and_idempotency_key_replays(env):
    _, client = env.account()
    cid = setup_campaign(client, ["x@example.com"])
    first = client.post(f"/v1/campaigns/{cid}/send", headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    replay = client.post(f"/v1/campaigns/{cid}/send", headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 202 and replay.headers.get("Idempotent-Replayed") == "true"
    _problem(client.post(f"/v1/campaigns/{cid}/send"), 409, "campaign_id")


def test_openapi_document_lists_the_routes(env):
    import httpx

    doc = httpx.get(f"{env.api.url}/openapi.json").json()
    for path in ("/v1/contacts", "/v1/contacts/import", "/v1/lists/{list_id}/members", "/v1/templates",
                 "/v1/campaigns", "/v1/campaigns/{campaign_id}/send", "/v1/campaigns/{campaign_id}/cancel",
                 "/v1/messages/email", "/v1/account"):
        assert path in doc["paths"], path


def test_metrics_count_sent_messages_and_api_requests(env):
    import re

    import httpx

    def sent_total() -> float:
        text = httpx.get(f"{env.api.url}/metrics").text
        m = re.search(r'^envoi_messages_total\{channel="email",outcome="sent"\} ([0-9.e+]+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    _, client = env.account()
    cid = setup_campaign(client, [f"m{i}@example.com" for i in range(7)])
    before = sent_total()
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(env.smtp.messages) == 7, timeout=30)
        from tests.support.stack import wait_until

        wait_until(lambda: sent_total() - before == 7, 10, message="metric updated")
    text = httpx.get(f"{env.api.url}/metrics").text
    # The registry is per process and other tests post too: the series must exist with a count >= 1.
    assert re.search(r'^envoi_api_requests_total\{method="POST",route="/v1/campaigns/\{campaign_id\}/send",'
                     r'status="202"\} [1-9]', text, re.M)
    assert "envoi_send_latency_seconds_bucket" in text
