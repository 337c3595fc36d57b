"""Login, sessions and secrets under attack (issue 17 findings 3 and 6), against the real service
over HTTP: a cookie forged with the old built-in secret, a cookie kept after logout, password
guessing, a revoked token, a cross-site or token-less write, the security headers, and demo mode
refusing everything outside the demo."""

from __future__ import annotations

import json
import os
import stat
import time
from base64 import b64encode
from pathlib import Path

import httpx
import pytest
from companion_helpers import running_companion, sqlite_url
from itsdangerous import TimestampSigner
from pydantic import ValidationError

from companion import users
from companion.config import OLD_DEFAULT_SECRET, SECRET_FILE, Settings

ADMIN_PW = "admin-pass-1"


@pytest.fixture
def comp(tmp_path):
    """A development-mode companion (no broker needed) with an admin and a manager; lockout
    after 5 failures within 6 s so the test can also see it lift."""
    with running_companion(
        sqlite_url(tmp_path), None, env="development", admin_password=ADMIN_PW,
        login_window_s=6.0,  # five argon2 checks fit in it even on a busy CI machine
    ) as c:
        users.create_user(c.engine, username="ann", password="ann-pass-1", role="manager",
                          sites=["store-a"])
        yield c


def forged_cookie(secret: str, session: dict) -> str:
    """What Starlette's SessionMiddleware would set for `session` if signed with `secret`."""
    return TimestampSigner(secret).sign(b64encode(json.dumps(session).encode())).decode()


def login(c, username: str, password: str) -> httpx.Client:
    browser = httpx.Client(base_url=c.url)
    r = browser.post("/api/login", data={"username": username, "password": password})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return browser


def test_no_built_in_secret_and_a_cookie_forged_with_the_old_one_is_refused(comp, tmp_path):
    secret_file = tmp_path / SECRET_FILE  # data_dir = the test's folder (companion_helpers)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    generated = secret_file.read_text().strip()
    assert len(generated) >= 64 and generated != OLD_DEFAULT_SECRET
    for session in ({"user": "admin"}, {"sid": "x", "csrf": "y"}):
        r = httpx.get(comp.url + "/api/users",
                      cookies={"calmcue_session": forged_cookie(OLD_DEFAULT_SECRET, session)})
        assert r.status_code == 401, r.text
    # even signed with the real secret, a session the server never issued is nobody
    r = httpx.get(comp.url + "/api/users",
                  cookies={"calmcue_session": forged_cookie(generated, {"user": "admin"})})
    assert r.status_code == 401
    # the old default is refused as a configured key in every mode; production needs one
    for env in ("demo", "development", "production"):
        with pytest.raises(ValidationError, match="old built-in default"):
            Settings(env=env, secret_key=OLD_DEFAULT_SECRET)
    with pytest.raises(ValidationError, match="production needs CALMCUE_SECRET_KEY"):
        Settings(env="production")


def test_secret_and_keys_live_under_the_absolute_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings(data_dir=Path("rel"), mqtt_url=None)
    assert s.data_dir == tmp_path / "rel" and s.data_dir.is_absolute()
    assert s.fleet_key_path == tmp_path / "rel" / "fleet" / "ota_signing_key.pem"
    first = s.session_secret()
    os.chdir("/")  # a later working directory changes nothing
    assert s.session_secret() == first
    (s.data_dir / SECRET_FILE).chmod(0o644)
    with pytest.raises(ValueError, match="readable by other users"):
        s.session_secret()


def test_logout_revokes_the_session_on_the_server(comp):
    browser = login(comp, "admin", ADMIN_PW)
    kept = browser.cookies["calmcue_session"]
    assert browser.get("/api/users").status_code == 200
    csrf = browser.get("/api/session").json()["csrf"]
    assert browser.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 303
    # the same cookie, replayed after logout, is worth nothing
    r = httpx.get(comp.url + "/api/users", cookies={"calmcue_session": kept})
    assert r.status_code == 401
    with comp.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sessions").scalar() == 0


def test_repeated_failures_lock_the_login_with_429(comp):
    with httpx.Client(base_url=comp.url) as guesser:
        for i in range(5):
            r = guesser.post("/api/login", data={"username": "admin", "password": f"guess-{i}"})
            assert r.status_code == 303 and "failed" in r.headers["location"]
        # locked now: even the right password is not tried, and the answer says when to retry
        r = guesser.post("/api/login", data={"username": "admin", "password": ADMIN_PW})
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 6
        # the client address is locked too: guessing another user's password does not help
        r = guesser.post("/api/login", data={"username": "ann", "password": "ann-pass-1"})
        assert r.status_code == 429
        time.sleep(int(r.headers["retry-after"]) + 0.1)  # as told: then the window has passed
        r = guesser.post("/api/login", data={"username": "admin", "password": ADMIN_PW})
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_tokens_are_listed_and_revoked(comp):
    admin = users.create_token(comp.engine, "admin", "admin-script")
    mine = users.create_token(comp.engine, "ann", "ann-script")
    other = users.create_token(comp.engine, "ann", "ann-other")

    def call(method, path, token):
        return httpx.request(method, comp.url + path, headers={"Authorization": f"Bearer {token}"})

    listed = call("GET", "/api/tokens", mine).json()
    assert [t["name"] for t in listed] == ["ann-script", "ann-other"]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert call("GET", "/api/tokens?all=true", mine).status_code == 403
    admin_id = call("GET", "/api/tokens", admin).json()[0]["id"]
    # a manager cannot revoke the admin's token (404: not one of hers)
    assert call("DELETE", f"/api/tokens/{admin_id}", mine).status_code == 404
    assert call("GET", "/api/events", admin).status_code == 200
    # she revokes her own; it stops working at once
    assert call("DELETE", f"/api/tokens/{listed[1]['id']}", mine).status_code == 200
    assert call("GET", "/api/events", other).status_code == 401
    # the admin sees everyone's and revokes hers
    everyone = call("GET", "/api/tokens?all=true", admin).json()
    assert {t["username"] for t in everyone} == {"admin", "ann"}
    assert call("DELETE", f"/api/tokens/{listed[0]['id']}", admin).status_code == 200
    assert call("GET", "/api/events", mine).status_code == 401


def test_cookie_writes_need_the_csrf_token_and_cross_site_writes_are_refused(comp):
    browser = login(comp, "admin", ADMIN_PW)
    csrf = browser.get("/api/session").json()["csrf"]
    body = {"name": "Store A"}
    r = browser.put("/api/sites/store-a", json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = browser.put("/api/sites/store-a", json=body, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    r = browser.put("/api/sites/store-a", json=body,
                    headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    r = browser.put("/api/sites/store-a", json=body,
                    headers={"X-CSRF-Token": csrf, "Origin": comp.url})
    assert r.status_code == 200 and r.json()["name"] == "Store A"
    # a cross-site login form post is refused before any password is checked
    r = httpx.post(comp.url + "/api/login", data={"username": "admin", "password": ADMIN_PW},
                   headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # bearer-token API calls carry no ambient credentials and need no CSRF token
    tok = users.create_token(comp.engine, "admin")
    r = httpx.put(comp.url + "/api/sites/store-a", json={"name": "A"},
                  headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200


def test_security_headers_on_every_response(comp):
    for path in ("/", "/login", "/api/session", "/api/events", "/static/app.js", "/nothing"):
        h = httpx.get(comp.url + path).headers
        assert h["x-content-type-options"] == "nosniff", path
        assert h["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert "script-src 'self';" in h["content-security-policy"], path
        assert h["referrer-policy"] == "same-origin", path
        assert "strict-transport-security" not in h  # plain HTTP in development
    assert "'unsafe-inline'" in httpx.get(comp.url + "/docs").headers["content-security-policy"]
    # the dashboard pages have no inline script left for the policy to block
    for page in ("index.html", "login.html"):
        text = (Path(__file__).parents[1] / "companion" / "static" / page).read_text()
        assert "<script>" not in text and " on" + "click=" not in text


def test_production_sends_hsts(tmp_path):
    with running_companion(sqlite_url(tmp_path), None, env="production",
                           secret_key="p" * 40) as c:
        h = httpx.get(c.url + "/api/session").headers
        assert h["strict-transport-security"].startswith("max-age=")


def test_demo_mode_is_read_only_outside_the_demo(tmp_path):
    with running_companion(sqlite_url(tmp_path), None, env="demo",
                           fleet_key_path="keys/ota.pem") as c:
        new_admin = {"username": "mallory", "password": "long-enough-1", "role": "admin"}
        r = httpx.post(c.url + "/api/users", json=new_admin)
        assert r.status_code == 403 and "demo mode is read-only" in r.json()["detail"]
        assert httpx.get(c.url + "/api/users").status_code == 403
        assert httpx.post(c.url + "/api/tokens", json={"name": "x"}).status_code == 403
        # no key generation and no firmware signing
        assert httpx.get(c.url + "/fleet/ota/key").status_code == 403
        update = {"version": "9.9", "site": "demo", "files": {"main.py": "cHJpbnQoMSk="}}
        r = httpx.post(c.url + "/fleet/updates", json=update)
        assert r.status_code == 403 and "demo mode" in r.json()["detail"]
        assert httpx.post(c.url + "/fleet/mqtt/accounts",
                          json={"site": "demo", "device": "x1"}).status_code == 403
        assert not (tmp_path / "keys").exists()
        assert c.settings.fleet_key_path == tmp_path / "keys" / "ota.pem"  # absolute, data_dir
        with c.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM users").scalar() == 0
        # the demo itself still works: reading events
        assert httpx.get(c.url + "/api/events").status_code == 200
