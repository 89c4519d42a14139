"""RFC 8058 one-click unsubscribe, the page's POST and undo, the mailto handler, the CRM's view (suppression list
with filters, signed-webhook outbox) — against the API under uvicorn, a real database and Redis."""

from __future__ import annotations

import socket

import aiosmtplib
import httpx
import pytest
from redis.asyncio import Redis

from crm import keys
from crm.schema import contacts, list_members
from envoi.composition import inbound_router
from tests.integration.conftest import ok
from tests.integration.unsubscribe_support import (
    actions,
    campaign_with_tokens,
    contact_id,
    count,
    suppressed,
    undo_action_id,
    webhooks,
)
from tracking.inbound import InboundServer

GMAIL_BODY = b"List-Unsubscribe=One-Click"


@pytest.fixture
def env(make_env):
    return make_env()


def _raw_post(port: int, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request written byte for byte (what Gmail's one-click sends), the response parsed."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                                         headers.items()) + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head_raw, _, payload = data.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    parsed = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, parsed, payload


def test_gmail_one_click_post_unsubscribes_with_a_tiny_200_and_no_redirect(env):
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["ana@example.com"])
    assert GMAIL_BODY.__len__() == 26
    status, headers, body = _raw_post(env.api.port, f"/u/{tokens['ana@example.com']}", {
        "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "26",
        "User-Agent": "Mozilla/5.0 (compatible; Google-Unsubscribe)"}, GMAIL_BODY)
    assert status == 200
    assert "location" not in headers and "set-cookie" not in headers
    assert len(body) < 64
    rows = suppressed(env, account_id, "ana@example.com")
    assert [(r["reason"], r["source"]) for r in rows] == [("unsubscribed", "one-click")]
    # The CRM is told by a webhook written in the same transaction.
    [event] = webhooks(env, account_id, "contact.unsubscribed")
    assert event["address"] == "ana@example.com" and event["source"] == "one-click"
    assert event["contact_id"] == contact_id(client, "ana@example.com")


def test_multipart_one_click_and_replays_are_idempotent(env):
    account_id, client = env.account()
    cid, tokens = campaign_with_tokens(env, client, account_id, ["bea@example.com"])
    boundary = "----envoi-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
            f"One-Click\r\n--{boundary}--\r\n").encode()
    url = f"{env.api.url}/u/{tokens['bea@example.com']}"
    for _ in range(3):  # the first POST and two replays
        r = httpx.post(url, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                       follow_redirects=False)
        assert r.status_code == 200 and not r.is_redirect and "set-cookie" not in r.headers
    r = httpx.post(url, content=GMAIL_BODY, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert len(suppressed(env, account_id, "bea@example.com")) == 1
    assert len(webhooks(env, account_id, "contact.unsubscribed")) == 1
    assert actions(env, account_id) == 1
    # The CRM reads who, when, how and which campaign, with filters.
    page = ok(client.get("/v1/suppressions", params={"source": "one-click", "campaign_id": cid}))
    [item] = page["items"]
    assert item["address"] == "bea@example.com" and item["reason"] == "unsubscribed" and item["created_at"]
    assert ok(client.get("/v1/suppressions", params={"source": "page"}))["items"] == []
    assert ok(client.get("/v1/suppressions", params={"address": "BEA@example.com"}))["items"][0]["id"] == item["id"]
    assert ok(client.get("/v1/suppressions", params={"since": "2100-01-01T00:00:00Z"}))["items"] == []


def test_forged_token_is_refused_and_changes_nothing(env):
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["cleo@example.com"])
    token = tokens["cleo@example.com"]
    forged = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    for bad in (forged, "not-a-token", token[:-1]):
        r = httpx.post(f"{env.api.url}/u/{bad}", content=GMAIL_BODY,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert 400 <= r.status_code < 500
        r = httpx.post(f"{env.api.url}/u/{bad}", data={"scope": "all_channels"})
        assert 400 <= r.status_code < 500
    assert suppressed(env, account_id, "cleo@example.com") == []
    assert webhooks(env, account_id, "contact.unsubscribed") == [] and actions(env, account_id) == 0


def test_get_shows_the_page_and_changes_nothing(env):
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["dan@example.com"])
    for _ in range(2):  # a link scanner prefetching, twice
        r = httpx.get(f"{env.api.url}/u/{tokens['dan@example.com']}", headers={"Accept-Language": "fr"})
        assert r.status_code == 200 and "Boutique Test SARL" in r.text and "set-cookie" not in r.headers
        assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert suppressed(env, account_id, "dan@example.com") == [] and actions(env, account_id) == 0
    assert httpx.get(f"{env.api.url}/u/forged").status_code == 404


def test_undo_removes_only_what_that_action_suppressed(env):
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["eve@example.com", "fay@example.com"])
    ok(client.post("/v1/contacts", json={"email": "eve@example.com", "mobile": "+33612345678"}))
    url = f"{env.api.url}/u/{tokens['eve@example.com']}"
    assert httpx.post(url, content=GMAIL_BODY,
                      headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
    r = httpx.post(url, data={"scope": "all_channels"}, headers={"Accept-Language": "en"})
    assert r.status_code == 200 and "Undo" in r.text
    action = undo_action_id(r.text)
    assert action is not None
    assert len(suppressed(env, account_id, "+33612345678", "sms")) == 1
    r = httpx.post(f"{url}/undo", data={"action": str(action)}, headers={"Accept-Language": "en"})
    assert r.status_code == 200 and "again" in r.text
    # The SMS suppression made by this action is gone; the earlier one-click email suppression stays.
    assert suppressed(env, account_id, "+33612345678", "sms") == []
    assert len(suppressed(env, account_id, "eve@example.com")) == 1
    [resub] = webhooks(env, account_id, "contact.resubscribed")
    assert resub["channel"] == "sms"
    # Undo is idempotent, and another recipient's token cannot undo it.
    assert httpx.post(f"{url}/undo", data={"action": str(action)}).status_code == 200
    r = httpx.post(f"{env.api.url}/u/{tokens['fay@example.com']}/undo", data={"action": str(action)})
    assert r.status_code == 404


def test_list_only_unsubscribe_leaves_the_list_and_undo_rejoins_it(env):
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["gus@example.com"])
    cid = contact_id(client, "gus@example.com")
    url = f"{env.api.url}/u/{tokens['gus@example.com']}"
    page = httpx.get(url, headers={"Accept-Language": "fr"}).text
    assert "Newsletter" in page  # the list is named in the option
    r = httpx.post(url, data={"scope": "list"})
    assert r.status_code == 200
    assert count(env, list_members, list_members.c.contact_id == cid) == 0
    assert suppressed(env, account_id, "gus@example.com") == []  # still mailable by other lists
    httpx.post(f"{url}/undo", data={"action": str(undo_action_id(r.text))})
    assert count(env, list_members, list_members.c.contact_id == cid) == 1
    assert count(env, contacts, contacts.c.id == cid) == 1


async def test_mail_to_the_unsubscribe_sub_address_unsubscribes(env, redis_url):
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["hal@example.com"])
    redis = Redis.from_url(redis_url)
    router = inbound_router(env.settings, env.engine, redis)  # the listener's router, as `envoi inbound` builds it
    assert "unsubscribe_mailto" in router.names
    server = await InboundServer(router, port=0).start()
    try:
        local, _, domain = env.settings.unsubscribe_mailbox.partition("@")
        msg = b"From: hal@example.com\r\nTo: x\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n"
        rcpt = f"{local}+{tokens['hal@example.com']}@{domain}"
        await aiosmtplib.send(msg, sender="hal@example.com", recipients=[rcpt], hostname="127.0.0.1",
                              port=server.port, timeout=10)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):  # not our mailbox: refused, never a relay
            await aiosmtplib.send(msg, sender="x@example.com", recipients=["someone@example.org"],
                                  hostname="127.0.0.1", port=server.port, timeout=10)
        # A forged token is accepted at SMTP level and dropped.
        await aiosmtplib.send(msg, sender="x@example.com", recipients=[f"{local}+forged@{domain}"],
                              hostname="127.0.0.1", port=server.port, timeout=10)
        rows = suppressed(env, account_id, "hal@example.com")
        assert [(r["reason"], r["source"]) for r in rows] == [("unsubscribed", "mailto")]
        assert await redis.zscore(keys.suppression_set(account_id, "email"), "hal@example.com") is not None
        assert actions(env, account_id) == 1
    finally:
        await server.stop()
        await redis.aclose()
