"""The manager's API (issue 15): the one privacy rule (docs/privacy.md) on counts, tables, CSV,
the event API and the live feed; stats over a chosen range; CSV times in ISO 8601; alert context;
undo; Web Push subscriptions, the VAPID key, and subscriptions a push service reports gone."""

from __future__ import annotations

import base64
import csv
import io
import os
import threading
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from companion_helpers import Publisher, Subscriber, cue, running_companion, sqlite_url, wait_until

from calmcue.shared.broker import free_port
from companion import push, store, users
from firmware.core import cue_table

K = 5  # min_group_size


def at(hour: int, minute: int = 0) -> float:
    return datetime.combine(date.today(), dtime(hour, minute)).timestamp()


@pytest.fixture
def comp(tmp_path, mosquitto):
    with running_companion(
        sqlite_url(tmp_path), mosquitto.url, env="development", min_group_size=K,
        alert_undo_s=1.5,
    ) as c:  # fmt: skip
        db = c.engine
        users.create_user(db, username="ann", password="ann-pass-1", role="manager",
                          sites=["store-1"])  # fmt: skip
        users.create_user(db, username="ivy", password="ivy-pass-1", role="it")
        users.create_user(db, username="ada", password="ada-pass-1", role="admin")
        store.upsert_site(db, site="store-1", name="Riverside", first_contact="Ann",
                          second_contact="Bob")  # fmt: skip
        c.tok = {u: users.create_token(db, u) for u in ("ann", "ivy", "ada")}  # type: ignore[attr-defined]
        pub = Publisher(mosquitto.port)
        seq = iter(range(1, 100))
        for m in range(6):
            pub.event(cue(device="counter-1", seq=next(seq), cue_name="empathize", ts=at(10, m)))
        for m in range(2):
            pub.event(cue(device="counter-2", seq=next(seq), cue_name="slow_down", level=1,
                          ts=at(11, m)))  # fmt: skip
        for m, ttd in enumerate((30.0, 40.0, 50.0)):
            pub.event(cue(device="counter-1", seq=next(seq), cue_name="settled", level=1,
                          ttd_s=ttd, ts=at(10, 30 + m)))  # fmt: skip
        wait_until(lambda: c.ingest.counters().stored == 11, what="11 events")
        pub.close()
        yield c


def get(comp, path, user, **params):
    return httpx.get(comp.url + path, params=params,
                     headers={"Authorization": f"Bearer {comp.tok[user]}"})  # fmt: skip


def post(comp, path, user, json=None):
    return httpx.post(comp.url + path, json=json,
                      headers={"Authorization": f"Bearer {comp.tok[user]}"})  # fmt: skip


def test_one_privacy_rule_for_counts_tables_csv_and_api(comp):
    # single cues: refused to a manager, given to IT
    for path in ("/api/events", "/api/events.csv"):
        r = get(comp, path, "ann")
        assert r.status_code == 403 and "min_group_size" in r.json()["detail"], path
        assert get(comp, path, "ivy").status_code == 200
    # counts: a group under K is null, whatever it groups by
    r = get(comp, "/api/stats", "ann").json()["range"]
    assert r["min_group_size"] == K and r["to"] == date.today().isoformat()
    assert set(r["by_type"]) == set(cue_table.names())  # every cue of the table, counted or not
    assert r["by_type"]["slow_down"] is None and r["by_type"]["empathize"] == 6
    assert r["by_type"]["call_manager"] == 0 and r["by_type"]["settled"] is None
    assert r["total"] == 11
    assert r["per_hour"][10]["total"] == 9 and r["per_hour"][11]["total"] is None
    assert r["per_hour"][10]["by_type"]["settled"] is None
    by_counter = {c["device"]: c for c in r["per_counter"]}
    assert by_counter["counter-1"]["total"] == 9 and by_counter["counter-2"]["total"] is None
    assert by_counter["counter-1"]["site_name"] == "Riverside"
    today = r["days"][-1]
    assert today["date"] == date.today().isoformat() and today["total"] == 11
    # 3 settled conversations < K: no median, no count
    assert today["time_to_deescalate"] == {"n": None, "median_s": None, "p90_s": None}
    assert r["time_to_deescalate"]["median_s"] is None
    # the counts CSV: same rule, ISO 8601 periods, the store's name
    text = get(comp, "/api/stats.csv", "ann").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {(x["counter"], x["cue"]): (x["cues"], x["note"]) for x in rows} == {
        ("counter-1", "empathize"): ("6", ""),
        ("counter-1", "settled"): ("", f"fewer than {K}"),
        ("counter-2", "slow_down"): ("", f"fewer than {K}"),
    }
    assert {x["period"] for x in rows} == {date.today().isoformat()} and rows[0]["store"] == "Riverside"
    hourly = list(csv.DictReader(io.StringIO(get(comp, "/api/stats.csv", "ann", by="hour").text)))
    when = datetime.fromisoformat(hourly[0]["period"])
    assert when.tzinfo is not None and when.minute == 0 and when.hour in (10, 11)


def test_ranges_and_iso_times(comp):
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    r = get(comp, "/api/stats", "ann", **{"from": yesterday, "to": yesterday}).json()["range"]
    assert r["total"] == 0 and [d["date"] for d in r["days"]] == [yesterday]
    assert get(comp, "/api/stats", "ann", **{"from": "2026-12-09", "to": "2026-12-01"}).status_code == 422
    assert get(comp, "/api/stats", "ann", **{"from": "yesterday"}).status_code == 422
    assert get(comp, "/api/stats.csv", "ann", **{"from": "2020-01-01", "to": "2026-01-01"}).status_code == 422
    # single events for IT: time, ts and received_at in ISO 8601 with the UTC offset
    rows = list(csv.DictReader(io.StringIO(get(comp, "/api/events.csv", "ivy").text)))
    assert len(rows) == 11
    first = datetime.fromisoformat(rows[0]["time"])
    assert first.tzinfo is not None and abs(first.timestamp() - at(10, 0)) < 0.01
    assert datetime.fromisoformat(rows[0]["received_at"]).tzinfo is not None
    only_yesterday = get(comp, "/api/events.csv", "ivy", **{"from": yesterday, "to": yesterday})
    assert only_yesterday.text.strip().count("\n") == 0  # the header only (received today)


def test_live_feed_gives_a_manager_alerts_but_no_single_cues(comp, mosquitto):
    seen: dict[str, list[str]] = {"ann": [], "ivy": []}
    opened = {u: threading.Event() for u in seen}

    def listen(user: str) -> None:
        with httpx.stream("GET", comp.url + "/api/stream", timeout=10,
                          headers={"Authorization": f"Bearer {comp.tok[user]}"}) as r:  # fmt: skip
            for line in r.iter_lines():
                if line.startswith("retry: "):  # sent once the feed has subscribed this client
                    opened[user].set()
                if line.startswith("event: "):
                    seen[user].append(line[7:])
                    if line == "event: alert":
                        return

    threads = [threading.Thread(target=listen, args=(u,), daemon=True) for u in seen]
    for t in threads:
        t.start()
    for user, ev in opened.items():
        assert ev.wait(10), f"{user}'s stream did not open"
    pub = Publisher(mosquitto.port)
    pub.event(cue(device="counter-1", seq=200, cue_name="empathize"))
    time.sleep(0.3)
    pub.event(cue(device="counter-2", seq=201, cue_name="call_manager", level=3))
    pub.close()
    for t in threads:
        t.join(10)
    assert seen["ann"] == ["alert"]
    assert seen["ivy"][-1] == "alert" and "event" in seen["ivy"]


def test_alert_context_and_undo(comp, mosquitto):
    sub = Subscriber(mosquitto.port, "calmcue/v1/store-1/alert/#")
    pub = Publisher(mosquitto.port)
    pub.event(cue(device="counter-2", seq=300, cue_name="call_manager", level=3, reason="rising"))
    a = wait_until(lambda: get(comp, "/api/alerts", "ann", active=True).json(), what="alert")[0]
    assert (a["site_name"], a["contact"], a["second_contact"]) == ("Riverside", "Ann", "Bob")
    assert (a["level"], a["reason"]) == (3, "rising")
    wait_until(lambda: sub.messages, what="the MQTT alert")
    assert sub.messages[0][2]["contact"] == "Ann"
    sub.close()
    url = f"/api/alerts/{a['id']}"
    # acknowledge, undo: open again, nobody acknowledged
    assert post(comp, url + "/ack", "ann").json()["acked_by"] == "user:ann"
    undone = post(comp, url + "/undo", "ann").json()
    assert (undone["state"], undone["acked_by"]) == ("open", None)
    assert post(comp, url + "/undo", "ann").status_code == 409  # nothing left to undo
    # someone else's acknowledgement is not yours to undo
    post(comp, url + "/ack", "ada")
    r = post(comp, url + "/undo", "ann")
    assert r.status_code == 409 and "nothing of yours" in r.json()["detail"]
    # resolve after an acknowledgement, undo: acknowledged again
    resolved = post(comp, url + "/resolve", "ann").json()
    assert resolved["state"] == "resolved"
    back = post(comp, url + "/undo", "ann").json()
    assert (back["state"], back["acked_by"], back["resolved_at"]) == ("acknowledged", "user:ada", None)
    # too late: the window (1.5 s here) has passed
    post(comp, url + "/resolve", "ann")
    time.sleep(1.7)
    r = post(comp, url + "/undo", "ann")
    assert r.status_code == 409 and "possible for 2 s" in r.json()["detail"]
    # a resolved alert cannot come back over a newer one for the same counter
    pub.event(cue(device="counter-2", seq=301, cue_name="call_manager", level=3))
    newer = wait_until(lambda: get(comp, "/api/alerts", "ann", active=True).json(), what="new")[0]
    post(comp, f"/api/alerts/{newer['id']}/resolve", "ann")
    pub.event(cue(device="counter-2", seq=302, cue_name="call_manager", level=3))
    wait_until(lambda: get(comp, "/api/alerts", "ann", active=True).json(), what="third")
    r = post(comp, f"/api/alerts/{newer['id']}/undo", "ann")
    assert r.status_code == 409 and "newer alert" in r.json()["detail"]
    pub.close()
    history = get(comp, "/api/alerts", "ann", resolved=True).json()
    assert [h["id"] for h in history] == [newer["id"], a["id"]]
    audit = get(comp, url, "ann").json()["audit"]
    assert [x["action"] for x in audit].count("undone") == 2


class GoneService:
    """A push service that answers each POST with the next status of `answers`."""

    def __init__(self, answers: list[int]):
        self.answers = answers
        self.posts = 0
        svc = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                svc.posts += 1
                self.send_response(svc.answers.pop(0))
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_push_subscriptions_key_and_gone_browsers(comp, tmp_path):
    key = get(comp, "/api/push/key", "ann").json()
    assert key["subscriptions"] == 0
    assert len(base64.urlsafe_b64decode(key["public_key"] + "=")) == 65  # an uncompressed P-256 point
    path = push.vapid_key_path(comp.settings.data_dir)
    assert path.exists() and (os.stat(path).st_mode & 0o077) == 0
    # the same key after a restart: subscriptions made with it stay valid
    again = push.public_key_b64(push.load_or_create_vapid_key(comp.settings.data_dir))
    assert again == key["public_key"]

    p256dh = "B" + "A" * 86  # 65 bytes, base64url
    auth = "AAAAAAAAAAAAAAAAAAAAAA"  # 16 bytes
    bad = post(comp, "/api/push/subscriptions", "ann",
               {"endpoint": "https://push.example/x", "keys": {"p256dh": "abc", "auth": auth}})  # fmt: skip
    assert bad.status_code == 422 and "p256dh" in bad.json()["detail"]
    assert post(comp, "/api/push/subscriptions", "ann",
                {"endpoint": "ftp://x", "keys": {"p256dh": p256dh, "auth": auth}}).status_code == 422  # fmt: skip
    assert post(comp, "/api/push/subscriptions", "ivy",
                {"endpoint": "https://push.example/i", "keys": {"p256dh": p256dh, "auth": auth}}).status_code == 403  # fmt: skip

    gone = GoneService([500, 410])
    endpoint = f"http://127.0.0.1:{gone.port}/push/1"
    r = post(comp, "/api/push/subscriptions", "ann",
             {"endpoint": endpoint, "keys": {"p256dh": _real_p256dh(), "auth": auth}})  # fmt: skip
    assert r.status_code == 201
    assert get(comp, "/api/push/key", "ann").json()["subscriptions"] == 1
    pusher: push.Pusher = comp.app.state.pusher
    alert = {"id": 1, "kind": "call_manager", "site": "store-1", "device": "counter-2",
             "state": "open", "escalated_at": None}  # fmt: skip
    assert pusher.send_alert(alert) == 0  # 500: kept, failure counted
    assert get(comp, "/api/push/key", "ann").json()["subscriptions"] == 1
    assert pusher.send_alert(alert) == 0  # 410: the browser dropped it
    assert get(comp, "/api/push/key", "ann").json()["subscriptions"] == 0
    assert gone.posts == 2 and pusher.removed == 1
    # another site's alert is not sent to ann at all
    post(comp, "/api/push/subscriptions", "ann",
         {"endpoint": endpoint, "keys": {"p256dh": _real_p256dh(), "auth": auth}})  # fmt: skip
    assert pusher.send_alert({**alert, "site": "store-9"}) == 0 and gone.posts == 2
    r = post(comp, "/api/push/unsubscribe", "ann", {"endpoint": endpoint})
    assert r.status_code == 200
    assert post(comp, "/api/push/unsubscribe", "ann", {"endpoint": endpoint}).status_code == 404
    gone.server.shutdown()


def _real_p256dh() -> str:
    """A browser's public key (pywebpush encrypts to it, so it must be a point on the curve)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    raw = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_logging_out_stops_that_browsers_notifications(comp):
    """A manager who logs out of a shared phone stops its notifications; a subscription made
    from another session (or with a token) stays."""
    kept = post(comp, "/api/push/subscriptions", "ann",
                {"endpoint": "https://push.example/laptop",
                 "keys": {"p256dh": _real_p256dh(), "auth": "A" * 22}})  # fmt: skip
    assert kept.status_code == 201
    with httpx.Client(base_url=comp.url) as phone:
        phone.post("/api/login", data={"username": "ann", "password": "ann-pass-1"})
        csrf = {"X-CSRF-Token": phone.get("/api/session").json()["csrf"]}
        r = phone.post("/api/push/subscriptions", headers=csrf,
                       json={"endpoint": "https://push.example/phone",
                             "keys": {"p256dh": _real_p256dh(), "auth": "A" * 22}})  # fmt: skip
        assert r.status_code == 201
        assert get(comp, "/api/push/key", "ann").json()["subscriptions"] == 2
        phone.post("/api/logout", headers=csrf)
    assert get(comp, "/api/push/key", "ann").json()["subscriptions"] == 1
    with comp.engine.connect() as conn:
        (left,) = conn.execute(push.push_subscriptions.select()).all()
    assert left.endpoint == "https://push.example/laptop"
