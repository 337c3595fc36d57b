"""Dashboard statistics with small-group suppression, CSV export, retention purge, /metrics."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime

import httpx
import pytest
from companion_helpers import Publisher, cue, running_companion, wait_until
from sqlalchemy import func, select, update

from companion import ops
from companion.db import alert_audit, alerts, events
from firmware.core import cue_table

pytest_plugins = ("companion_fixtures",)  # the db_url fixture: SQLite and PostgreSQL


def at(hour: int, minute: int = 0, days_ago: int = 0) -> float:
    return datetime.combine(
        date.today() - timedelta(days=days_ago), dtime(hour, minute)
    ).timestamp()


@pytest.fixture
def comp(db_url, mosquitto):
    with running_companion(db_url, mosquitto.url, min_group_size=3) as c:
        pub = Publisher(mosquitto.port)
        seq = iter(range(1000))
        for m in range(4):
            pub.event(cue(device="counter-1", seq=next(seq), cue_name="empathize", ts=at(10, m)))
        for m in range(2):
            pub.event(
                cue(
                    device="counter-2",
                    seq=next(seq),
                    cue_name="call_manager",
                    level=3,
                    ts=at(11, m),
                )
            )
        for m, ttd in enumerate((10.0, 20.0, 40.0)):
            pub.event(
                cue(
                    device="counter-1",
                    seq=next(seq),
                    cue_name="settled",
                    level=1,
                    score=0.2,
                    ttd_s=ttd,
                    ts=at(10, 30 + m),
                )
            )
        for m in range(5):  # last week
            pub.event(
                cue(
                    device="counter-1",
                    seq=next(seq),
                    cue_name="slow_down",
                    level=1,
                    ts=at(9, m, days_ago=7),
                )
            )
        wait_until(lambda: c.ingest.counters().stored == 14, what="14 events")
        pub.close()
        yield c


def test_stats_count_today_and_suppress_small_groups(comp):
    s = httpx.get(comp.url + "/api/stats").json()
    today = s["today"]
    counted = {"empathize": 4, "call_manager": None, "settled": 3}  # every other cue: none
    assert today["by_type"] == {c: counted.get(c, 0) for c in cue_table.names()}
    assert today["total"] == 9
    assert today["per_hour"][10] == 7 and today["per_hour"][11] is None
    assert today["per_hour"][9] == 0
    assert today["per_counter"] == {"store-1/counter-1": 7, "store-1/counter-2": None}
    assert today["time_to_deescalate"] == {"n": 3, "median_s": 20.0, "p90_s": 40.0}
    weeks = s["weekly"]
    assert len(weeks) == 8 and weeks[-1]["total"] == 9
    assert weeks[-2]["by_type"]["slow_down"] == 5
    assert s["min_group_size"] == 3


def test_csv_export(comp):
    r = httpx.get(comp.url + "/api/events.csv", params={"site": "store-1"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 14 and rows[0]["cue"] == "empathize" and rows[0]["device"] == "counter-1"
    assert [int(x["seq"]) for x in rows] == sorted(int(x["seq"]) for x in rows)
    assert {"id", "site", "device", "boot", "seq", "type", "cue", "score", "ttd_s"} <= set(rows[0])
    since = httpx.get(comp.url + "/api/events.csv", params={"since": time.time() + 60}).text
    assert since.strip().count("\n") == 0  # header only


def test_retention_purge_removes_old_rows_only(comp):
    db = comp.engine
    alert = wait_until(lambda: httpx.get(comp.url + "/api/alerts").json(), what="alert")[0]
    httpx.post(f"{comp.url}/api/alerts/{alert['id']}/resolve")
    old = time.time() - 100 * 86400
    with db.begin() as conn:
        conn.execute(update(events).where(events.c.cue == "slow_down").values(received_at=old))
        conn.execute(update(alerts).values(resolved_at=old))
    assert ops.purge(db, 90) == {"events": 5, "dead_letters": 0, "alerts": 1}
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 9
        assert conn.execute(select(func.count()).select_from(alert_audit)).scalar() == 0
    assert ops.purge(db, 90) == {"events": 0, "dead_letters": 0, "alerts": 0}


def test_metrics_in_prometheus_text_format(comp):
    r = httpx.get(comp.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE calmcue_ingest_stored_total counter" in text
    assert re.search(r"^calmcue_ingest_stored_total 14$", text, re.M)
    assert re.search(
        r'^calmcue_alerts_active\{kind="call_manager",site="store-1",state="open"\} 1$', text, re.M
    )
    assert re.search(r"^calmcue_mqtt_connected 1$", text, re.M)
    for line in text.splitlines():  # every line is a comment or `name{labels} value`
        assert line.startswith("# ") or re.fullmatch(r"[a-z_]+(\{[^}]*\})? -?[0-9.e+]+", line), line


def test_cli_purge(tmp_path, capsys):
    from calmcue.cli import main

    assert main(["companion", "purge", "--days", "30", "--db", f"sqlite:///{tmp_path}/x.db"]) == 0
    assert "0 events" in capsys.readouterr().out
