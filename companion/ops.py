"""Operations: retention purge, Prometheus metrics, CSV export."""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, delete, func, select

from companion.db import EVENT_FIELDS, alerts, dead_letters, devices, events
from companion.ingest import IngestCounters

log = logging.getLogger("calmcue.companion.ops")


def purge(engine: Engine, retention_days: int, now: float | None = None) -> dict[str, int]:
    """Delete events, dead letters and resolved alerts (with their audit) older than the
    retention period. Returns how many rows of each went."""
    cutoff = (now or time.time()) - retention_days * 86400
    with engine.begin() as conn:
        n_events = conn.execute(delete(events).where(events.c.received_at < cutoff)).rowcount
        n_dead = conn.execute(
            delete(dead_letters).where(dead_letters.c.received_at < cutoff)
        ).rowcount
        n_alerts = conn.execute(
            delete(alerts).where(and_(alerts.c.state == "resolved", alerts.c.resolved_at < cutoff))
        ).rowcount
    out = {"events": n_events, "dead_letters": n_dead, "alerts": n_alerts}
    if any(out.values()):
        log.info("retention purge (older than %d days): %s", retention_days, out)
    return out


class Purger:
    """Runs `purge` at start and then every `interval_s` on its own thread."""

    def __init__(self, engine: Engine, retention_days: int, interval_s: float):
        self.engine = engine
        self.retention_days = retention_days
        self.interval_s = interval_s
        self.purged = {"events": 0, "dead_letters": 0, "alerts": 0}
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="calmcue-purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                for k, v in purge(self.engine, self.retention_days).items():
                    self.purged[k] += v
                self.runs += 1
            except Exception:
                log.exception("retention purge failed; trying again next time")
            if self._stop.wait(self.interval_s):
                return


def metrics_text(engine: Engine, counters: IngestCounters, purger: Purger | None) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{lab}}} {float(value):g}" if lab else f"{name} {float(value):g}")

    c = asdict(counters)
    for key, help_ in (
        ("received", "MQTT messages received"),
        ("stored", "events stored (first delivery)"),
        ("duplicates", "redelivered events not stored again"),
        ("dead_lettered", "messages kept as dead letters"),
        ("device_updates", "status and telemetry updates"),
        ("batches", "write batches committed"),
        ("isolated", "rows the database refused in a batch, kept as dead letters"),
        ("write_errors", "batches the database refused (then written row by row)"),
        ("connects", "MQTT (re)connections"),
    ):
        metric(f"calmcue_ingest_{key}_total", "counter", help_, [({}, c[key])])
    metric(
        "calmcue_ingest_queue_depth",
        "gauge",
        "messages waiting for the writer",
        [({}, c["queue_depth"])],
    )
    metric(
        "calmcue_mqtt_connected", "gauge", "1 when connected to the broker", [({}, c["connected"])]
    )
    with engine.connect() as conn:
        active = conn.execute(
            select(alerts.c.site, alerts.c.kind, alerts.c.state, func.count())
            .where(alerts.c.state != "resolved")
            .group_by(alerts.c.site, alerts.c.kind, alerts.c.state)
        ).all()
        devs = conn.execute(select(devices.c.status, func.count()).group_by(devices.c.status)).all()
        silent = conn.execute(
            select(func.count()).select_from(devices).where(devices.c.silent.is_(True))
        ).scalar_one()
    metric(
        "calmcue_alerts_active",
        "gauge",
        "open or acknowledged alerts",
        [({"site": s, "kind": k, "state": st}, n) for s, k, st, n in active],
    )
    metric("calmcue_devices", "gauge", "devices by status", [({"status": s}, n) for s, n in devs])
    metric("calmcue_devices_silent", "gauge", "devices that stopped reporting", [({}, silent)])
    if purger is not None:
        metric(
            "calmcue_purged_total",
            "counter",
            "rows removed by the retention purge",
            [({"table": t}, n) for t, n in purger.purged.items()],
        )
    return "\n".join(lines) + "\n"


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def events_csv(
    engine: Engine,
    *,
    sites: frozenset[str] | None,
    site: str | None = None,
    since: float | None = None,
    until: float | None = None,
    chunk: int = 1000,
) -> Iterator[str]:
    """CSV of events (oldest first), streamed in chunks so a year of data needs little memory.
    `time` (the device's time, else when received), `ts` and `received_at` are ISO 8601 with
    the companion's UTC offset, which spreadsheets read as dates."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("time",) + EVENT_FIELDS)
    yield buf.getvalue()
    last_id = 0
    while True:
        q = select(events).where(events.c.id > last_id).order_by(events.c.id).limit(chunk)
        if sites is not None:
            q = q.where(events.c.site.in_(sorted(sites)))
        if site is not None:
            q = q.where(events.c.site == site)
        if since is not None:
            q = q.where(events.c.received_at >= since)
        if until is not None:
            q = q.where(events.c.received_at < until)
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.writer(buf)
        for r in rows:
            m = r._mapping
            when = m["ts"] if m["ts"] is not None else m["received_at"]
            writer.writerow(
                [_iso(when)]
                + ["" if m[f] is None else _iso(m[f]) if f in _TIMES else m[f] for f in EVENT_FIELDS]
            )
        last_id = rows[-1].id
        yield buf.getvalue()


_TIMES = frozenset({"ts", "received_at"})


def _iso(t: float) -> str:
    """Unix seconds as ISO 8601 local time with its offset, to the millisecond."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")
