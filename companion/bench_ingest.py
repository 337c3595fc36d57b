"""Companion benchmark (`make bench`): everything real — a private Mosquitto, the companion
(uvicorn, SQLite file), device publishers and a dashboard live-feed reader in their own processes.

1. Sustained ingest: publishers send `BURST` cue events at QoS 1 as fast as they can; the rate is
   events stored / time from the first publish to the last commit. Target ≥ 5,000 events/s.
2. Live-feed latency: a publisher paces 1,000 events/s for `LATENCY_S` seconds; a Server-Sent
   Events reader (what the dashboard uses) records now - event.ts for every event it receives.
   Target p95 ≤ 250 ms.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

BURST = 40_000
PUBLISHERS = 2
BACKGROUND_RATE = 1000
LATENCY_S = 10.0


def _event(site: str, device: str, boot: int, seq: int, ts: float) -> bytes:
    return json.dumps(
        {"v": 1, "type": "cue", "site": site, "device": device, "boot": boot, "seq": seq,
         "up_ms": seq, "ts": round(ts, 6), "conv": "0badc0de", "cue": "empathize", "level": 2,
         "score": 0.71, "conv_s": 12.0},
        separators=(",", ":"),
    ).encode()  # fmt: skip


def _publish(port: int, device: str, count: int, rate: float | None, start_at: float) -> None:
    """A device process: `count` events, as fast as possible (rate None) or paced."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{device}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topic = f"calmcue/v1/bench/{device}/evt/cue"
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    last = None
    for seq in range(count):
        if rate:
            due = t0 + seq / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        last = client.publish(topic, _event("bench", device, 1, seq, time.time()), qos=1)
    if last is not None:
        last.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _read_feed(url: str, expect: int, out: Any, ready: Any) -> None:
    """The dashboard's view: one SSE connection, latency of each event from its publish time."""
    import httpx

    lat: list[float] = []
    with httpx.stream("GET", url + "/api/stream", timeout=60) as r:
        ready.set()
        for line in r.iter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if "ts" in ev:
                    lat.append(time.time() - ev["ts"])
                    if len(lat) >= expect:
                        break
    out.put(lat)


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def main() -> dict[str, Any]:
    from calmcue.shared.broker import Mosquitto
    from companion.config import Settings
    from companion.server import start

    ctx = mp.get_context("spawn")  # clean child processes, no inherited threads
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="calmcue-bench-") as tmp, Mosquitto() as broker:
        settings = Settings(
            env="demo",
            db_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            mqtt_url=broker.url,
            port=0,
            mqtt_client_id="bench-companion",
        )
        comp = start(settings)
        try:
            while not comp.ingest.counters().subscribed:
                time.sleep(0.02)

            # 1. sustained ingest
            per = BURST // PUBLISHERS
            start_at = time.time() + 1.0
            procs = [
                ctx.Process(target=_publish, args=(broker.port, f"burst-{i}", per, None, start_at))
                for i in range(PUBLISHERS)
            ]
            for p in procs:
                p.start()
            total = per * PUBLISHERS
            deadline = time.monotonic() + 300
            while comp.ingest.counters().stored < total and time.monotonic() < deadline:
                time.sleep(0.005)
            elapsed = time.time() - start_at
            for p in procs:
                p.join(30)
            c = comp.ingest.counters()
            rate = c.stored / elapsed
            results["ingest_events"] = c.stored
            results["ingest_seconds"] = round(elapsed, 2)
            results["ingest_events_per_s"] = round(rate)
            results["ingest_target_events_per_s"] = 5000
            results["ingest_duplicates"] = c.duplicates
            results["ingest_dead_letters"] = c.dead_lettered
            print(f"   sustained ingest: {c.stored} events in {elapsed:.2f} s = {rate:,.0f} events/s "
                  f"(target >= 5,000) via Mosquitto into SQLite")  # fmt: skip

            # 2. publish -> live feed latency at 1,000 events/s
            n = int(BACKGROUND_RATE * LATENCY_S)
            q = ctx.Queue()
            ready = ctx.Event()
            reader = ctx.Process(target=_read_feed, args=(comp.url, n, q, ready))
            reader.start()
            ready.wait(30)
            time.sleep(0.5)
            pub = ctx.Process(
                target=_publish,
                args=(broker.port, "paced", n, BACKGROUND_RATE, time.time() + 0.5),
            )
            pub.start()
            lat = q.get(timeout=LATENCY_S + 120)
            pub.join(30)
            reader.join(10)
            p50, p95, mx = (_pct(lat, 50) * 1000, _pct(lat, 95) * 1000, max(lat) * 1000)
            results["feed_events"] = len(lat)
            results["feed_rate_per_s"] = BACKGROUND_RATE
            results["feed_latency_p50_ms"] = round(p50, 1)
            results["feed_latency_p95_ms"] = round(p95, 1)
            results["feed_latency_max_ms"] = round(mx, 1)
            results["feed_latency_target_p95_ms"] = 250
            print(f"   publish -> live feed at {BACKGROUND_RATE}/s: p50 {p50:.0f} ms, "
                  f"p95 {p95:.0f} ms (target <= 250), max {mx:.0f} ms over {len(lat)} events")  # fmt: skip
        finally:
            comp.stop()
    return results


if __name__ == "__main__":
    main()
