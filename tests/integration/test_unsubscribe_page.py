"""The unsubscribe page in headless Chromium with JavaScript disabled: French and English, the language switch,
unsubscribe with the keyboard, undo. `ENVOI_UPDATE_SCREENSHOTS=1` refreshes docs/unsubscribe-*.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.integration.unsubscribe_support import actions, campaign_with_tokens, suppressed

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_DOCS = os.environ.get("ENVOI_UPDATE_SCREENSHOTS") == "1"  # refresh docs/unsubscribe-*.png deliberately


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (Debian package chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _context(browser: Browser, locale: str, mobile: bool = False):  # type: ignore[no-untyped-def]
    size = {"width": 390, "height": 844} if mobile else {"width": 1000, "height": 760}
    return browser.new_context(java_script_enabled=False, locale=locale, viewport=size,
                               extra_http_headers={"Accept-Language": locale})


def test_french_page_unsubscribes_with_the_keyboard_and_undo_resubscribes(make_env, browser, tmp_path):
    shots = DOCS if UPDATE_DOCS else tmp_path
    env = make_env()
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["lea@example.com"])
    ctx = _context(browser, "fr-FR", mobile=True)
    page = ctx.new_page()
    page.goto(f"{env.api.url}/u/{tokens['lea@example.com']}")
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.get_by_role("heading", name="Se désinscrire").is_visible()
    assert "Boutique Test SARL" in page.locator("main").inner_text()
    assert "l***@example.com" in page.locator("main").inner_text()
    # Every option is a labelled radio; the default is this account's marketing emails.
    assert page.get_by_label("De tous les e-mails marketing de Boutique Test SARL").is_checked()
    assert page.get_by_label(re.compile("De cette liste seulement.*Newsletter")).count() == 1
    assert page.get_by_label("De tous les messages marketing de Boutique Test SARL, e-mails et SMS").count() == 1
    page.screenshot(path=str(shots / "unsubscribe-page.png"), full_page=True)
    assert suppressed(env, account_id, "lea@example.com") == []  # showing the page changed nothing
    # Keyboard only: tab to the button, Enter.
    button = page.get_by_role("button", name="Me désinscrire")
    for _ in range(12):
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    assert button.evaluate("b => b === document.activeElement")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.get_by_role("heading", name="Désinscription confirmée").is_visible()
    assert "Vous ne recevrez plus d'e-mails marketing de Boutique Test SARL." in page.locator("main").inner_text()
    page.screenshot(path=str(shots / "unsubscribe-confirmation.png"), full_page=True)
    assert len(suppressed(env, account_id, "lea@example.com")) == 1
    assert page.context.cookies() == []
    with page.expect_navigation():
        page.get_by_role("button", name="Annuler ma désinscription").click()
    assert page.get_by_role("heading", name="Désinscription annulée").is_visible()
    assert suppressed(env, account_id, "lea@example.com") == []
    with page.expect_navigation():  # the language switch of any page leads back to the page (a GET)
        page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", name="Unsubscribe").is_visible()
    assert suppressed(env, account_id, "lea@example.com") == []
    ctx.close()


def test_english_page_from_accept_language_and_the_switch_back_to_french(make_env, browser):
    env = make_env()
    account_id, client = env.account()
    _, tokens = campaign_with_tokens(env, client, account_id, ["max@example.com"])
    ctx = _context(browser, "en-GB")
    page = ctx.new_page()
    page.goto(f"{env.api.url}/u/{tokens['max@example.com']}")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("heading", name="Unsubscribe").is_visible()
    with page.expect_navigation():
        page.get_by_role("link", name="Français").click()
    assert page.get_by_role("heading", name="Se désinscrire").is_visible()
    with page.expect_navigation():
        page.get_by_role("link", name="English").click()
    page.get_by_label("All marketing messages from Boutique Test SARL, emails and text messages").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Unsubscribe").click()
    assert page.get_by_role("heading", name="You are unsubscribed").is_visible()
    assert "by email or text message" in page.locator("main").inner_text()
    assert len(suppressed(env, account_id, "max@example.com")) == 1 and actions(env, account_id) == 1
    with page.expect_navigation():
        page.get_by_role("button", name="Undo and resubscribe").click()
    assert page.get_by_role("heading", name="Unsubscribe undone").is_visible()
    assert suppressed(env, account_id, "max@example.com") == []
    ctx.close()


def test_forged_link_shows_an_explanation_in_the_reader_language(make_env, browser):
    env = make_env()
    ctx = _context(browser, "en-US")
    page = ctx.new_page()
    response = page.goto(f"{env.api.url}/u/forged-token")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Invalid link").is_visible()
    ctx.close()
