"""SMS end to end (issue 6): API → fan-out → dispatcher → official Twilio SDK → local Twilio-shaped server; then
Twilio-signed status callbacks and inbound STOP/START; quiet hours on a controllable clock; segment counting."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from crm.db import as_utc
from crm.schema import events, messages, sms_messages, suppressions
from sender.sms_capture import read_captured
from tests.integration.conftest import SENDER
from tests.integration.sms_support import (
    SMS_FROM,
    SMS_SETTINGS,
    Clock,
    SmsThreadWorker,
    ok,
    post_signed,
    setup_sms_campaign,
)
from tests.support.stack import wait_until
from tests.support.twilio_server import TwilioTestServer, inbound_sms_params, status_callback_params

PARIS = ZoneInfo("Europe/Paris")
PUBLIC = "https://envoi.example.fr"  # what Twilio calls; the API listens elsewhere (reverse proxy)
TWILIO_ENV = {"TWILIO_ACCOUNT_SID": "AC" + "0" * 31 + "1", "TWILIO_AUTH_TOKEN": "test-auth-token-0123456789abcdef",
              "ENVOI_PUBLIC_URL": PUBLIC}
TUESDAY_10H = datetime(2026, 3, 17, 10, 0, tzinfo=PARIS)


@pytest.fixture
def twilio() -> Iterator[TwilioTestServer]:
    with TwilioTestServer() as srv:
        yield srv


def rows(engine: Any, campaign_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        out = [dict(r._mapping) for r in conn.execute(
            select(messages).where(messages.c.campaign_id == campaign_id).order_by(messages.c.id))]
    for r in out:  # SQLite gives naive UTC datetimes back
        for k in ("next_attempt_at", "updated_at", "queued_at"):
            r[k] = as_utc(r[k])
    return out


def statuses(engine: Any, campaign_id: int) -> dict[str, str]:
    return {r["recipient"]: r["status"] for r in rows(engine, campaign_id)}


def sms_suppressed(engine: Any, account_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        return {a: s for a, s in conn.execute(select(suppressions.c.address, suppressions.c.source).where(
            suppressions.c.account_id == account_id, suppressions.c.channel == "sms"))}


def test_sms_campaign_end_to_end_with_errors_429_callbacks_and_replies(make_env: Any, twilio: TwilioTestServer
                                                                      ) -> None:
    env = make_env(**TWILIO_ENV)
    account_id, client = env.account()
    good, invalid, later, no_consent, stopped = (f"+3361200000{i}" for i in range(1, 6))
    twilio.fail_number(invalid, 21211)
    twilio.fail_number(stopped, 21610)  # opted out at the carrier: failed here and suppressed
    twilio.throttle_next(1)  # the first request gets Twilio's 429: deferred, then sent on retry
    cid, camp = setup_sms_campaign(client, [good, invalid, later, no_consent, stopped], sender=SENDER,
                                   text="Bonjour {{ contact.first_name }}, -20% ce week-end !",
                                   consent=[True, True, True, False, True])
    assert camp["sms"]["encoding"] == "GSM-7" and camp["sms"]["segments"] == 1
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    with SmsThreadWorker(env.settings, env.engine, twilio, Clock(TUESDAY_10H)):
        wait_until(lambda: ok(client.get(f"/v1/campaigns/{cid}"))["status"] == "completed", 20,
                   message="sms campaign completed")
    view = ok(client.get(f"/v1/campaigns/{cid}"))
    assert view["audience"] == {"queued": 4, "skipped": {"no_consent": 1}}
    assert statuses(env.engine, cid) == {good: "sent", invalid: "failed", later: "sent", stopped: "failed"}
    by_to = {r["recipient"]: r for r in rows(env.engine, cid)}
    assert (by_to[invalid]["last_code"], by_to[stopped]["last_code"]) == (21211, 21610)
    assert sorted(r.status for r in twilio.requests) == [201, 201, 400, 400, 429]
    assert sms_suppressed(env.engine, account_id) == {stopped: "twilio:21610"}
    sent = [r for r in twilio.requests if r.status == 201]
    first = next(r for r in sent if r.form["To"] == good)
    assert first.form["From"] == SMS_FROM
    assert first.form["Body"] == "Boutique Test: Bonjour Ana0, -20% ce week-end !\nSTOP au 36180"
    assert first.form["StatusCallback"] == f"{PUBLIC}/twilio/status?m={by_to[good]['id']}"
    with env.engine.connect() as conn:
        handed = {r.message_id: r for r in conn.execute(select(sms_messages))}
    sids = {mid: r.sid for mid, r in handed.items()}
    assert set(sids) == {by_to[good]["id"], by_to[later]["id"]}
    assert {(r.encoding, r.segments, r.delivery_status) for r in handed.values()} == {("GSM-7", 1, "queued")}
    assert all(sid and sid.startswith("SM") for sid in sids.values())

    # Status callbacks, signed exactly as Twilio signs them (URL as configured publicly + sorted params).
    def callback(to: str, status: str, code: int | None = None, token: str | None = None) -> int:
        mid = by_to[to]["id"]
        params = status_callback_params(sids[mid], status, to=to, from_=SMS_FROM, error_code=code)
        extra = {"token": token} if token else {}
        return post_signed(env.api.url, PUBLIC, f"/twilio/status?m={mid}", params, **extra).status_code

    assert callback(good, "sent") == 204
    assert callback(good, "delivered") == 204
    assert callback(good, "delivered") == 204  # Twilio may repeat: counted once
    assert callback(later, "undelivered", 30005, token="forged-token") == 403  # forged: refused, no change
    assert statuses(env.engine, cid)[later] == "sent"
    assert callback(later, "undelivered", 30005) == 204
    assert statuses(env.engine, cid)[later] == "failed"
    with env.engine.connect() as conn:
        evs = [(e.message_id, e.type, e.data) for e in conn.execute(
            select(events).where(events.c.campaign_id == cid, events.c.type.in_(["delivered", "bounced"]))
            .order_by(events.c.id))]
    assert [(m, t) for m, t, _ in evs] == [(by_to[good]["id"], "delivered"), (by_to[later]["id"], "bounced")]
    assert evs[1][2]["class"] == "recipient" and evs[1][2]["code"] == 30005

    # Inbound replies: " arrêt " suppresses for this account; START lifts it (consent granted on record), but
    # not for a number without SMS consent; a forged STOP changes nothing.
    forged = inbound_sms_params(no_consent, SMS_FROM, "STOP")
    assert post_signed(env.api.url, PUBLIC, "/twilio/inbound", forged, token="nope").status_code == 403
    for number in (good, no_consent):
        r = post_signed(env.api.url, PUBLIC, "/twilio/inbound", inbound_sms_params(number, SMS_FROM, "  arrêt "))
        assert r.status_code == 200 and "<Response>" in r.text
    assert sms_suppressed(env.engine, account_id) == {good: "sms:keyword", no_consent: "sms:keyword",
                                                      stopped: "twilio:21610"}
    for number in (good, no_consent):
        post_signed(env.api.url, PUBLIC, "/twilio/inbound", inbound_sms_params(number, SMS_FROM, "Start"))
    assert sms_suppressed(env.engine, account_id) == {no_consent: "sms:keyword", stopped: "twilio:21610"}
    # A late "failed" after "delivered" is stale: the delivered message stays delivered and sent.
    assert callback(good, "failed", 30007) == 204
    assert statuses(env.engine, cid)[good] == "sent"


def test_quiet_hours_hold_over_the_weekend_and_a_public_holiday_then_send(make_env: Any, twilio: TwilioTestServer
                                                                         ) -> None:
    env = make_env(**TWILIO_ENV)
    _, client = env.account()
    # Saturday 28 March 2026, 20:15 in Paris: closed until Monday 08:00 — which is CEST (06:00 UTC), the clocks
    # go forward on Sunday 29 March.
    clock = Clock(datetime(2026, 3, 28, 20, 15, tzinfo=PARIS))
    mobiles = [f"+336120001{i:02d}" for i in range(12)]
    cid, _ = setup_sms_campaign(client, mobiles, sender=SENDER, text="Soldes : -30% chez nous")
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    with SmsThreadWorker(env.settings, env.engine, twilio, clock) as w:
        # A transactional SMS is exempt from quiet hours: it goes at once.
        tx = ok(client.post("/v1/messages/sms", json={"to": "+33699000001", "body": "Votre code : 4242"}))
        twilio.wait_for_requests(1)
        wait_until(lambda: ok(client.get(f"/v1/messages/{tx['id']}"))["status"] == "sent", 10, message="tx sent")
        wait_until(lambda: set(statuses(env.engine, cid).values()) == {"deferred"}
                   and len(statuses(env.engine, cid)) == 12, 15, message="campaign held")
        wait_until(lambda: w.retry_depth() == 12, 10, message="on the retry schedule")
        held = rows(env.engine, cid)
        assert {r["next_attempt_at"].isoformat() for r in held} == {"2026-03-30T06:00:00+00:00"}
        assert {r["attempts"] for r in held} == {0}  # holding is not an attempt
        assert all(r["last_error"].startswith("quiet hours until 2026-03-30T08:00:00+02:00") for r in held)
        assert len(twilio.requests) == 1  # nothing of the campaign went out

        # Monday 07:59: due again but still closed → held again, nothing sent.
        clock.set(datetime(2026, 3, 30, 7, 59, tzinfo=PARIS))
        assert w.move_due(3 * 86400) == 12
        first_hold = max(r["updated_at"] for r in held)
        wait_until(lambda: all(r["updated_at"] > first_hold for r in rows(env.engine, cid))
                   and w.retry_depth() == 12, 10, message="re-held")
        assert set(statuses(env.engine, cid).values()) == {"deferred"} and len(twilio.requests) == 1

        # Monday 08:00: the window opens, all twelve are sent, none dropped.
        clock.set(datetime(2026, 3, 30, 8, 0, tzinfo=PARIS))
        assert w.move_due(3 * 86400) == 12
        wait_until(lambda: set(statuses(env.engine, cid).values()) == {"sent"}, 15, message="sent on Monday")
        assert len(twilio.requests) == 13
        print("\nquiet hours (weekend): 12 held Sat 20:15 → 12 still held Mon 07:59 → 12 sent Mon 08:00, 0 dropped")

        # Easter Saturday 4 April 2026, 20:15: Sunday then Easter Monday (a French public holiday) are closed.
        clock.set(datetime(2026, 4, 4, 20, 15, tzinfo=PARIS))
        more = [f"+336120002{i:02d}" for i in range(5)]
        cid2, _ = setup_sms_campaign(client, more, sender=SENDER, text="Joyeuses Pâques !")
        ok(client.post(f"/v1/campaigns/{cid2}/send"))
        wait_until(lambda: len(statuses(env.engine, cid2)) == 5
                   and set(statuses(env.engine, cid2).values()) == {"deferred"}, 15, message="easter held")
        wait_until(lambda: w.retry_depth() == 5, 10, message="on the retry schedule")
        easter = rows(env.engine, cid2)
        assert {r["next_attempt_at"].isoformat() for r in easter} == {"2026-04-07T06:00:00+00:00"}
        first_hold = max(r["updated_at"] for r in easter)
        clock.set(datetime(2026, 4, 6, 10, 0, tzinfo=PARIS))  # Easter Monday, 10:00: still closed
        assert w.move_due(5 * 86400) == 5
        wait_until(lambda: all(r["last_error"].startswith("quiet hours until 2026-04-07T08:00")
                               and r["updated_at"] > first_hold for r in rows(env.engine, cid2)), 10,
                   message="re-held on Easter Monday")
        wait_until(lambda: w.retry_depth() == 5, 10, message="back on the retry schedule")
        assert len(twilio.requests) == 13
        clock.set(datetime(2026, 4, 7, 8, 0, tzinfo=PARIS))
        assert w.move_due(5 * 86400) == 5
        wait_until(lambda: set(statuses(env.engine, cid2).values()) == {"sent"}, 15, message="sent on Tuesday")
        assert len(twilio.requests) == 18
        print("quiet hours (Easter): 5 held Sat 20:15 → 5 still held Easter Monday 10:00 → 5 sent Tue 08:00")


@pytest.mark.parametrize(("body", "encoding", "segments"), [
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("é" * 160, "GSM-7", 1),  # é è à ù are in the GSM 03.38 alphabet
    ("€" * 80, "GSM-7", 1),  # extension table: 2 septets each
    ("€" * 81, "GSM-7", 2),
    ("ç" + "a" * 69, "UCS-2", 1),  # one ç (not GSM) switches the whole SMS to UCS-2: 70 per SMS
    ("Fête " + "a" * 66, "UCS-2", 2),  # 71 UTF-16 units: 2 parts of 67
    ("👍" * 35, "UCS-2", 1),  # surrogate pairs: 2 units each
])
def test_segment_counting_through_the_api(make_env: Any, body: str, encoding: str, segments: int) -> None:
    env = make_env()
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    ok(client.put("/v1/account/sms-settings", json=SMS_SETTINGS))
    r = ok(client.post("/v1/messages/sms", json={"to": "06 12 34 56 78", "body": body}))
    assert (r["to"], r["encoding"], r["segments"]) == ("+33612345678", encoding, segments)


def test_campaign_creation_reports_segments_and_refuses_over_the_limit(make_env: Any) -> None:
    env = make_env()
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    lst = ok(client.post("/v1/lists", json={"name": "L"}))
    tpl = ok(client.post("/v1/templates", json={"name": "T", "subject": "s", "text": "Ça commence, ça dure !"}))
    create = {"name": "C", "list_id": lst["id"], "template_id": tpl["id"], "channel": "sms"}
    r = client.post("/v1/campaigns", json=create)  # no SMS sender yet
    assert r.status_code == 422 and r.json()["field"] == "sms.from"
    ok(client.put("/v1/account/sms-settings", json=SMS_SETTINGS))
    camp = ok(client.post("/v1/campaigns", json=create))
    assert camp["channel"] == "sms"
    assert camp["sms"]["preview"] == "Boutique Test: Ça commence, ça dure !\nSTOP au 36180"
    # "Ç" is GSM 03.38, the lowercase "ç" is not: the whole SMS is UCS-2 (52 units, one segment).
    assert (camp["sms"]["encoding"], camp["sms"]["segments"], camp["sms"]["non_gsm"]) == ("UCS-2", 1, ["ç"])
    long_tpl = ok(client.post("/v1/templates", json={"name": "L", "subject": "s", "text": "ç" + "x" * 200}))
    ok(client.put("/v1/account/sms-settings", json={**SMS_SETTINGS, "max_segments": 2}))
    r = client.post("/v1/campaigns", json={**create, "template_id": long_tpl["id"]})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["field"] == "template_id" and problem["segments"] == 4 and problem["max_segments"] == 2
    assert problem["encoding"] == "UCS-2"
    # The account may narrow the platform (limits, window), never widen it.
    r = client.put("/v1/account/sms-settings", json={**SMS_SETTINGS, "window": {"start": "07:00"}})
    assert r.status_code == 422 and r.json()["field"] == "sms.window.start"


def test_single_sms_idempotency_key(make_env: Any) -> None:
    env = make_env()
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    ok(client.put("/v1/account/sms-settings", json=SMS_SETTINGS))
    body = {"to": "+33612345678", "body": "Votre colis arrive demain"}
    first = client.post("/v1/messages/sms", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/messages/sms", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == first.json()["id"]
    other = client.post("/v1/messages/sms", json={**body, "body": "autre"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422
    bad = client.post("/v1/messages/sms", json={**body, "to": "+33 4 72 00 00 00"})  # a landline
    assert bad.status_code == 422 and "to" in bad.text


def test_throughput_is_shaped_per_sender_without_duplicates(make_env: Any, twilio: TwilioTestServer) -> None:
    # 30 SMS from one sender at 20/s: the road hands each batch only what the sender may start soon and puts the
    # rest back on the retry schedule, so no batch outlives the reclaim idle time (3 s here) and none is sent twice.
    env = make_env(**TWILIO_ENV)
    _, client = env.account()
    mobiles = [f"+336120003{i:02d}" for i in range(30)]
    cid, _ = setup_sms_campaign(client, mobiles, sender=SENDER, text="Offre du jour")
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    with SmsThreadWorker(env.settings, env.engine, twilio, Clock(TUESDAY_10H), rate_per_sender=20.0):
        wait_until(lambda: ok(client.get(f"/v1/campaigns/{cid}"))["status"] == "completed", 30,
                   message="shaped campaign completed")
    starts = sorted(r.received_at for r in twilio.requests)
    assert sorted(r.form["To"] for r in twilio.requests) == mobiles  # each exactly once
    assert starts[-1] - starts[0] >= 29 / 20 * 0.9  # never faster than 20/s for this sender


def test_without_twilio_credentials_sms_go_to_the_capture_file(make_env: Any) -> None:
    env = make_env()  # no TWILIO_ACCOUNT_SID: the composition root picks the capture file (make run)
    _, client = env.account()
    ok(client.put("/v1/account/sender-profile", json=SENDER))
    ok(client.put("/v1/account/sms-settings", json=SMS_SETTINGS))
    sent = ok(client.post("/v1/messages/sms", json={"to": "+33612345678", "body": "Votre code : ç42"}))
    outbox = env.settings.var_dir / "sms-outbox.ndjson"
    with env.worker():
        wait_until(lambda: ok(client.get(f"/v1/messages/{sent['id']}"))["status"] == "sent", 15, message="sent")
    [line] = read_captured(outbox)
    assert (line["message_id"], line["to"], line["from"], line["body"]) == (
        sent["id"], "+33612345678", SMS_FROM, "Votre code : ç42")
    assert (line["encoding"], line["segments"]) == ("UCS-2", 1)
