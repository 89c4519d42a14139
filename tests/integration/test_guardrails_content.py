"""Issue 3: content checks at template and campaign creation, sensitive data refused at import (422, nothing
saved, the problem named)."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from crm.schema import campaigns, contacts, templates
from tests.integration.conftest import SENDER, ok

IBAN = "FR76 3000 6000 0112 3456 7890 189"
CARD = "4111 1111 1111 1111"


def _count(env, table) -> int:
    with env.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_templates_and_campaigns_with_content_problems_are_refused_and_not_saved(make_env):
    env = make_env()
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    cases = [
        ({"subject": "PROMO EXCEPTIONNELLE AUJOURD'HUI", "text": "Bonjour"}, "subject", "subject_all_caps"),
        ({"subject": "!!! ??? !!!", "text": "Bonjour"}, "subject", "subject_no_words"),
        ({"subject": "Votre RIB", "text": f"Notre IBAN : {IBAN}"}, "text", "sensitive_data"),
        ({"subject": "Offre", "html": "<a href='{{ unsubscribe_url }}'>x</a>", "text": "Bonjour"}, "text",
         "unsubscribe_placement"),
    ]
    for body, field, code in cases:
        r = client.post("/v1/templates", json={"name": "T", **body})
        assert r.status_code == 422, (body, r.text)
        problem = r.json()
        assert problem["field"].startswith(field) and problem["errors"][0]["code"] == code, problem
    assert _count(env, templates) == 0
    # "Re:" on a template is allowed (a transactional reply may use it); a campaign using it is misleading.
    tpl = ok(client.post("/v1/templates", json={"name": "T", "subject": "Re: votre commande", "text": "Bonjour"}))
    lst = ok(client.post("/v1/lists", json={"name": "L"}))
    r = client.post("/v1/campaigns", json={"name": "C", "list_id": lst["id"], "template_id": tpl["id"]})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "subject_fake_reply", r.text
    assert _count(env, campaigns) == 0


def test_sensitive_contact_attributes_are_refused_with_line_and_field(make_env):
    env = make_env()
    _, client = env.account()
    lines = [
        json.dumps({"email": "ok1@example.com", "attributes": {"city": "Lyon"}}),
        json.dumps({"email": "bad@example.com", "attributes": {"bank": {"iban": IBAN}}}),
        json.dumps({"email": "ok2@example.com", "attributes": {"note": "client depuis 2019"}}),
    ]
    report = ok(client.post("/v1/contacts/import", content="\n".join(lines).encode()))
    assert report["imported"] == 2 and report["error_count"] == 1
    error = report["errors"][0]
    assert error["line"] == 2 and error["field"] == "attributes.bank.iban" and "iban" in error["detail"]
    assert IBAN.replace(" ", "") not in error["detail"].replace(" ", ""), "never echo the full value"
    csv = "email,attr.carte\nok3@example.com,fidélité\ncard@example.com," + CARD + "\n"
    report = ok(client.post("/v1/contacts/import?format=csv", content=csv.encode()))
    assert report["errors"][0]["line"] == 3 and report["errors"][0]["field"] == "attributes.carte"
    r = client.post("/v1/contacts", json={"email": "one@example.com", "attributes": {"nir": "1 85 05 78 006 084 91"}})
    assert r.status_code == 422 and r.json()["field"] == "attributes.nir", r.text
    assert _count(env, contacts) == 3
