"""The main road end to end over HTTP, against a real SMTP server, Redis and the database."""

from __future__ import annotations

import email
import email.policy
import re

from tests.integration.conftest import ok, setup_campaign
from tests.support.smtp_servers import Faults
from tests.support.stack import wait_until


def _parts(raw: bytes) -> tuple[email.message.EmailMessage, str, str]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return msg, text, html  # type: ignore[return-value]


def test_campaign_arrives_with_sender_block_unsubscribe_link_and_headers(make_env):
    env = make_env()
    _, client = env.account()
    emails = [f"user{i}@example.com" for i in range(20)]
    cid = setup_campaign(client, emails)
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(env.smtp.messages) == 20, timeout=30)
        wait_until(lambda: ok(client.get(f"/v1/campaigns/{cid}"))["status"] == "completed", 15,
                   message="campaign completed")
    assert sorted(m.rcpt_tos[0] for m in env.smtp.messages) == sorted(emails)
    for captured in env.smtp.messages:
        msg, text, html = _parts(captured.data)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        lu = msg["List-Unsubscribe"]
        https = re.search(r"<(http[^>]+/u/[A-Za-z0-9_-]+)>", lu)
        assert https and "<mailto:" in lu
        assert msg["Feedback-ID"] and msg["Message-ID"] and msg["Date"]
        assert captured.mail_from.startswith("b.") and captured.mail_from.endswith("@" + env.settings.bounce_domain)
        for body in (text, html):
            assert "Boutique Test SARL" in body
            assert "12 rue de la République" in body or "12 rue de la R&eacute;publique" in body
            assert "+33 4 72 00 00 00" in body
            assert https.group(1) in body
        assert "Se désinscrire" in text and "Se désinscrire" in html
        assert msg["Subject"].startswith("Nouveautés pour Ana")
    view = ok(client.get(f"/v1/campaigns/{cid}"))
    assert view["counters"]["sent"] == 20 and view["counters"]["total"] == 20


def test_contacts_without_consent_are_skipped_and_counted(make_env):
    env = make_env()
    _, client = env.account()
    cid = setup_campaign(client, [f"nc{i}@example.com" for i in range(5)], consent=False)
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v, 15,
                          message="campaign completed")
    assert view["audience"]["skipped"] == {"no_consent": 5}
    assert view["counters"]["total"] == 0
    assert env.smtp.messages == []


def test_transient_451_is_retried_then_delivered(make_env):
    env = make_env(Faults(transient_first=6))
    _, client = env.account()
    emails = [f"t{i}@example.com" for i in range(10)]
    cid = setup_campaign(client, emails)
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(env.smtp.messages) == 10, timeout=30)
        view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v, 15,
                          message="campaign completed")
    assert view["counters"]["sent"] == 10 and view["counters"]["failed"] == 0
    assert sorted(m.rcpt_tos[0] for m in env.smtp.messages) == sorted(emails)


def test_permanent_550_recipients_fail_and_the_others_are_delivered(make_env):
    bad = {"bad1@example.com", "bad2@example.com"}
    env = make_env(Faults(reject_rcpts=frozenset(bad)))
    _, client = env.account()
    emails = [f"g{i}@example.com" for i in range(8)] + sorted(bad)
    cid = setup_campaign(client, emails)
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v, 30,
                          message="campaign completed")
    assert view["counters"]["sent"] == 8 and view["counters"]["failed"] == 2
    assert {m.rcpt_tos[0] for m in env.smtp.messages} == set(emails) - bad


def test_transactional_email_is_sent_once_per_idempotency_key(make_env):
    env = make_env()
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json={
        "legal_name": "X SAS", "postal_address": "1 rue A, 75001 Paris", "phone": "+33 1 00 00 00 00",
        "from_email": "no-reply@x-sas.fr"}))
    body = {"to": "buyer@example.com", "subject": "Votre commande {{ data.order }}", "text": "Merci {{ data.order }}",
            "data": {"order": "A-42"}}
    with env.worker():
        first = client.post("/v1/messages/email", json=body, headers={"Idempotency-Key": "order-42"})
        again = client.post("/v1/messages/email", json=body, headers={"Idempotency-Key": "order-42"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        env.smtp.wait_for(lambda: len(env.smtp.messages) >= 1, timeout=15)
        wait_until(lambda: ok(client.get(f"/v1/messages/{first.json()['id']}"))["status"] == "sent", 10,
                   message="message sent")
    assert len(env.smtp.messages) == 1
    msg = email.message_from_bytes(env.smtp.messages[0].data, policy=email.policy.default)
    assert msg["Subject"] == "Votre commande A-42"
    assert "List-Unsubscribe" not in msg  # transactional: no marketing headers


def test_audience_report_tells_each_exclusion_reason_apart(make_env):
    from crm import ledger
    from crm.domain import Channel, SuppressionReason

    env = make_env()
    account_id, client = env.account()
    emails = [f"a{i}@example.com" for i in range(6)]
    cid = setup_campaign(client, emails)
    reasons = {"a0@example.com": SuppressionReason.UNSUBSCRIBED, "a1@example.com": SuppressionReason.COMPLAINED,
               "a2@example.com": SuppressionReason.DISABLED}
    with env.engine.begin() as conn:
        for address, reason in reasons.items():
            ledger.add_suppression(conn, account_id, Channel.EMAIL, address, reason, "test")
    contact = ok(client.get("/v1/contacts", params={"email": "a3@example.com"}))
    ok(client.post(f"/v1/contacts/{contact['id']}/consents",
                   json={"channel": "email", "status": "withdrawn", "source": "preference centre"}))
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        view = wait_until(lambda: (v := ok(client.get(f"/v1/campaigns/{cid}")))["status"] == "completed" and v, 15,
                          message="campaign completed")
    assert view["audience"]["queued"] == 2
    assert view["audience"]["skipped"] == {"unsubscribed": 1, "complained": 1, "bounced": 1, "consent_withdrawn": 1}
    assert sorted(m.rcpt_tos[0] for m in env.smtp.messages) == ["a4@example.com", "a5@example.com"]
