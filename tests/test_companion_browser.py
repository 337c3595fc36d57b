"""The dashboard in Debian's real Chromium (Playwright, never a downloaded browser): a manager
logs in, sees a live alert within 1 s of the device's event, acknowledges and resolves it; a
manager of another site never sees it."""

from __future__ import annotations

import time

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, sqlite_url

from companion import alerts, users

pytestmark = pytest.mark.browser




def login(browser, url: str, username: str, password: str):
    page = browser.new_context().new_page()
    # anything the Content-Security-Policy blocks shows up here (tests assert there is none)
    page.csp_errors = []
    page.on("console", lambda m: "Content Security Policy" in m.text
            and page.csp_errors.append(m.text))
    page.goto(url + "/")
    page.wait_for_url("**/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#live.on", timeout=10_000)  # logged in and the live feed is open
    return page


def test_manager_sees_live_alert_acknowledges_and_resolves_it(tmp_path, mosquitto, browser):
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="development") as comp:
        users.create_user(
            comp.engine, username="ann", password="ann-pass-1", role="manager", sites=["store-a"]
        )
        users.create_user(
            comp.engine, username="bob", password="bob-pass-1", role="manager", sites=["store-b"]
        )
        ann = login(browser, comp.url, "ann", "ann-pass-1")
        bob = login(browser, comp.url, "bob", "bob-pass-1")
        assert "ann" in ann.inner_text("#who") and ann.inner_text("#alerts") == "No open alerts."

        pub = Publisher(mosquitto.port)
        sent = time.monotonic()
        pub.event(cue(site="store-a", device="counter-2", seq=1, cue_name="call_manager", level=3))
        ann.wait_for_selector("#alerts li.alert.open", timeout=1000)
        assert time.monotonic() - sent < 1.0
        assert "Manager needed at counter-2, store-a" in ann.inner_text("#alerts")
        assert ann.title().startswith("(1) manager needed")
        # single cues are not a manager's to see (docs/privacy.md): no cue table, counts only
        assert ann.locator("#cues-panel").is_hidden()

        ann.click("#alerts li.alert button.ack")
        ann.wait_for_selector("#alerts li.alert.acknowledged", timeout=2000)
        ann.click("#alerts li.alert button.resolve")
        ann.wait_for_selector("#alerts li.empty", timeout=2000)
        assert ann.title() == "calmcue"
        assert ann.locator("#alerts li.alert").count() == 0

        # the other store's manager saw nothing of it, live or on reload
        assert bob.locator("#alerts li.alert").count() == 0
        assert bob.locator("#cues tbody tr").count() == 0
        bob.reload()
        bob.wait_for_selector("#live.on")
        assert bob.locator("#cues tbody tr").count() == 0
        pub.close()
        (alert,) = alerts.list_alerts(comp.engine, sites=None)
        assert [(a["action"], a["actor"]) for a in alerts.audit_of(comp.engine, alert["id"])] == [
            ("opened", "system"),
            ("acknowledged", "user:ann"),
            ("resolved", "user:ann"),
        ]
        # the buttons above sent the CSRF token; nothing was blocked by the page's CSP
        assert ann.csp_errors == []
        # log out: the button ends the session on the server and the page goes to the login
        cookie = next(c for c in ann.context.cookies() if c["name"] == "calmcue_session")
        ann.click("#logout button")
        ann.wait_for_url("**/login", timeout=5000)
        r = httpx.get(comp.url + "/api/alerts", cookies={"calmcue_session": cookie["value"]})
        assert r.status_code == 401  # the old cookie, replayed, is worthless


def test_demo_mode_dashboard_needs_no_login_and_updates_live(tmp_path, mosquitto, browser):
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="demo") as comp:
        page = browser.new_context().new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on(
            "request", lambda r: errors.append(r.url) if not r.url.startswith(comp.url) else None
        )
        page.goto(comp.url + "/")
        page.wait_for_selector("#live.on")
        assert page.inner_text("#mode") == "demo mode"
        pub = Publisher(mosquitto.port)
        pub.send("calmcue/v1/store-1/counter-2/tele", {"fw": "0.2.0", "rssi": -61, "queue": 0})
        pub.event(cue(seq=5, cue_name="slow_down", level=1, score=0.61))
        row = page.wait_for_selector("#cues tbody tr", timeout=5000)
        assert "slow_down" in row.inner_text() and "0.61" in row.inner_text()
        pub.close()
        page.reload()  # statistics and the device table drawn from the API
        page.wait_for_selector("#devices tbody tr")
        assert "0.2.0" in page.inner_text("#devices tbody tr")
        page.wait_for_selector("#fig-day rect.suppressed")
        assert page.locator("#fig-day rect.suppressed").count() == 1  # one cue: a grey bar
        assert not page.locator("#config-panel").is_hidden()
        assert errors == [], errors  # nothing failed, nothing fetched from outside
        # IT edits a device's configuration in the page; a bad value is refused with the reason
        page.select_option("#config-site", label="store-1 / counter-2")
        page.wait_for_selector('#config-doc[data-for="store-1 / counter-2"]')
        page.fill("#config-doc", '{"brightness": 2}')
        page.click("#config-form button")
        page.wait_for_selector("#config-result.error")
        assert "less than or equal to 1" in page.inner_text("#config-result")
        page.fill("#config-doc", '{"brightness": 0.2}')
        page.click("#config-form button")
        page.wait_for_selector("#config-result:text('published')")
        info = httpx.get(comp.url + "/api/devices/store-1/counter-2/config").json()
        assert info["payload"]["brightness"] == 0.2


def test_api_docs_render_offline(tmp_path, mosquitto, browser):
    """Swagger UI comes from the swagger-ui-bundle-v2 package: a store without internet still has
    working API docs, and the page fetches nothing from outside."""
    with running_companion(sqlite_url(tmp_path), mosquitto.url, env="demo") as comp:
        page = browser.new_context().new_page()
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(comp.url) else None)
        page.goto(comp.url + "/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=10000)
        assert "/api/events" in page.inner_text(".swagger-ui")
        assert outside == [], outside
