"""Fault benchmark (`make bench`): the runs of tests/test_companion_faults.py, larger, and the
10-minute companion outage in real time at the documented fleet rate (20 events/s and 20
telemetry messages/s while the companion is down, then it starts and catches up). Each prints
published vs stored, lost, duplicated rows and dead letters. SQLite, and PostgreSQL too when
its server binaries are installed (a private server, as the tests start)."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from companion import faults

REALTIME_OUTAGE_S = float(os.environ.get("CALMCUE_BENCH_OUTAGE_S", "600"))


def _pg() -> Any:
    sys.path.insert(0, str(faults.REPO / "tests"))
    try:
        from harness_pg import PostgresUnavailable, PrivatePostgres  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    try:
        return PrivatePostgres().start()
    except (PostgresUnavailable, OSError) as exc:
        print(f"   PostgreSQL runs skipped: {exc}", flush=True)
        return None


def _pg_db(server: Any) -> str:
    from sqlalchemy import create_engine

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return str(server.url.rsplit("/", 1)[0] + "/" + name)


def _one(name: str, run: Callable[[str, Path], dict[str, Any]], db: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="calmcue-faults-") as tmp:
        url = db if db != "sqlite" else f"sqlite:///{Path(tmp) / 'companion.db'}"
        try:
            figures = run(url, Path(tmp))
        except Exception as exc:  # report it; the other runs go on
            figures = {"error": repr(exc)}
    label = "sqlite" if db == "sqlite" else "postgresql"
    print(f"   {name} ({label}): " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return figures


def main() -> dict[str, Any]:
    runs: dict[str, Callable[[str, Path], dict[str, Any]]] = {
        "kill -9 during ingest": lambda u, d: faults.kill9_during_ingest(u, d, n=20_000),
        "broker restart": lambda u, d: faults.broker_restart_mid_stream(u, d, n=20_000, rate=4000),
        "poison in the stream": lambda u, d: faults.poison_in_stream(u, d, n=20_000),
        "10,000 fuzzed": lambda u, d: faults.fuzzed_stream(u, d, n_fuzz=10_000, n_good=10_000),
    }
    out: dict[str, Any] = {}
    server = _pg()
    try:
        for name, run in runs.items():
            out[f"{name} (sqlite)"] = _one(name, run, "sqlite")
            if server is not None:
                out[f"{name} (postgresql)"] = _one(name, run, _pg_db(server))
    finally:
        if server is not None:
            server.stop()
    name = f"{REALTIME_OUTAGE_S:.0f} s companion outage in real time at 20 events/s"
    out[f"{name} (sqlite)"] = _one(
        name,
        lambda u, d: faults.companion_outage(
            u, d, events_per_s=20, outage_s=REALTIME_OUTAGE_S, realtime=True
        ),
        "sqlite",
    )
    return out


if __name__ == "__main__":
    main()
