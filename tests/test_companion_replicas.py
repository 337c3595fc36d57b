"""Two companion replicas on one PostgreSQL database behind one Mosquitto (shared
subscription): every event stored exactly once, and each replica's live feed shows everything,
whichever replica stored it."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, wait_until
from pydantic import ValidationError
from sqlalchemy import func, select

from companion.config import Settings
from companion.db import events

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


def listen(url: str, got: list[tuple[str, dict]], stop: threading.Event) -> threading.Thread:
    def run() -> None:
        with httpx.stream("GET", url + "/api/stream", timeout=30) as r:
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind in ("event", "alert"):
                    got.append((kind, json.loads(line[6:])))
                if stop.is_set():
                    return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_replicas_share_the_ingest_and_the_live_feed(db_url, mosquitto):
    shared = {"mqtt_shared_group": "companions"}
    with (
        running_companion(db_url, mosquitto.url, **shared) as a,
        running_companion(db_url, mosquitto.url, **shared) as b,
    ):
        seen_a: list[tuple[str, dict]] = []
        seen_b: list[tuple[str, dict]] = []
        stop = threading.Event()
        listen(a.url, seen_a, stop)
        listen(b.url, seen_b, stop)
        wait_until(lambda: a.app.state.feed._subs and b.app.state.feed._subs, what="2 streams")
        pub = Publisher(mosquitto.port)
        n = 200
        for i in range(n):
            pub.event(cue(device=f"counter-{i % 4}", seq=i, cue_name="empathize"))
        total = lambda: a.ingest.counters().stored + b.ingest.counters().stored  # noqa: E731
        wait_until(lambda: total() == n, timeout=20, what=f"{n} events stored")
        assert a.ingest.counters().stored > 0 and b.ingest.counters().stored > 0  # shared
        with a.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(events)).scalar() == n
        for seen in (seen_a, seen_b):  # each dashboard sees every event, stored where it may
            wait_until(
                lambda s=seen: len({e["id"] for k, e in s if k == "event"}) == n,
                timeout=10,
                what="every event on each live feed",
            )

        pub.event(cue(device="counter-1", seq=n, cue_name="call_manager", level=3))
        for seen in (seen_a, seen_b):
            wait_until(lambda s=seen: any(k == "alert" for k, _ in s), what="the alert on both")
        (alert,) = httpx.get(a.url + "/api/alerts").json()
        assert httpx.post(f"{b.url}/api/alerts/{alert['id']}/ack").status_code == 200
        wait_until(
            lambda: any(k == "alert" and e["state"] == "acknowledged" for k, e in seen_a),
            what="the acknowledgement made on B, on A's feed",
        )
        # relayed with the context the changing replica sent (the cue's level, the contacts)
        relayed = next(e for k, e in seen_a if k == "alert" and e["state"] == "acknowledged")
        assert relayed["level"] == 3 and "contact" in relayed and "site_name" in relayed
        stop.set()
        pub.close()


def test_replicas_refuse_sqlite():
    with pytest.raises(ValidationError, match="need one PostgreSQL database"):
        Settings(mqtt_shared_group="companions", db_url="sqlite:///var/x.db")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_replicas_renotify_an_alert_once_per_period(db_url, mosquitto):
    timing = {"mqtt_shared_group": "companions", "alert_renotify_s": 0.3,
              "alert_escalate_s": 100.0, "alert_check_s": 0.02}  # fmt: skip
    with (
        running_companion(db_url, mosquitto.url, **timing) as a,
        running_companion(db_url, mosquitto.url, **timing),
    ):
        pub = Publisher(mosquitto.port)
        pub.event(cue(seq=1, cue_name="call_manager", level=3))
        (alert,) = wait_until(lambda: httpx.get(a.url + "/api/alerts").json(), what="alert")
        wait_until(
            lambda: len(httpx.get(f"{a.url}/api/alerts/{alert['id']}").json()["audit"]) >= 4,
            what="three re-notifications",
        )
        trail = httpx.get(f"{a.url}/api/alerts/{alert['id']}").json()["audit"]
        times = [t["at"] for t in trail]
        gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
        assert all(g >= 0.3 for g in gaps), gaps  # both watchers run; neither doubles a step
        pub.close()
