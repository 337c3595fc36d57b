"""Screenshots of every dashboard page at a phone's and a desk's size, into docs/screenshots
(`make screenshots`, or `python -m companion.screens`), from a companion seeded with a week of a
store's cues and alerts. Chromium is Debian's, driven by Playwright (the test extra).

The seed is shared with the browser tests (tests/test_manager_screens.py), so the pictures show
what the tests check. Pages are named docs/screenshots/<page>-<width>.png; a page is added to
PAGES with the user who sees it and what to wait for.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from companion import store, users
from companion.db import events
from firmware.core import cue_table

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# the sample store's cues: how many of each level in a draw, and the reason each level gives
SAMPLE_WEIGHTS = {1: 4, 2: 3, cue_table.ALERT_LEVEL: 1}
SAMPLE_REASONS = {1: "pace", 2: "sustained", cue_table.ALERT_LEVEL: "rising"}
SIZES = {"390": (390, 844), "1440": (1440, 900)}
OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

# who logs in (username, password) for each page; what shows the page is ready
PASSWORDS = {"ann": "ann-pass-1", "ivy": "ivy-pass-1", "admin": "admin-pass-1"}


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    user: str | None  # None: not logged in
    ready: str  # CSS selector that is there once the page has drawn


PAGES = [
    Page("login", "/login", None, "input[name=username]"),
    Page("manager", "/", "ann", "#fig-ttd svg circle, #fig-ttd svg rect"),
    Page("fleet-devices", "/it#devices", "ivy", "#device-table tbody tr"),
    Page("fleet-config", "/it#config", "ivy", "#cfg-table tbody tr"),
    Page("fleet-rollouts", "/it#rollouts", "ivy", "#rollouts:not([hidden])"),
    Page("fleet-dead-letters", "/it#dead-letters", "ivy", "#dead-letters:not([hidden])"),
    Page("fleet-people", "/it#people", "admin", "#token-table"),
]


def seed_store(engine: Engine, *, days: int = 7, rng_seed: int = 15) -> dict[str, Any]:
    """Two named stores with contacts, a manager (ann), IT (ivy) and an admin; a week of cues at
    four counters, busier around midday, with settled conversations and their times to
    de-escalate. Returns what was made."""
    for name, role, sites in (
        ("ann", "manager", ["store-1", "store-2"]),
        ("ivy", "it", None),
        ("admin", "admin", None),
    ):
        if users.user_by_name(engine, name) is None:
            users.create_user(
                engine, username=name, password=PASSWORDS[name], role=role, sites=sites
            )
    store.upsert_site(
        engine, site="store-1", name="Riverside", first_contact="Ann (floor manager)",
        second_contact="Bob (deputy, ext. 214)",
    )  # fmt: skip
    store.upsert_site(engine, site="store-2", name="Old Town", first_contact="Ann")
    rng = random.Random(rng_seed)
    now = time.time()
    today = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0)
    counters = [("store-1", "counter-1"), ("store-1", "counter-2"), ("store-1", "desk-3"),
                ("store-2", "counter-1")]  # fmt: skip
    # each cue of the table, the higher levels rarer (the manager called about once in 15 cues)
    mix = [name for name in cue_table.names() for _ in range(SAMPLE_WEIGHTS[cue_table.level(name)])]
    rows: list[dict[str, Any]] = []
    seq = 0
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        for site, device in counters:
            for _ in range(rng.randint(12, 26) if site == "store-1" else rng.randint(2, 6)):
                at = day + timedelta(hours=rng.choice([9, 10, 11, 12, 12, 13, 13, 14, 15, 16, 17]),
                                     minutes=rng.randint(0, 59))  # fmt: skip
                t = at.timestamp()
                if t > now - 60:
                    continue
                cue_name = rng.choice(mix)
                level = cue_table.level(cue_name)
                seq += 1
                rows.append({
                    "site": site, "device": device, "boot": 1, "seq": seq, "type": "cue",
                    "up_ms": seq * 1000, "ts": t, "received_at": t + 0.2, "conv": f"{seq:08x}",
                    "cue": cue_name, "level": level,
                    "score": round(rng.uniform(0.55, 0.95), 2),
                    "reason": None if cue_name == "settled" else SAMPLE_REASONS[level],
                    "ttd_s": round(rng.uniform(20, 140), 1) if cue_name == "settled" else None,
                })  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(events), rows)
    for site, device in counters:
        store.register_device(engine, site=site, device=device)
    return {"events": len(rows), "counters": counters}


def call_manager_event(engine: Engine, site: str, device: str, reason: str) -> dict[str, Any]:
    """A stored call_manager cue (as the ingest would store it), for an alert to point at."""
    now = time.time()
    row = {"site": site, "device": device, "boot": 2, "seq": int(now * 1000) % 10**9,
           "type": "cue", "up_ms": 1, "ts": now, "received_at": now, "cue": "call_manager",
           "level": 3, "score": 0.91, "reason": reason}  # fmt: skip
    with engine.begin() as conn:
        row["id"] = conn.execute(insert(events).values(**row)).inserted_primary_key[0]  # type: ignore[index]
    return row


def seed_alerts(app_state: Any) -> None:
    """A past alert (resolved), and now: one acknowledged at desk-3 and a silent device."""
    mgr = app_state.alerts
    engine = app_state.engine
    past = mgr.open("store-2", "counter-1", "call_manager",
                    event=call_manager_event(engine, "store-2", "counter-1", "sustained"))  # fmt: skip
    if past:
        mgr.acknowledge(past["id"], "user:ann", site="store-2")
        mgr.resolve(past["id"], "user:ann", site="store-2")
    acked = mgr.open("store-1", "desk-3", "call_manager",
                     event=call_manager_event(engine, "store-1", "desk-3", "intense"))  # fmt: skip
    if acked:
        mgr.acknowledge(acked["id"], "user:ann", site="store-1")
    mgr.open("store-1", "counter-1", "silent_device")


def _login(context: Any, base: str, user: str) -> None:
    page = context.new_page()
    page.goto(base + "/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    page.close()


def take(base: str, out: Path, pages: list[Page] | None = None) -> list[Path]:
    """Screenshot each page at both sizes (full page) into `out`; returns the files."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for pg in pages or PAGES:
            for width, (w, h) in SIZES.items():
                context = browser.new_context(
                    viewport={"width": w, "height": h}, device_scale_factor=1,
                    is_mobile=w < 600, has_touch=w < 600,
                )  # fmt: skip
                if pg.user:
                    _login(context, base, pg.user)
                page = context.new_page()
                page.goto(base + pg.path)
                page.wait_for_selector(pg.ready, timeout=15_000)
                page.wait_for_timeout(300)  # the last chart settles
                path = out / f"{pg.name}-{width}.png"
                page.screenshot(path=str(path), full_page=True)
                made.append(path)
                context.close()
        browser.close()
    return made


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from calmcue.shared.broker import Mosquitto
    from companion.config import Settings
    from companion.server import start

    ap = argparse.ArgumentParser(prog="python -m companion.screens", description=__doc__)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for <page>-<width>.png")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="calmcue-screens-") as tmp, Mosquitto() as broker:
        comp = start(
            Settings(
                env="development", db_url=f"sqlite:///{tmp}/c.db", data_dir=Path(tmp),
                mqtt_url=broker.url, port=0, mqtt_client_id=f"screens-{time.monotonic_ns()}",
                alert_escalate_s=2.0,
            )  # fmt: skip
        )
        try:
            seed_store(comp.engine)
            seed_alerts(comp.app.state)
            comp.app.state.alerts.open(
                "store-1", "counter-2", "call_manager",
                event=call_manager_event(comp.engine, "store-1", "counter-2", "rising"),
            )  # fmt: skip
            time.sleep(3.5)  # the watcher escalates the open call to the second contact
            for f in take(comp.url, args.out):
                print(f)
        finally:
            comp.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
