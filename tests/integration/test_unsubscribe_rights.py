"""Data-subject rights (issue 5): export of one contact, erasure then re-import (the address stays suppressed),
the account's restitution archive, and the purge of a terminated account's data three months later."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta

import httpx
from redis.asyncio import Redis
from sqlalchemy import select, update

from crm import ledger
from crm.address_hash import is_hashed
from crm.domain import AccountStatus, Channel
from crm.schema import accounts, contacts, events, messages, suppressions, webhook_events
from envoi.composition import DispatchHooks, address_hasher, unsubscribe_hooks
from envoi.retention import purge_due_accounts
from tests.integration.conftest import SENDER, ok, setup_campaign
from tests.integration.unsubscribe_support import contact_id, count, links
from tests.support.stack import wait_until

ADMIN = {"Authorization": "Bearer admin-test-key"}


def _send_and_complete(client: httpx.Client, cid: int) -> dict:
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    return wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v, 30,
                      message="campaign completed")


def test_contact_export_then_erasure_and_a_reimported_address_stays_suppressed(make_env):
    env = make_env()
    account_id, client = env.account()
    emails = ["zoe@example.com", "yan@example.com"]
    cid = setup_campaign(client, emails)
    zoe = contact_id(client, "zoe@example.com")
    with env.worker():
        _send_and_complete(client, cid)
        assert len(env.smtp.messages) == 2

        export = ok(client.get(f"/v1/contacts/{zoe}/export"))
        assert export["format"] == "envoi.contact-export/1" and export["contact"]["email"] == "zoe@example.com"
        assert [c["source"] for c in export["consents"]] == ["form v1"]
        assert [m["name"] for m in export["lists"]] == ["Newsletter"]
        assert [m["status"] for m in export["messages"]] == ["sent"] and export["events"]

        # Zoé unsubscribes (a plaintext suppression and a webhook naming her), then asks for erasure.
        token = links(env).unsubscribe_token(account_id, zoe, 0, cid)
        assert httpx.post(f"{env.api.url}/u/{token}", content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
        erased = ok(client.delete(f"/v1/contacts/{zoe}"))
        assert erased["erased"] is True
        assert client.get(f"/v1/contacts/{zoe}").status_code == 404
        assert client.get(f"/v1/contacts/{zoe}/export").status_code == 404
        with env.engine.connect() as conn:
            rows = conn.execute(select(suppressions.c.address, suppressions.c.reason)
                                .where(suppressions.c.account_id == account_id)).all()
            assert [(is_hashed(a), r) for a, r in rows] == [(True, "erased")]
            recipients = conn.execute(select(messages.c.recipient).where(messages.c.campaign_id == cid)).scalars()
            assert "zoe@example.com" not in set(recipients)
            payloads = [json.dumps(p) for p in conn.execute(select(webhook_events.c.payload)).scalars()]
            assert payloads and not any("zoe@example.com" in p for p in payloads)
            leftovers = conn.execute(select(events.c.data, events.c.contact_id).where(
                events.c.account_id == account_id, events.c.contact_id == zoe)).all()
            assert leftovers == []
            # The suppression check matches the keyed hash.
            hit = ledger.suppressed_addresses(conn, account_id, Channel.EMAIL, ["ZOE@example.com".lower()],
                                              address_hasher(env.settings))
            assert hit == {"zoe@example.com": "erased"}

        # The CRM imports the same address again, with consent, into the list; a new campaign goes out.
        line = json.dumps({"email": "zoe@example.com", "first_name": "Zoé", "consents": [
            {"channel": "email", "source": "form v2", "wording": "J'accepte"}]})
        lists = ok(client.get("/v1/lists"))
        ok(client.post(f"/v1/contacts/import?list_id={lists[0]['id']}", content=line.encode(),
                       headers={"Content-Type": "application/x-ndjson"}))
        tpl = ok(client.post("/v1/templates", json={"name": "T2", "subject": "Encore", "html": "<p>Hi</p>",
                                                    "text": "Hi"}))
        second = ok(client.post("/v1/campaigns", json={"name": "C2", "list_id": lists[0]["id"],
                                                       "template_id": tpl["id"]}))["id"]
        _send_and_complete(client, second)
        tx = client.post("/v1/messages/email", json={"to": "zoe@example.com", "subject": "Reçu", "text": "Merci"})
        assert tx.status_code == 202
        wait_until(lambda: ok(client.get(f"/v1/messages/{tx.json()['id']}"))["status"] not in ("queued", "deferred"),
                   15, message="transactional outcome")
        env.smtp.wait_for(lambda: len(env.smtp.messages) >= 3, timeout=15)
    to_zoe = [m for m in env.smtp.messages if m.rcpt_tos == ("zoe@example.com",)]
    assert len(to_zoe) == 1  # only the first campaign, before the erasure
    assert ok(client.get(f"/v1/messages/{tx.json()['id']}"))["status"] == "suppressed"
    with env.engine.connect() as conn:
        status = conn.execute(select(messages.c.status).where(
            messages.c.campaign_id == second, messages.c.recipient == "zoe@example.com")).scalar()
    # Today the fan-out queues it and the hand-off guard suppresses it; with the fan-out change proposed in
    # /tmp/request-5.md it is skipped at fan-out (no ledger row) and counted `erased` in the audience report.
    assert status in (None, "suppressed")


def test_account_archive_is_a_documented_zip_for_the_admin_only(make_env):
    env = make_env()
    account_id, client = env.account()
    setup_campaign(client, [f"a{i}@example.com" for i in range(5)])
    assert httpx.get(f"{env.api.url}/admin/v1/accounts/{account_id}/export",
                     headers=client.headers).status_code == 403
    r = httpx.get(f"{env.api.url}/admin/v1/accounts/{account_id}/export", headers=ADMIN, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["format"] == "envoi.account-export/1" and manifest["account"]["id"] == account_id
    assert manifest["files"]["contacts.ndjson"] == 5 and manifest["files"]["consents.ndjson"] == 5
    assert manifest["files"]["list_members.ndjson"] == 5
    rows = [json.loads(x) for x in zf.read("contacts.ndjson").decode().splitlines()]
    assert sorted(x["email"] for x in rows) == [f"a{i}@example.com" for i in range(5)]
    table = list(csv.DictReader(io.StringIO(zf.read("contacts.csv").decode())))
    assert len(table) == 5 and table[0]["email_consent"] == "granted"
    assert json.loads(zf.read("sender_profile.json"))["legal_name"] == SENDER["legal_name"]
    assert "README.txt" in zf.namelist()
    assert httpx.get(f"{env.api.url}/admin/v1/accounts/999999/export", headers=ADMIN).status_code == 404


async def test_terminated_account_data_is_purged_three_months_later_by_the_chore(make_env, redis_url):
    env = make_env()
    account_id, client = env.account()
    other_id, other = env.account("Other")
    setup_campaign(client, ["p1@example.com", "p2@example.com"])
    setup_campaign(other, ["keep@example.com"])
    terminated = datetime(2026, 11, 30, 9, tzinfo=UTC)
    with env.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == account_id)
                     .values(status=AccountStatus.TERMINATED, terminated_at=terminated))
    assert purge_due_accounts(env.engine, terminated + timedelta(days=89)) == {}
    assert count(env, contacts, contacts.c.account_id == account_id) == 2
    # The chore as the worker runs it, with a controllable clock.
    now = [datetime(2027, 2, 28, 8, 59, tzinfo=UTC)]
    hooks = DispatchHooks()
    redis = Redis.from_url(redis_url)
    try:
        unsubscribe_hooks(hooks, env.settings, env.engine, redis, clock=lambda: now[0])
        period, chore = hooks.chores[-1]
        assert period == env.settings.retention_purge_period_s
        await chore()
        assert count(env, contacts, contacts.c.account_id == account_id) == 2  # one minute early
        now[0] = datetime(2027, 2, 28, 9, tzinfo=UTC)
        await chore()
    finally:
        await redis.aclose()
    assert count(env, contacts, contacts.c.account_id == account_id) == 0
    assert count(env, contacts, contacts.c.account_id == other_id) == 1  # other accounts untouched
    assert await asyncio.to_thread(purge_due_accounts, env.engine, now[0]) == {}  # idempotent


def test_unknown_or_foreign_contact_is_404(make_env):
    env = make_env()
    _, client = env.account()
    _, other = env.account("Other")
    ok(other.post("/v1/contacts", json={"email": "theirs@example.com"}))
    theirs = contact_id(other, "theirs@example.com")
    assert client.get(f"/v1/contacts/{theirs}/export").status_code == 404
    assert client.delete(f"/v1/contacts/{theirs}").status_code == 404
    assert other.get(f"/v1/contacts/{theirs}").status_code == 200  # untouched by the other account's request
    assert client.delete("/v1/contacts/424242").status_code == 404


def test_double_opt_in_link_records_the_confirmation_as_a_new_ledger_entry(make_env):
    env = make_env()
    _, client = env.account()
    setup_campaign(client, ["dora@example.com"])
    cid = contact_id(client, "dora@example.com")
    [grant] = ok(client.get(f"/v1/contacts/{cid}"))["consents"]
    url = ok(client.post(f"/v1/contacts/{cid}/consents/{grant['id']}/confirmation-link"))["url"]
    assert url.startswith(env.settings.public_url + "/optin/")
    url = env.api.url + url.removeprefix(env.settings.public_url)  # the test API listens on its own port
    page = httpx.get(url, headers={"Accept-Language": "fr"})
    assert page.status_code == 200 and "Boutique Test SARL" in page.text and "Je confirme" in page.text
    assert len(ok(client.get(f"/v1/contacts/{cid}"))["consents"]) == 1  # a GET records nothing
    done = httpx.post(url, headers={"User-Agent": "Test-Browser/1.0", "Accept-Language": "en"})
    assert done.status_code == 200 and "confirmed" in done.text
    history = ok(client.get(f"/v1/contacts/{cid}"))["consents"]
    assert len(history) == 2 and history[0]["double_opt_in_at"] is None
    confirmation = history[1]
    assert confirmation["double_opt_in_at"] and confirmation["ip"] == "127.0.0.1"
    assert confirmation["user_agent"] == "Test-Browser/1.0" and confirmation["source"] == grant["source"]
    assert "already" in httpx.post(url, headers={"Accept-Language": "en"}).text  # idempotent
    assert len(ok(client.get(f"/v1/contacts/{cid}"))["consents"]) == 2
    assert httpx.post(url[:-4] + "AAAA").status_code == 404
    assert client.post(f"/v1/contacts/{cid}/consents/999999/confirmation-link").status_code == 404


def test_cli_purges_as_of_a_given_time_and_exports_an_account(make_env, tmp_path):
    from click.testing import CliRunner

    from envoi.cli import main

    env = make_env()
    account_id, client = env.account()
    setup_campaign(client, ["cli1@example.com"])
    with env.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == account_id).values(
            status=AccountStatus.TERMINATED, terminated_at=datetime(2026, 1, 15, tzinfo=UTC)))
    cli_env = {"ENVOI_DATABASE_URL": env.settings.database_url, "ENVOI_VAR_DIR": str(env.settings.var_dir),
               "ENVOI_SIGNING_KEYS": ",".join(env.settings.signing_keys)}
    runner = CliRunner()
    out = tmp_path / "a.zip"
    r = runner.invoke(main, ["retention", "export-account", str(account_id), "--out", str(out)], env=cli_env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["contacts.ndjson"] == 1 and zipfile.is_zipfile(out)
    r = runner.invoke(main, ["retention", "purge", "--now", "2026-04-14T23:59:00+00:00"], env=cli_env)
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1]) == {}
    r = runner.invoke(main, ["retention", "purge", "--now", "2026-04-15T00:00:00+00:00"], env=cli_env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])[str(account_id)]["contacts"] == 1
    assert count(env, contacts, contacts.c.account_id == account_id) == 0
