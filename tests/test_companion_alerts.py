"""Alert lifecycle over real MQTT: open on call_manager, acknowledge/resolve by API and MQTT,
re-notify and escalate on time, audit every change, silent-device alarms."""

from __future__ import annotations

import http.server
import json
import threading
import time

import httpx
import pytest
from companion_helpers import Publisher, Subscriber, cue, running_companion, sqlite_url, wait_until

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


@pytest.fixture
def pub(mosquitto):
    p = Publisher(mosquitto.port)
    yield p
    p.close()


def active(comp):
    return httpx.get(comp.url + "/api/alerts", params={"active": "true"}).json()


def audit(comp, alert_id):
    return [
        (a["action"], a["actor"], a["state"])
        for a in httpx.get(f"{comp.url}/api/alerts/{alert_id}").json()["audit"]
    ]


def test_call_manager_opens_one_alert_acked_by_api_resolved_over_mqtt(db_url, mosquitto, pub):
    mgr_dev = Subscriber(mosquitto.port, "calmcue/v1/store-1/alert/call_manager")
    with running_companion(db_url, mosquitto.url) as comp:
        pub.event(cue(seq=1, cue_name="empathize"))
        pub.event(cue(seq=2, cue_name="call_manager", level=3, score=0.95))
        (alert,) = wait_until(lambda: active(comp), what="an open alert")
        assert (alert["site"], alert["device"], alert["kind"], alert["state"]) == (
            "store-1",
            "counter-2",
            "call_manager",
            "open",
        )
        assert alert["event_id"] is not None and alert["conv"] == "3fa9c2d1"
        pub.event(cue(seq=3, cue_name="call_manager", level=3))  # still the same incident
        wait_until(lambda: len(audit(comp, alert["id"])) == 2, what="the repeat in the audit")
        assert len(active(comp)) == 1

        r = httpx.post(f"{comp.url}/api/alerts/{alert['id']}/ack")
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"
        again = httpx.post(f"{comp.url}/api/alerts/{alert['id']}/ack")
        assert again.status_code == 409 and "acknowledged" in again.json()["detail"]

        pub.send("calmcue/v1/store-1/alert/resolve", {"id": alert["id"], "by": "pager-1"})
        wait_until(lambda: not active(comp), what="the MQTT resolve")
        assert audit(comp, alert["id"]) == [
            ("opened", "system", "open"),
            ("repeated", "system", "open"),
            ("acknowledged", "user:demo", "acknowledged"),
            ("resolved", "mqtt:pager-1", "resolved"),
        ]
        wait_until(lambda: len(mgr_dev.messages) == 3, what="3 alert publications")
        states = [m[2]["state"] for m in mgr_dev.messages]
        assert states == ["open", "acknowledged", "resolved"]
        assert mgr_dev.messages[0][2]["device"] == "counter-2"
        # a wrong-site resolve over MQTT is ignored
        pub.event(cue(seq=4, cue_name="call_manager", level=3))
        (second,) = wait_until(lambda: active(comp), what="a second alert")
        pub.send("calmcue/v1/store-9/alert/ack", {"id": second["id"]})
        pub.send("calmcue/v1/store-1/alert/ack", b"not json")
        time.sleep(0.3)
        assert active(comp)[0]["state"] == "open"
    mgr_dev.close()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []
    fail_first = True

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if _Hook.fail_first:
            _Hook.fail_first = False
            self.send_response(503)
        else:
            _Hook.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_unacknowledged_alert_renotifies_and_escalates_on_time(tmp_path, mosquitto, pub):
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    mgr_dev = Subscriber(mosquitto.port, "calmcue/v1/store-1/alert/#")
    renotify, escalate = 1.0, 2.5  # wide enough that a loaded 2-core machine keeps to them
    with running_companion(
        sqlite_url(tmp_path),
        mosquitto.url,
        alert_renotify_s=renotify,
        alert_escalate_s=escalate,
        alert_check_s=0.05,
        webhook_url=f"http://127.0.0.1:{hook.server_port}/hook",
    ) as comp:
        r = httpx.put(
            comp.url + "/api/sites/store-1",
            json={"first_contact": "Sam (store manager)", "second_contact": "Dana (deputy)"},
        )
        assert r.status_code == 200
        pub.event(cue(seq=1, cue_name="call_manager", level=3))
        (alert,) = wait_until(lambda: active(comp), what="an open alert")
        wait_until(lambda: active(comp)[0]["escalated_at"], timeout=10, what="escalation")
        a = active(comp)[0]
        late = 0.8  # check period 0.05 s plus scheduling slack on a busy test machine
        assert escalate <= a["escalated_at"] - a["opened_at"] < escalate + late
        trail = httpx.get(f"{comp.url}/api/alerts/{alert['id']}").json()["audit"]
        actions = [t["action"] for t in trail]
        # re-notified every 1.0 s until the escalation at 2.5 s (two, unless the machine stalls)
        assert actions[0] == "opened" and actions[-1] == "escalated"
        assert set(actions[1:-1]) == {"renotified"} and len(actions) in (3, 4)
        times = [t["at"] for t in trail[:-1]]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(renotify <= g < renotify + late for g in gaps), gaps
        assert trail[-1]["detail"] == "second contact: Dana (deputy)"
        wait_until(lambda: _Hook.received, timeout=5, what="the webhook (after one 503)")
        assert _Hook.received[0]["escalated"] is True
        assert _Hook.received[0]["contact"] == "Dana (deputy)"
        published = [m for m in mgr_dev.messages if m[1].endswith("/call_manager")]
        assert [m[2]["notify_count"] for m in published] == list(range(1, len(actions) + 1))
        assert published[-1][2]["escalated"] is True
        assert published[-1][2]["contact"] == "Dana (deputy)"
        assert published[0][2]["contact"] == "Sam (store manager)"

        httpx.post(f"{comp.url}/api/alerts/{alert['id']}/ack")
        n = len(audit(comp, alert["id"]))
        time.sleep(2 * renotify)
        assert len(audit(comp, alert["id"])) == n, "an acknowledged alert must stay quiet"
    mgr_dev.close()
    hook.shutdown()


def test_device_registry_and_silent_device_alarm(db_url, mosquitto, pub):
    with running_companion(db_url, mosquitto.url, silent_device_s=0.6, alert_check_s=0.05) as comp:
        base = "calmcue/v1/store-1/counter-3"
        pub.send(base + "/status", "online", retain=True)
        tele = {
            "firmware": "0.3.1",
            "model": {"id": "stress-v2", "hash": "ab12"},
            "heap": 61000,
            "rssi": -61,
            "queue": 0,
        }
        pub.send(base + "/tele", tele)
        (dev,) = wait_until(lambda: httpx.get(comp.url + "/api/devices").json(), what="registry")
        wait_until(lambda: httpx.get(comp.url + "/api/devices").json()[0]["firmware"], what="tele")
        dev = httpx.get(comp.url + "/api/devices").json()[0]
        assert (dev["status"], dev["firmware"], dev["model"]) == ("online", "0.3.1", "stress-v2")
        assert json.loads(dev["tele"])["rssi"] == -61

        (alarm,) = wait_until(lambda: active(comp), timeout=5, what="the silent-device alarm")
        assert (alarm["kind"], alarm["device"]) == ("silent_device", "counter-3")
        assert httpx.get(comp.url + "/api/devices").json()[0]["silent"] is True

        pub.send(base + "/tele", tele)  # it speaks again
        wait_until(lambda: not active(comp), timeout=5, what="the alarm to clear")
        assert audit(comp, alarm["id"])[-1] == ("resolved", "system", "resolved")

        pub.send(base + "/status", "offline", retain=True)  # the broker's LWT
        wait_until(
            lambda: httpx.get(comp.url + "/api/devices").json()[0]["status"] == "offline",
            what="offline from the LWT",
        )
