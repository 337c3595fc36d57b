"""Users and access: argon2 passwords, session login for the dashboard, bearer tokens for the
API, and managers scoped to their own sites."""

from __future__ import annotations

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, sqlite_url, wait_until

from companion import users

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


@pytest.fixture
def fleet(db_url, mosquitto):
    """A development-mode companion with events and alerts at two stores, and three users."""
    with running_companion(
        db_url, mosquitto.url, env="development", admin_password="admin-pass-1"
    ) as comp:
        db = comp.engine
        users.create_user(
            db, username="ann", password="ann-pass-1", role="manager", sites=["store-a"]
        )
        users.create_user(
            db, username="bob", password="bob-pass-1", role="manager", sites=["store-b"]
        )
        users.create_user(db, username="ivy", password="ivy-pass-1", role="it")
        pub = Publisher(mosquitto.port)
        pub.event(cue(site="store-a", device="counter-1", seq=1, cue_name="call_manager", level=3))
        pub.event(cue(site="store-b", device="counter-1", seq=1, cue_name="call_manager", level=3))
        pub.send("calmcue/v1/store-b/counter-1/evt/cue", b"broken")
        wait_until(lambda: comp.ingest.counters().stored == 2, what="events at both stores")
        comp.ingest.flush()
        pub.close()
        tokens = {u: users.create_token(db, u) for u in ("ann", "bob", "ivy", "admin")}
        yield comp, tokens


def get(comp, path, token=None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(comp.url + path, headers=headers, params=params)


def test_passwords_are_argon2_hashed_and_checked(fleet):
    comp, _ = fleet
    db = comp.engine
    with db.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT password_hash FROM users WHERE username='ann'"
        ).scalar()
    assert stored.startswith("$argon2") and "ann-pass-1" not in stored
    assert users.authenticate(db, "ann", "ann-pass-1").sites == frozenset({"store-a"})
    assert users.authenticate(db, "ann", "wrong") is None
    assert users.authenticate(db, "nobody", "ann-pass-1") is None
    with pytest.raises(users.UserError, match="at least one site"):
        users.create_user(db, username="eve", password="long-enough", role="manager")
    with pytest.raises(users.UserError, match="at least 8"):
        users.create_user(db, username="eve", password="short", role="it")


def test_without_credentials_nothing_is_readable(fleet):
    comp, _ = fleet
    for path in ("/api/events", "/api/alerts", "/api/devices", "/api/stream", "/api/dead-letters"):
        assert get(comp, path).status_code == 401, path
    assert get(comp, "/api/events", token="cc_forged").status_code == 401
    assert get(comp, "/healthz").status_code == 200


def test_a_manager_reads_only_their_own_site(fleet):
    comp, tok = fleet
    # single cues are not a manager's (docs/privacy.md): counts only, of their own sites
    r = get(comp, "/api/events", tok["ann"])
    assert r.status_code == 403 and "privacy.md" in r.json()["detail"]
    assert get(comp, "/api/events.csv", tok["ann"]).status_code == 403
    counters = get(comp, "/api/stats", tok["ann"]).json()["range"]["per_counter"]
    assert {c["site"] for c in counters} == {"store-a"}
    assert get(comp, "/api/stats", tok["ann"], site="store-b").status_code == 403
    assert get(comp, "/api/stats.csv", tok["ann"], site="store-b").status_code == 403
    ann_alerts = get(comp, "/api/alerts", tok["ann"]).json()
    assert [a["site"] for a in ann_alerts] == ["store-a"]
    assert [d["site"] for d in get(comp, "/api/devices", tok["ann"]).json()] == ["store-a"]
    assert get(comp, "/api/dead-letters", tok["ann"]).status_code == 403

    bob_alert = get(comp, "/api/alerts", tok["bob"]).json()[0]
    assert bob_alert["site"] == "store-b"
    assert get(comp, f"/api/alerts/{bob_alert['id']}", tok["ann"]).status_code == 404
    r = httpx.post(
        f"{comp.url}/api/alerts/{bob_alert['id']}/ack",
        headers={"Authorization": f"Bearer {tok['ann']}"},
    )
    assert r.status_code == 404
    r = httpx.post(
        f"{comp.url}/api/alerts/{ann_alerts[0]['id']}/ack",
        headers={"Authorization": f"Bearer {tok['ann']}"},
    )
    assert r.status_code == 200 and r.json()["acked_by"] == "user:ann"


def test_roles_it_and_admin(fleet):
    comp, tok = fleet
    assert {e["site"] for e in get(comp, "/api/events", tok["ivy"]).json()} == {
        "store-a",
        "store-b",
    }
    (dead,) = get(comp, "/api/dead-letters", tok["ivy"]).json()
    assert dead["topic"].startswith("calmcue/v1/store-b")
    alert_id = get(comp, "/api/alerts", tok["ivy"]).json()[0]["id"]
    r = httpx.post(
        f"{comp.url}/api/alerts/{alert_id}/ack", headers={"Authorization": f"Bearer {tok['ivy']}"}
    )
    assert r.status_code == 403  # IT sees alerts, managers handle them
    assert get(comp, "/api/users", tok["ivy"]).status_code == 403
    admin = {"Authorization": f"Bearer {tok['admin']}"}
    r = httpx.post(
        comp.url + "/api/users",
        headers=admin,
        json={"username": "cat", "password": "cat-pass-1", "role": "manager", "sites": ["store-b"]},
    )
    assert r.status_code == 201
    r = httpx.post(
        comp.url + "/api/users",
        headers=admin,
        json={"username": "dan", "password": "dan-pass-1", "role": "boss"},
    )
    assert r.status_code == 422 and "role must be one of" in r.json()["detail"]
    assert {u["username"] for u in get(comp, "/api/users", tok["admin"]).json()} >= {"admin", "cat"}


def test_dashboard_login_sets_a_session_cookie(fleet):
    comp, _ = fleet
    with httpx.Client(base_url=comp.url) as browser:
        assert browser.get("/api/session").json()["user"] is None
        r = browser.post("/api/login", data={"username": "ann", "password": "wrong"})
        assert r.status_code == 303 and r.headers["location"] == "/login?failed=1"
        r = browser.post("/api/login", data={"username": "ann", "password": "ann-pass-1"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "httponly" in r.headers["set-cookie"].lower()
        me = browser.get("/api/session").json()
        assert (me["user"], me["role"], me["sites"]) == ("ann", "manager", ["store-a"])
        assert {a["site"] for a in browser.get("/api/alerts").json()} == {"store-a"}
        csrf = {"X-CSRF-Token": me["csrf"]}  # cookie-authenticated writes need it
        token = browser.post("/api/tokens", json={"name": "script"}, headers=csrf).json()["token"]
        assert get(comp, "/api/alerts", token).status_code == 200
        browser.post("/api/logout", headers=csrf)
        assert browser.get("/api/alerts").status_code == 401


def test_cli_adds_users_and_tokens(tmp_path, monkeypatch, capsys):
    from calmcue.cli import main

    db = sqlite_url(tmp_path)
    monkeypatch.setenv("CALMCUE_NEW_PASSWORD", "mgr-pass-1")
    add_mia = ["companion", "user", "add", "mia", "--role", "manager", "--sites", "store-a"]
    assert main([*add_mia, "--db", db]) == 0
    assert main([*add_mia, "--db", db]) == 2  # the same user again
    assert "already exists" in capsys.readouterr().err
    assert main(["companion", "user", "token", "mia", "--db", db]) == 0
    token = capsys.readouterr().out.strip()
    from companion.db import make_engine

    assert users.principal_for_token(make_engine(db), token).sites == frozenset({"store-a"})


def test_fleet_api_is_mounted_for_it_only(fleet):
    pytest.importorskip("companion.fleet", reason="IT's fleet module is not part of this build")
    comp, tok = fleet
    assert get(comp, "/fleet/inventory").status_code == 401
    assert get(comp, "/fleet/inventory", tok["ann"]).status_code == 403
    assert get(comp, "/fleet/inventory", tok["ivy"]).status_code == 200
    # devices ask for updates without a login; integrity comes from the signature
    assert get(comp, "/fleet/ota/check", site="store-a", device="counter-1").status_code == 200
