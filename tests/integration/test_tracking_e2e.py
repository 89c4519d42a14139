"""Issue 4 end to end: a campaign sent through the spine to a real SMTP server, then a DSN and an ARF report
injected into the inbound listener over SMTP, pixel and click requests over HTTP — the campaign's per-domain
counters and the contacts' state change as expected; forged tokens are harmless; /c/ is never an open redirect."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosmtplib
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from crm.schema import address_failures, campaign_links, suppressions
from tests.integration.conftest import Env, ok, setup_campaign
from tests.support.stack import wait_until

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5"
HTML = ('<html><body><p>Bonjour {{ contact.first_name }}</p>'
        '<p><a href="https://shop.example.org/soldes?utm=news&amp;x=1">Soldes</a> '
        '<a href="https://shop.example.org/nouveautes">Nouveautés</a> '
        '<a href="mailto:contact@boutique-test.fr">Écrire</a></p></body></html>')


@contextmanager
def inbound_listener(env: Env) -> Iterator[int]:
    """The inbound SMTP listener as `envoi inbound` builds it, on its own event loop in a thread."""
    from envoi.composition import inbound_router, make_redis
    from tracking.inbound import InboundServer

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        redis = make_redis(env.settings)
        server = await InboundServer(inbound_router(env.settings, env.engine, redis), "127.0.0.1", 0).start()
        state["port"], state["stop"] = server.port, asyncio.Event()
        started.set()
        await state["stop"].wait()
        await server.stop()
        await redis.aclose()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert started.wait(10), "inbound listener did not start"
    try:
        yield int(state["port"])
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)


def smtp_send(port: int, mail_from: str, rcpt: str, data: bytes) -> None:
    """Over SMTP with aiosmtplib; `mail_from` "" is the null reverse-path of a DSN (RFC 3464 §2)."""

    async def go() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False) as smtp:
            await smtp.sendmail(mail_from, [rcpt], data)

    asyncio.run(go())


def dsn(verp: str, recipient: str, original_headers: str) -> bytes:
    """An RFC 3464 report as Postfix sends it: 5.1.1 user unknown."""
    return (
        f"From: MAILER-DAEMON@mx.example.com\r\nTo: {verp}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\r\n"
        "--B1\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: host mx.example.com said: 550 5.1.1 <{recipient}>: Recipient address rejected: "
        "User unknown in virtual mailbox table\r\n\r\n"
        "--B1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n\r\n"
        f"--B1\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers}\r\n--B1--\r\n"
    ).encode()


def arf(recipient: str | None, original_headers: str) -> bytes:
    """An RFC 5965 feedback report; `recipient` None: redacted, as many ISPs do (RFC 6590)."""
    rcpt = f"Original-Rcpt-To: {recipient}\r\n" if recipient else ""
    return (
        "From: feedback@fbl.example.net\r\nTo: fbl@envoi.localhost\r\nSubject: complaint about message\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"F1\"\r\n\r\n"
        "--F1\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
        "--F1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: TestFBL/1.0\r\n"
        f"Version: 1\r\n{rcpt}\r\n"
        f"--F1\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers}\r\n--F1--\r\n"
    ).encode()


def headers_of(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode()


def html_of(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return str(msg.get_body(("html",)).get_content())  # type: ignore[union-attr]


def bad_tokens(http: httpx.Client, base: str) -> dict[str, float]:
    text = http.get(f"{base}/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(
        r'^envoi_tracking_bad_tokens_total\{endpoint="(\w+)"\} ([\d.e+]+)$', text, re.MULTILINE)}


def stats(client: httpx.Client, cid: int, source: str = "counters") -> dict[str, Any]:
    return ok(client.get(f"/v1/campaigns/{cid}/stats/domains", params={"source": source}))


def by_domain(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["domain"]: row for row in doc["domains"]}


def test_feedback_and_engagement_land_on_the_campaign_domains_and_contacts(make_env):
    env = make_env(ENVOI_TRACKING_FAST_SECONDS="0.001")
    account_id, client = env.account()
    emails = ["ana@example.com", "bob@example.com", "cle@mail.example.co.uk", "dan@mail.example.co.uk"]
    cid = setup_campaign(client, emails, html=HTML)
    worker = env.worker()
    env.stack.enter_context(worker)  # runs until the end: it also records the opens and clicks (a chore)
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    env.smtp.wait_for(lambda: len(env.smtp.messages) == 4, timeout=30)
    wait_until(lambda: ok(client.get(f"/v1/campaigns/{cid}"))["status"] == "completed", 15,
               message="campaign completed")
    sent = {m.rcpt_tos[0]: m for m in env.smtp.messages}

    # Links were rewritten at render time, the pixel inserted, the unsubscribe link and mailto: left alone.
    html = html_of(sent["ana@example.com"].data)
    clicks = re.findall(r'href="(http://[^"]+/c/[A-Za-z0-9_-]+)"', html)
    pixel = re.search(r'<img src="(http://[^"]+/o/[A-Za-z0-9_-]+)"', html)
    assert len(clicks) == 2 and pixel is not None
    assert "shop.example.org" not in html and "mailto:contact@boutique-test.fr" in html and "/u/" in html
    with env.engine.connect() as conn:
        table = dict(conn.execute(select(campaign_links.c.url, campaign_links.c.idx)
                                  .where(campaign_links.c.campaign_id == cid)).all())
    assert set(table) == {"https://shop.example.org/soldes?utm=news&x=1", "https://shop.example.org/nouveautes"}

    with inbound_listener(env) as port:
        # A DSN at bob's VERP return-path: hard bounce (5.1.1) → event, counters, 3-failure rule.
        bob = sent["bob@example.com"]
        smtp_send(port, "", bob.mail_from, dsn(bob.mail_from, "bob@example.com", headers_of(bob.data)))
        # An ARF report at the feedback mailbox, recipient redacted: found through the returned X-Envoi-Ref.
        cle = sent["cle@mail.example.co.uk"]
        smtp_send(port, "feedback@fbl.example.net", env.settings.feedback_mailbox, arf(None, headers_of(cle.data)))
        # The same report again is counted once.
        smtp_send(port, "feedback@fbl.example.net", env.settings.feedback_mailbox, arf(None, headers_of(cle.data)))
        # Mail for anyone else is refused at RCPT: not an open relay.
        try:
            smtp_send(port, "x@example.net", "someone@elsewhere.example", b"Subject: hi\r\n\r\nhi\r\n")
            refused = False
        except aiosmtplib.SMTPRecipientsRefused:
            refused = True
        assert refused

    to = httpx.Client(timeout=10)
    # The links name ENVOI_PUBLIC_URL; the test API listens on an ephemeral port: keep the paths.
    pixel_url = env.api.url + "/o/" + pixel.group(1).rsplit("/o/", 1)[1]
    clicks = [env.api.url + "/c/" + c.rsplit("/c/", 1)[1] for c in clicks]
    # Opens: a browser (human), twice (unique per message), and an HTTP library (a scanner: machine).
    for ua in (BROWSER, BROWSER, "python-httpx/0.28"):
        r = to.get(pixel_url, headers={"User-Agent": ua})
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and len(r.content) == 43
        assert r.headers["cache-control"].startswith("no-store")
    # Clicks: a browser GET follows to the campaign's own URL; a HEAD is a link scanner.
    r = to.get(clicks[0], headers={"User-Agent": BROWSER}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example.org/soldes?utm=news&x=1"
    assert to.head(clicks[1], headers={"User-Agent": BROWSER}).status_code == 302
    # Forged, truncated and foreign tokens: a GIF anyway for the pixel, a 404 page for the click, and a metric.
    token = pixel.group(1).rsplit("/", 1)[1]
    base = env.api.url
    before = bad_tokens(to, base)
    for bad in ("AAAA", token[:-3], token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], "x" * 500):
        r = to.get(f"{base}/o/{bad}")
        assert r.status_code == 200 and len(r.content) == 43
        assert to.get(f"{base}/c/{bad}", follow_redirects=False).status_code == 404
    assert to.get(f"{base}/c/{token}", follow_redirects=False).status_code == 404  # an open token is not a click
    after = bad_tokens(to, base)
    assert after["open"] - before.get("open", 0) == 4 and after["click"] - before.get("click", 0) == 5
    # dan unsubscribes in one click (RFC 8058, issue 5's endpoint): counted on his domain.
    lu = email.message_from_bytes(sent["dan@mail.example.co.uk"].data, policy=email.policy.default)["List-Unsubscribe"]
    unsub = re.search(r"<https?://[^>]+(/u/[A-Za-z0-9_-]+)>", str(lu))
    assert unsub is not None
    r = to.post(env.api.url + unsub[1], content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code < 300, r.text
    to.close()

    def engaged() -> dict[str, Any] | None:
        doc = stats(client, cid)
        t = doc["totals"]
        return doc if t["opens_human"] == 1 and t["opens_machine"] == 1 and t["clicks_scanner"] == 1 else None

    doc = wait_until(engaged, 10, message="opens and clicks counted")
    rows = by_domain(doc)
    assert set(rows) == {"example.com", "example.co.uk"}
    com, uk = rows["example.com"], rows["example.co.uk"]
    assert (com["sent"], com["hard_bounces"], com["delivered"], com["complaints"]) == (2, 1, 1, 0)
    assert (com["opens_human"], com["opens_machine"], com["opens_total"]) == (1, 1, 3)
    assert (com["clicks"], com["clicks_scanner"]) == (1, 1)
    assert (uk["sent"], uk["delivered"], uk["complaints"], uk["hard_bounces"], uk["unsubscribes"]) == (2, 2, 1, 0, 1)
    assert com["unsubscribes"] == 0

    # The ledger (SQL events) says the same as the Redis counters: reconciliation finds nothing to repair.
    ledger = stats(client, cid, "ledger")
    assert ledger["totals"] == doc["totals"] and ledger["domains"] == doc["domains"]

    # The contacts' state: the complainer is suppressed for the account at once; bob's hard bounce is counted
    # by the 3-failure rule (one failure: not disabled yet).
    with env.engine.connect() as conn:
        supp = dict(conn.execute(select(suppressions.c.address, suppressions.c.reason)
                                 .where(suppressions.c.account_id == account_id)).all())
        failures = {r.address: r for r in conn.execute(select(address_failures)
                                                       .where(address_failures.c.account_id == account_id))}
    assert supp == {"cle@mail.example.co.uk": "complained", "dan@mail.example.co.uk": "unsubscribed"}
    assert failures["bob@example.com"].consecutive == 1 and failures["bob@example.com"].disabled_at is None


def test_click_redirects_only_to_the_campaigns_own_links(make_env):
    """Property: whatever the token, /c/ answers 404 or a 302 to a URL of the campaign's link table."""
    env = make_env()
    _, client = env.account()
    cid = setup_campaign(client, ["p@example.com"], html=HTML)
    with env.worker():
        ok(client.post(f"/v1/campaigns/{cid}/send"))
        env.smtp.wait_for(lambda: len(env.smtp.messages) == 1, timeout=30)
    html = html_of(env.smtp.messages[0].data)
    tokens = [u.rsplit("/", 1)[1] for u in re.findall(r'href="(http://[^"]+/c/[A-Za-z0-9_-]+)"', html)]
    allowed = {"https://shop.example.org/soldes?utm=news&x=1", "https://shop.example.org/nouveautes"}
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    http = httpx.Client(base_url=env.api.url, timeout=10)

    def check(token: str) -> None:
        r = http.get(f"/c/{token}", follow_redirects=False)
        assert r.status_code in (302, 404), r.status_code
        if r.status_code == 302:
            assert r.headers["location"] in allowed

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(
        st.text(alphabet=alphabet, min_size=1, max_size=120),
        st.tuples(st.sampled_from(tokens), st.integers(0, 75), st.sampled_from(alphabet))
        .map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1:]),
    ))
    def prop(token: str) -> None:
        check(token)

    try:
        prop()
        for t in tokens:  # the genuine tokens do redirect, to the campaign's own URLs
            r = http.get(f"/c/{t}", follow_redirects=False)
            assert r.status_code == 302 and r.headers["location"] in allowed
    finally:
        http.close()


def test_without_per_person_tracking_only_aggregates_are_kept_and_stats_reconcile(make_env):
    import redis as redis_sync
    from click.testing import CliRunner
    from sqlalchemy import update

    from crm import keys
    from crm.schema import accounts, events
    from envoi.cli import main
    from tests.support.stack import settings_env

    env = make_env(ENVOI_TRACKING_FAST_SECONDS="0.001")
    account_id, client = env.account()
    with env.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == account_id)
                     .values(settings={"tracking_per_person": False}))
    cid = setup_campaign(client, ["x@example.com", "y@example.com"], html=HTML)
    env.stack.enter_context(env.worker())
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    env.smtp.wait_for(lambda: len(env.smtp.messages) == 2, timeout=30)
    pixels = {re.search(r'/o/([A-Za-z0-9_-]+)"', html_of(m.data))[1] for m in env.smtp.messages}  # type: ignore[index]
    assert len(pixels) == 1  # the token names the campaign only: the same for every recipient
    http = httpx.Client(base_url=env.api.url, timeout=10)
    for _ in range(3):
        assert http.get(f"/o/{next(iter(pixels))}", headers={"User-Agent": BROWSER}).status_code == 200
    http.close()
    doc = wait_until(lambda: (d := stats(client, cid))["totals"]["opens_total"] == 3 and d, 10,
                     message="aggregate opens counted")
    assert by_domain(doc)["-"]["opens_human"] == 3 and by_domain(doc)["example.com"]["opens_human"] == 0
    with env.engine.connect() as conn:
        rows = conn.execute(select(events.c.message_id, events.c.contact_id, events.c.recipient_domain)
                            .where(events.c.type == "opened")).all()
    assert rows and all(r == (None, None, None) for r in rows)  # nothing about a person

    # `envoi campaigns stats` prints the table; reconciliation finds a tampered counter and repairs it.
    runner = CliRunner()
    cli_env = settings_env(env.settings)
    wait_until(lambda: stats(client, cid)["totals"]["sent"] == 2, 10, message="sent counted")
    out = runner.invoke(main, ["campaigns", "stats", str(cid)], env=cli_env)
    assert out.exit_code == 0, out.output
    lines = [line.split() for line in out.output.splitlines()]
    assert lines[0][:4] == ["domain", "provider", "sent", "delivered"]
    # example.com has no known provider: its row starts domain, sent, delivered, deferred, hard, soft, complaints
    assert next(c for c in lines if c[0] == "example.com")[1:4] == ["2", "2", "0"]
    assert next(c for c in lines if c[0] == "-")[1:3] == ["0", "0"]  # the aggregate-only row
    assert runner.invoke(main, ["campaigns", "reconcile-stats", str(cid)], env=cli_env).exit_code == 0
    r = redis_sync.Redis.from_url(env.settings.redis_url)
    r.hincrby(keys.campaign_domain_counters(cid), "sent|example.com", 5)
    bad = runner.invoke(main, ["campaigns", "reconcile-stats", str(cid)], env=cli_env)
    assert bad.exit_code == 1 and "counters=       7 ledger=       2" in bad.output
    assert runner.invoke(main, ["campaigns", "reconcile-stats", str(cid), "--repair"], env=cli_env).exit_code == 0
    assert runner.invoke(main, ["campaigns", "reconcile-stats", str(cid)], env=cli_env).exit_code == 0
    assert int(r.hget(keys.campaign_domain_counters(cid), "sent|example.com") or 0) == 2
    r.close()


def test_an_open_seconds_after_the_hand_off_is_counted_as_a_machine_open(make_env):
    from tests.support.dns_server import DnsServer

    dns_srv = DnsServer().start()
    dns_srv.zone.add("example.com", "MX", "10 example-com.mail.protection.outlook.com.")
    env = make_env(ENVOI_TRACKING_FAST_SECONDS="60",  # anything within a minute of the hand-off is a gateway
                   ENVOI_DNS_NAMESERVERS=f"127.0.0.1:{dns_srv.port}")
    env.stack.callback(dns_srv.stop)
    _, client = env.account()
    cid = setup_campaign(client, ["fast@example.com"], html=HTML)
    env.stack.enter_context(env.worker())
    ok(client.post(f"/v1/campaigns/{cid}/send"))
    env.smtp.wait_for(lambda: len(env.smtp.messages) == 1, timeout=30)
    wait_until(lambda: stats(client, cid)["totals"]["sent"] == 1, 10, message="sent counted")
    token = re.search(r'/o/([A-Za-z0-9_-]+)"', html_of(env.smtp.messages[0].data))
    assert token is not None
    assert httpx.get(f"{env.api.url}/o/{token[1]}", headers={"User-Agent": BROWSER}).status_code == 200
    doc = wait_until(lambda: (d := stats(client, cid))["totals"]["opens_total"] == 1 and d, 10, message="open")
    assert (doc["totals"]["opens_machine"], doc["totals"]["opens_human"]) == (1, 0)
    assert stats(client, cid, "ledger")["totals"] == doc["totals"]
    # With ?mx=true the domain is grouped under the provider its MX names (Microsoft 365 here).
    assert by_domain(doc)["example.com"]["provider"] is None
    grouped = ok(client.get(f"/v1/campaigns/{cid}/stats/domains", params={"mx": "true"}))
    assert by_domain(grouped)["example.com"]["provider"] == "microsoft"
    assert grouped["providers"]["microsoft"]["sent"] == 1

