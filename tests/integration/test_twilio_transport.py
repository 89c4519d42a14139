"""The Twilio transport: the official SDK → a local Twilio-shaped server (tests/support/twilio_server.py)."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from twilio.request_validator import RequestValidator

from sender.sms_transport import Outcome, SmsEnvelope, SmsSender
from sender.twilio_errors import classify_rest_error
from sender.twilio_transport import SenderPacer, TwilioSettings, TwilioSettingsError, TwilioSmsTransport
from tests.support.twilio_server import (
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    LocalTwilioHttpClient,
    TwilioTestServer,
    inbound_sms_params,
    sign_twilio_request,
    status_callback_params,
)

SERVICE = SmsSender(messaging_service_sid="MG" + "a" * 32)
ALPHA = SmsSender(from_="MARTIN")
NUMBER = SmsSender(from_="+33757000001")
CALLBACK = "https://envoi.example.fr/twilio/status?m={message_id}"


@pytest.fixture
def server() -> Iterator[TwilioTestServer]:
    with TwilioTestServer() as srv:
        yield srv


def make_transport(server: TwilioTestServer, **overrides: object) -> TwilioSmsTransport:
    settings = TwilioSettings(
        account_sid=TEST_ACCOUNT_SID,
        auth_token=str(overrides.pop("auth_token", TEST_AUTH_TOKEN)),
        status_callback_url=CALLBACK,
        **overrides,  # type: ignore[arg-type]
    )
    return TwilioSmsTransport(settings, http_client=server.http_client())


@pytest.fixture
async def transport(server: TwilioTestServer) -> AsyncIterator[TwilioSmsTransport]:
    t = make_transport(server, rate_per_sender=1000.0)
    yield t
    await t.close()


def env(message_id: int, to: str = "+33612345678", sender: SmsSender = ALPHA, body: str = "Promo") -> SmsEnvelope:
    return SmsEnvelope(message_id, to, body, sender)


async def test_messages_are_created_through_the_sdk(server: TwilioTestServer, transport: TwilioSmsTransport) -> None:
    batch = [
        env(1, body="Boulangerie Martin: -20% ce week-end !\nSTOP au 36180"),
        env(2, "+33698765432", SERVICE, "Maison Léa: ça démarre\nSTOP au 36180"),
        env(3, "+33611111111", NUMBER),
    ]
    results = await transport.send(batch)

    assert [r.message_id for r in results] == [1, 2, 3]
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert [r.text for r in results] == ["queued", "accepted", "queued"]
    recorded = server.requests
    assert {r.form["To"]: r.status for r in recorded} == {
        "+33612345678": 201,
        "+33698765432": 201,
        "+33611111111": 201,
    }
    by_to = {r.form["To"]: r for r in recorded}
    assert by_to["+33612345678"].form["From"] == "MARTIN"
    assert "MessagingServiceSid" not in by_to["+33612345678"].form
    assert by_to["+33698765432"].form["MessagingServiceSid"] == SERVICE.messaging_service_sid
    assert "From" not in by_to["+33698765432"].form
    assert by_to["+33698765432"].form["Body"] == "Maison Léa: ça démarre\nSTOP au 36180"
    assert by_to["+33612345678"].form["StatusCallback"] == "https://envoi.example.fr/twilio/status?m=1"
    assert all(r.auth_user == TEST_ACCOUNT_SID for r in recorded)
    assert all(r.path == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json" for r in recorded)
    assert all(r.sid is not None and r.sid.startswith("SM") and len(r.sid) == 34 for r in results)


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (21610, Outcome.PERMANENT),  # unsubscribed at the carrier
        (21211, Outcome.PERMANENT),  # invalid To
        (21614, Outcome.PERMANENT),  # not a mobile number
        (21611, Outcome.TRANSIENT),  # sender queue overflow
        (30001, Outcome.TRANSIENT),  # queue overflow
        (21408, Outcome.PERMANENT),  # any other 4xx code
    ],
)
async def test_twilio_error_codes_are_classified(
    server: TwilioTestServer, transport: TwilioSmsTransport, code: int, outcome: Outcome
) -> None:
    server.fail_number("+33622222222", code)
    results = await transport.send([env(7, "+33622222222"), env(8, "+33633333333")])
    assert results[0].outcome is outcome
    assert results[0].error_code == code
    assert results[0].http_status == 400
    assert results[0].sid is None
    assert results[1].outcome is Outcome.SENT  # partial failure is per message


async def test_a_number_twilio_finds_invalid_is_a_permanent_21211(transport: TwilioSmsTransport) -> None:
    [result] = await transport.send([env(9, "+0612")])
    assert (result.outcome, result.error_code, result.http_status) == (Outcome.PERMANENT, 21211, 400)
    assert "+0612" in result.text


async def test_429_is_transient_then_the_retry_succeeds(
    server: TwilioTestServer, transport: TwilioSmsTransport
) -> None:
    server.throttle_next(2)
    first = await transport.send([env(i, f"+3361234560{i}") for i in range(3)])
    throttled = [r for r in first if r.outcome is Outcome.TRANSIENT]
    assert len(throttled) == 2
    assert all(r.http_status == 429 and r.error_code == 20429 for r in throttled)
    assert sum(r.outcome is Outcome.SENT for r in first) == 1

    retried = await transport.send([env(r.message_id, f"+3361234560{r.message_id}") for r in throttled])
    assert [r.outcome for r in retried] == [Outcome.SENT, Outcome.SENT]
    assert [r.status for r in server.requests].count(429) == 2
    assert [r.status for r in server.requests].count(201) == 3


async def test_wrong_credentials_are_transient_not_a_recipient_failure(server: TwilioTestServer) -> None:
    transport = make_transport(server, auth_token="wrong")
    try:
        [result] = await transport.send([env(1)])
    finally:
        await transport.close()
    assert (result.outcome, result.http_status, result.error_code) == (Outcome.TRANSIENT, 401, 20003)


async def test_network_errors_are_transient() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = TwilioSettings(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN, timeout=2.0)
    transport = TwilioSmsTransport(settings, http_client=LocalTwilioHttpClient(f"http://127.0.0.1:{port}"))
    try:
        [result] = await transport.send([env(5)])
    finally:
        await transport.close()
    assert result.outcome is Outcome.TRANSIENT
    assert result.http_status is None and result.error_code is None
    assert "network error" in result.text


async def test_per_sender_rate_limit_is_observed_at_the_server(server: TwilioTestServer) -> None:
    rate = 20.0  # messages/s per sender: 10 messages take at least 9 intervals of 50 ms
    transport = make_transport(server, rate_per_sender=rate)
    batch = [env(i, f"+336100000{i:02d}", ALPHA) for i in range(10)]
    batch += [env(100 + i, f"+336200000{i:02d}", SERVICE) for i in range(10)]
    try:
        # Warm-up: open the pooled connections first, so a TCP connect does not skew the first arrival.
        await transport.send([env(900, "+33690000000", ALPHA), env(901, "+33690000001", SERVICE)])
        started = time.monotonic()
        results = await transport.send(batch)
    finally:
        await transport.close()
    elapsed = time.monotonic() - started

    assert all(r.outcome is Outcome.SENT for r in results)
    for sender_field, value in (("From", "MARTIN"), ("MessagingServiceSid", SERVICE.messaging_service_sid)):
        arrivals = sorted(
            r.received_at
            for r in server.requests
            if r.form.get(sender_field) == value and not r.form["To"].startswith("+336900")
        )
        assert len(arrivals) == 10
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert arrivals[-1] - arrivals[0] >= 9 / rate * 0.9
        assert min(gaps) >= 1 / rate * 0.5  # never a burst (network jitter aside)
    # The two senders are paced independently: together they take about as long as one alone.
    assert elapsed < 2 * 9 / rate


async def test_rate_overrides_apply_per_sender(server: TwilioTestServer) -> None:
    transport = make_transport(server, rate_per_sender=1000.0, rate_overrides={"MARTIN": 25.0})
    try:
        await transport.send([env(i, f"+336100000{i:02d}", ALPHA) for i in range(6)])
        await transport.send([env(50 + i, f"+336200000{i:02d}", NUMBER) for i in range(6)])
    finally:
        await transport.close()
    slow = sorted(r.received_at for r in server.requests if r.form.get("From") == "MARTIN")
    fast = sorted(r.received_at for r in server.requests if r.form.get("From") == NUMBER.from_)
    assert slow[-1] - slow[0] >= 5 / 25.0 * 0.9
    assert fast[-1] - fast[0] < 5 / 25.0 * 0.9


async def test_pacer_spaces_starts_per_key_without_holding_permits() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pool = asyncio.Semaphore(1)
    pacer = SenderPacer(lambda key: 2.0, pool, clock=lambda: now[0], sleep=fake_sleep)
    await pacer.acquire("a")
    pacer.release()
    await pacer.acquire("b")  # another key does not wait for "a"
    pacer.release()
    await pacer.acquire("a")  # second start of "a": 0.5 s after the first
    pacer.release()
    assert slept == [0.5]
    assert pool._value == 1  # every permit returned


def test_settings_from_env_name_the_bad_variable() -> None:
    assert TwilioSettings.from_env({}) is None
    with pytest.raises(TwilioSettingsError) as info:
        TwilioSettings.from_env({"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID})
    assert info.value.variable == "TWILIO_AUTH_TOKEN"
    with pytest.raises(TwilioSettingsError) as info:
        TwilioSettings.from_env(
            {"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "t", "ENVOI_SMS_RATE_PER_SENDER": "fast"}
        )
    assert info.value.variable == "ENVOI_SMS_RATE_PER_SENDER"
    settings = TwilioSettings.from_env(
        {"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "s3cret", "ENVOI_SMS_RATE_PER_SENDER": "4"}
    )
    assert settings is not None and settings.rate_for("MARTIN") == 4.0
    assert "s3cret" not in repr(settings)  # the token never reaches logs through a repr


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"messaging_service_sid": "MG123"}, {"from_": "TWELVECHARSX"}, {"from_": "0612345678"}, {"from_": "123"}],
)
def test_invalid_senders_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="sms sender"):
        SmsSender(**kwargs)


def test_signed_callbacks_and_inbound_messages_validate_with_the_sdk() -> None:
    url = "https://envoi.example.fr/twilio/status?m=42"
    params = status_callback_params("SM" + "b" * 32, "undelivered", to="+33612345678", from_="MARTIN", error_code=30005)
    signature = sign_twilio_request(TEST_AUTH_TOKEN, url, params)
    validator = RequestValidator(TEST_AUTH_TOKEN)
    assert validator.validate(url, params, signature)
    assert not validator.validate(url.replace("42", "43"), params, signature)
    assert not RequestValidator("other-token").validate(url, params, signature)

    inbound = inbound_sms_params("+33612345678", "+33757000001", "ARRÊT")
    inbound_url = "https://envoi.example.fr/twilio/inbound"
    assert validator.validate(inbound_url, inbound, sign_twilio_request(TEST_AUTH_TOKEN, inbound_url, inbound))


async def test_server_errors_are_transient(server: TwilioTestServer, transport: TwilioSmsTransport) -> None:
    server.fail_number("+33644444444", 20500, status=503)
    [result] = await transport.send([env(11, "+33644444444")])
    assert (result.outcome, result.http_status, result.error_code) == (Outcome.TRANSIENT, 503, 20500)


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (429, None, Outcome.TRANSIENT),
        (429, 20429, Outcome.TRANSIENT),
        (400, 21611, Outcome.TRANSIENT),
        (400, 30001, Outcome.TRANSIENT),
        (400, 21610, Outcome.PERMANENT),
        (400, 21211, Outcome.PERMANENT),
        (400, 21614, Outcome.PERMANENT),
        (400, None, Outcome.PERMANENT),
        (404, 20404, Outcome.PERMANENT),
        (401, 20003, Outcome.TRANSIENT),
        (500, None, Outcome.TRANSIENT),
        (503, 20500, Outcome.TRANSIENT),
        (None, None, Outcome.TRANSIENT),
    ],
)
def test_error_classification_table(status: int | None, code: int | None, outcome: Outcome) -> None:
    assert classify_rest_error(status, code) is outcome
