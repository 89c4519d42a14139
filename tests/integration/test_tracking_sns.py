"""Issue 4: the Amazon SES notification webhook (SNS over HTTP) with its signature verified against a locally
generated certificate served by a local HTTP server (the allowed certificate host is set by configuration)."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from crm.schema import suppressions
from tests.integration.conftest import ok, setup_campaign
from tracking.sns import string_to_sign


def make_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@contextmanager
def cert_server(pem: bytes) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def signed(key: rsa.RSAPrivateKey, cert_url: str, body: dict[str, Any]) -> dict[str, Any]:
    body = dict(body, SignatureVersion="2", SigningCertURL=cert_url,
                Timestamp=body.get("Timestamp") or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    sig = key.sign(string_to_sign(body), padding.PKCS1v15(), hashes.SHA256())
    return dict(body, Signature=base64.b64encode(sig).decode())


def notification(message: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": "3f0c2f51-0b8b-5b2e-8f4e-1c1e0f6f0a11",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback", "Message": json.dumps(message)}


@pytest.fixture
def sns_env(make_env):
    key, pem = make_cert()
    with cert_server(pem) as (base, hits):
        env = make_env(ENVOI_SNS_CERT_HOST_PATTERN=r"127\.0\.0\.1", ENVOI_SNS_CERT_REQUIRE_HTTPS="false")
        yield env, key, base, hits


def test_signed_ses_bounce_and_complaint_are_recorded_and_forgeries_refused(sns_env):
    env, key, base, hits = sns_env
    account_id, client = env.account()
    cid = setup_campaign(client, ["hard@example.com", "angry@example.com"])
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(env.smtp.messages) == 2, timeout=30)
    sent = {m.rcpt_tos[0]: m for m in env.smtp.messages}
    ref = next(line.split(":", 1)[1].strip() for line in sent["angry@example.com"].data.decode().splitlines()
               if line.lower().startswith("x-envoi-ref:"))
    bounce = {"notificationType": "Bounce", "mail": {"source": sent["hard@example.com"].mail_from,
                                                     "destination": ["hard@example.com"]},
              "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [
                  {"emailAddress": "hard@example.com", "action": "failed", "status": "5.1.1",
                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}}
    complaint = {"notificationType": "Complaint", "mail": {"source": "news@boutique-test.fr",
                                                           "headers": [{"name": "X-Envoi-Ref", "value": ref}]},
                 "complaint": {"complainedRecipients": [{"emailAddress": "angry@example.com"}],
                               "complaintFeedbackType": "abuse"}}
    http = httpx.Client(base_url=env.api.url, timeout=10)
    cert = f"{base}/SimpleNotificationService-test.pem"
    try:
        for message in (bounce, complaint):
            r = http.post("/webhooks/ses", json=signed(key, cert, notification(message)))
            assert r.status_code == 200 and r.json()["recorded"] == 1, r.text
        # Forgeries: a tampered message, a certificate on a host that is not SNS's, a stale message, no JSON.
        good = signed(key, cert, notification(bounce))
        tampered = dict(good, Message=good["Message"].replace("hard@", "other@"))
        foreign = signed(key, cert.replace("127.0.0.1", "localhost"), notification(bounce))
        stale = signed(key, cert, dict(notification(bounce), Timestamp="2020-01-01T00:00:00.000Z"))
        for body in (tampered, foreign, stale):
            assert http.post("/webhooks/ses", json=body).status_code == 403
        assert http.post("/webhooks/ses", content=b"not json").status_code == 400
        # A subscription confirmation is confirmed by fetching its SubscribeURL (same host rule).
        sub = signed(key, cert, {"Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "tok",
                                 "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
                                 "Message": "confirm", "SubscribeURL": f"{base}/confirm?Token=tok"})
        assert http.post("/webhooks/ses", json=sub).json() == {"status": "confirmed"}
        assert "/confirm?Token=tok" in hits
        totals = ok(client.get(f"/v1/campaigns/{cid}/stats/domains"))["totals"]
    finally:
        http.close()
    assert totals["bounced_hard"] == 1 and totals["complaints"] == 1 and totals["delivered"] == 1
    with env.engine.connect() as conn:
        supp = dict(conn.execute(select(suppressions.c.address, suppressions.c.reason)
                                 .where(suppressions.c.account_id == account_id)).all())
    assert supp == {"angry@example.com": "complained"}
