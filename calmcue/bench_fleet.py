"""`calmcue bench fleet`: N simulated devices (calmcue/fleet_sim.py) over real MQTT connections
against a real companion, measured.

What runs: a broker (default: the embedded one, a private Mosquitto with one generated account
and the per-device access rules for every simulated device, as `calmcue run` starts it; or
`--mqtt URL`, whose account every device then uses), the companion as its own process
(`calmcue companion serve`, SQLite file by default, `--db URL` for PostgreSQL) and the devices in
simulator processes of up to `PER_PROCESS` devices each. This process watches what the
dashboard sees (the companion's Server-Sent Events feed, /api/stream) and the events table.

Phases: connect (every device at once: the first connect storm), traffic for `--duration`
seconds at `--rate-multiple` times the field rate per device, with `--storm` a reconnect storm
(every device loses its link at the same instant without DISCONNECT, so the broker publishes
every LWT, and reconnects at once), then a clean stop (queued events delivered, `offline`).

Figures: connect storm duration (first connect and storm: from the start / the drop to the last
CONNACK), event -> stored p50/p95 (the time this process first sees the row in the events
table, polled every `POLL_S`, minus the event's `ts` stamped at publish; and the row's own
`received_at`, when the companion took the message off the wire), call_manager event ->
live feed p95 (the event on /api/stream, and the alert it opens), events generated / stored /
lost / duplicated, companion and broker RSS and CPU over the traffic phase.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PER_PROCESS = 2500  # devices per simulator process
POLL_S = 0.05  # how often the events table is read for event -> stored
OUT = Path("var/bench/fleet.json")
BENCH_DEVICES = 1000  # make bench
BENCH_DURATION_S = 30.0
DEVICES_PER_SITE = 5  # a chain: ~2,000 stores, ~10,000 devices


def _pct(xs: list[float], p: float) -> float | None:
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 1) if s else None


class ProcStat:
    """CPU seconds and RSS of a process from /proc (Linux)."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def of(pids: list[int | None]) -> Any:
        """One process, or the sum over several (a cluster's nodes)."""
        return ProcStat(pids[0]) if len(pids) == 1 else ProcStats([ProcStat(p) for p in pids])

    def cpu_s(self) -> float | None:
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.tick

    def mem_mb(self, key: str = "VmRSS") -> float | None:
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None


class ProcStats:
    """ProcStat summed over processes (CPU seconds, RSS)."""

    def __init__(self, parts: list[ProcStat]):
        self.parts = parts
        self._last: dict[int, float] = {}

    def cpu_s(self) -> float | None:
        # a killed node counts with the CPU it had used when last seen
        xs = []
        for i, p in enumerate(self.parts):
            x = p.cpu_s()
            if x is not None:
                self._last[i] = x
            xs.append(self._last.get(i))
        return None if any(x is None for x in xs) else sum(x or 0 for x in xs)

    def mem_mb(self, key: str = "VmRSS") -> float | None:
        xs = [x for x in (p.mem_mb(key) for p in self.parts) if x is not None]
        return round(sum(xs), 1) if xs else None


class FeedWatch(threading.Thread):
    """The dashboard's view: /api/stream, time of arrival of every event and alert."""

    def __init__(self, url: str):
        super().__init__(name="fleet-feed", daemon=True)
        self.url = url
        self.events: dict[tuple[str, str, int, int], float] = {}  # (site, dev, boot, seq) -> t
        self.alerts: dict[tuple[str, str, str], float] = {}  # (site, device, conv) -> t
        self.resyncs = 0
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        try:
            with httpx.stream("GET", self.url + "/api/stream", timeout=None) as r:
                self.ready.set()
                kind = ""
                for line in r.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        now = time.time()
                        item = json.loads(line[6:])
                        if kind == "event" and "seq" in item:
                            key = (item["site"], item["device"], item["boot"], item["seq"])
                            self.events.setdefault(key, now)
                        elif kind == "alert" and item.get("kind") == "call_manager":
                            key3 = (item["site"], item["device"], item.get("conv") or "")
                            self.alerts.setdefault(key3, now)
                        elif kind == "resync":
                            self.resyncs += 1
        except Exception:  # the companion went away at the end of the run
            self.ready.set()


class TableWatch(threading.Thread):
    """First sight of each new events row: (site, device, boot, seq) -> (seen, ts, received_at)."""

    def __init__(self, db_url: str):
        super().__init__(name="fleet-db", daemon=True)
        self.db_url = db_url
        self.rows: dict[tuple[str, str, int, int], tuple[float, float, float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url)
        last = 0
        q = text("SELECT id, site, device, boot, seq, ts, received_at FROM events "
                 "WHERE id > :last ORDER BY id")  # fmt: skip
        try:
            while not self.stop.is_set():
                try:
                    with engine.connect() as conn:
                        rows = conn.execute(q, {"last": last}).all()
                except Exception:  # the table is not there yet, or the file is busy
                    rows = []
                now = time.time()
                for r in rows:
                    last = max(last, r.id)
                    self.rows.setdefault((r.site, r.device, r.boot, r.seq),
                                         (now, r.ts or now, r.received_at))  # fmt: skip
                self.stop.wait(POLL_S)
        finally:
            engine.dispose()


def _specs(n: int, creds: Any | None, user: str | None, password: str | None) -> list[Any]:
    from calmcue.fleet_sim import DeviceSpec

    out = []
    for i in range(n):
        site, device = f"store-{i // DEVICES_PER_SITE:04d}", f"sim-{i:05d}"
        if creds is not None:
            out.append(DeviceSpec(site, device, device, creds.passwords[device]))
        else:
            out.append(DeviceSpec(site, device, user, password))
    return out


class Sims:
    """The simulator processes; `ask` sends one command to all and gathers the answers."""

    def __init__(self, brokers: list[tuple[str, int]], specs: list[Any], boot: int):
        from calmcue.fleet_sim import process_main

        ctx = mp.get_context("spawn")
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        nproc = max(1, math.ceil(len(specs) / PER_PROCESS))
        for k in range(nproc):
            parent, child = ctx.Pipe()
            chunk = specs[k::nproc]
            p = ctx.Process(target=process_main, args=(child, brokers, chunk, boot, k),
                            name=f"fleet-sim-{k}", daemon=True)  # fmt: skip
            p.start()
            self.conns.append(parent)
            self.procs.append(p)

    def ask(self, name: str, wait: float, per: list[dict[str, Any]] | None = None,
            **kw: Any) -> list[dict[str, Any]]:  # fmt: skip
        for i, c in enumerate(self.conns):
            c.send((name, per[i] if per else kw))
        out = []
        for c in self.conns:
            if not c.poll(wait):
                raise RuntimeError(f"a simulator process did not answer {name!r} in {wait} s")
            ans = c.recv()
            if "error" in ans:
                raise RuntimeError(f"simulator {name!r} failed: {ans['error']}")
            out.append(ans)
        return out

    def close(self) -> None:
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def _connect_figures(answers: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    connected = sum(a["connected"] for a in answers)
    return {
        "connected": connected,
        "expected": sum(a["expected"] for a in answers),
        "seconds": round(max(a["last_connack"] for a in answers) - t0, 2),
        "connect_errors": sum(a["connect_errors"] for a in answers),
    }


class Companion:
    """`calmcue companion serve` in its own process (its CPU and memory are measured apart)."""

    def __init__(self, workdir: Path, db_url: str, mqtt_url: str, amqp_url: str | None = None):
        from calmcue.shared.broker import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "companion.log", "ab")
        env = {**os.environ, "CALMCUE_MQTT_CLIENT_ID": "bench-fleet-companion",
               "CALMCUE_SILENT_DEVICE_S": "3600"}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "calmcue.cli", "companion", "serve", "--db", db_url,
             "--mqtt", mqtt_url, "--port", str(self.port), "--env", "demo",
             "--data-dir", str(workdir), *(["--amqp", amqp_url] if amqp_url else [])],
            stdout=self.log, stderr=self.log, env=env,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the companion exited ({self.proc.returncode}); see its log")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the companion did not answer /healthz in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def run(
    devices: int,
    rate_multiple: float = 10.0,
    duration: float = 30.0,
    mqtt_url: str | None = None,
    storm: bool = False,
    db_url: str | None = None,
    kill: int = 0,
    out: Path | None = OUT,
    connect_timeout: float | None = None,
    cluster: bool = False,
    kill_node: bool = False,
) -> dict[str, Any]:
    """One measured run; returns the figures (and writes them to `out` unless None).
    `cluster`: a three-node RabbitMQ cluster (calmcue.shared.cluster, per-device accounts and
    rules) instead of Mosquitto; devices get the three node addresses to fail over between
    (device i starts on node i mod 3), the companion consumes the cluster's quorum queue.
    `kill_node`: kill -9 the first node halfway through the traffic (its devices and the
    companion's consumer move to the others)."""
    import logging

    from sqlalchemy import create_engine, text

    from calmcue.shared.broker import Mosquitto, authenticated

    logging.getLogger("httpx").setLevel(logging.WARNING)
    from calmcue.fleet_sim import raise_fd_limit

    fd_limit = raise_fd_limit()
    connect_timeout = connect_timeout or max(60.0, devices / 100)
    res: dict[str, Any] = {"devices": devices, "rate_multiple": rate_multiple,
                           "duration_s": duration, "fd_limit": fd_limit}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="calmcue-fleet-") as tmp:
        work = Path(tmp)
        broker: Mosquitto | None = None
        rabbit: Any = None
        creds: Any = None
        user = password = None
        amqp_url = None
        broker_pids: list[int | None] = []
        if cluster:
            from calmcue.shared.broker_access import COMPANION_USER
            from calmcue.shared.cluster import RabbitCluster

            rabbit = RabbitCluster(workdir=work / "cluster")
            rabbit.add_devices(
                (f"store-{i // DEVICES_PER_SITE:04d}", f"sim-{i:05d}") for i in range(devices)
            )
            t_up = time.time()
            try:
                rabbit.start()
            except BaseException:
                rabbit.close()  # no nodes left running after a start that failed
                raise
            res["cluster_start_s"] = round(time.time() - t_up, 1)
            creds = rabbit
            companion_url = rabbit.mqtt_urls(COMPANION_USER)
            amqp_url = rabbit.amqp_urls(COMPANION_USER)
            brokers = rabbit.mqtt_addresses
            broker_pids = [rabbit.pid(i) for i in range(len(rabbit.nodes))]
            res["broker"] = "RabbitMQ 3-node cluster (per-device accounts and rules)"
        elif mqtt_url is None:
            pairs = [(f"store-{i // DEVICES_PER_SITE:04d}", f"sim-{i:05d}") for i in range(devices)]
            broker, creds = authenticated(pairs, workdir=work / "mqtt")
            broker.start()
            companion_url = creds.url("companion")
            brokers = [("127.0.0.1", broker.port)]
            broker_pids = [broker.proc.pid if broker.proc else None]
            res["broker"] = "embedded Mosquitto (per-device accounts and rules)"
        else:
            u = urlsplit(mqtt_url)
            host, port = u.hostname or "127.0.0.1", u.port or 1883
            brokers = [(host, port)]
            broker_pids = [None]
            user, password = u.username, u.password
            companion_url = mqtt_url
            res["broker"] = f"given: {host}:{port}"
        db_url = db_url or f"sqlite:///{work / 'fleet.db'}"
        res["db"] = db_url.split(":", 1)[0]
        boot = int(time.time())  # a new boot per run: re-runs on one database never collide
        comp = Companion(work, db_url, companion_url, amqp_url)
        sims: Sims | None = None
        feed = TableWatch(db_url)
        live: FeedWatch | None = None
        try:
            comp.wait_ready()
            live = FeedWatch(comp.url)
            live.start()
            live.ready.wait(10)
            feed.start()
            specs = _specs(devices, creds, user, password)
            sims = Sims(brokers, specs, boot)
            stat_c = ProcStat(comp.proc.pid)
            stat_b = ProcStat.of(broker_pids)
            stat_s = [ProcStat(p) for p in sims.pids]

            # 1. everyone connects at once
            t0 = time.time()
            b0, o0 = stat_b.cpu_s(), _listen_overflows()
            res["connect"] = _connect_figures(
                sims.ask("connect", connect_timeout + 30, timeout=connect_timeout), t0
            )
            res["connect"].update(_phase(stat_b, b0, o0, t0))
            if res["connect"]["connected"] < devices:
                res["limited_by"] = _limit_hint(broker, work)

            # 2. traffic, measured
            cpu0 = (stat_c.cpu_s(), stat_b.cpu_s(), [s.cpu_s() for s in stat_s], time.time())
            killer = None
            if rabbit is not None and kill_node:
                def kill_first() -> None:
                    res["node_killed_at_s"] = round(time.time() - cpu0[3], 1)
                    rabbit.kill(0)

                killer = threading.Timer(duration / 2, kill_first)
                killer.start()
            tr = sims.ask("traffic", duration + 60, seconds=duration, multiple=rate_multiple)
            cpu1 = (stat_c.cpu_s(), stat_b.cpu_s(), [s.cpu_s() for s in stat_s], time.time())
            if killer is not None:
                killer.join()
            wall = cpu1[3] - cpu0[3]
            res["traffic"] = {
                "events": sum(a["events"] for a in tr),
                "telemetry": sum(a["telemetry"] for a in tr),
                "events_per_s": round(sum(a["events"] for a in tr) / wall, 1),
                "telemetry_per_s": round(sum(a["telemetry"] for a in tr) / wall, 1),
            }

            def pct_cpu(a: float | None, b: float | None) -> float | None:
                return None if a is None or b is None else round(100 * (b - a) / wall, 1)

            res["companion"] = {"cpu_pct": pct_cpu(cpu0[0], cpu1[0]), "rss_mb": stat_c.mem_mb(),
                                "peak_rss_mb": stat_c.mem_mb("VmHWM")}  # fmt: skip
            res["broker_proc"] = {"cpu_pct": pct_cpu(cpu0[1], cpu1[1]), "rss_mb": stat_b.mem_mb(),
                                  "peak_rss_mb": stat_b.mem_mb("VmHWM")}  # fmt: skip
            res["simulator"] = {
                "processes": len(stat_s),
                "cpu_pct": round(sum(pct_cpu(a, b) or 0 for a, b in zip(cpu0[2], cpu1[2],
                                                                          strict=True)), 1),
                "rss_mb": round(sum(s.mem_mb() or 0 for s in stat_s), 1),
            }  # fmt: skip

            # 3. the reconnect storm
            if storm:
                at = time.time() + 0.5
                b0, o0 = stat_b.cpu_s(), _listen_overflows()
                ans = sims.ask("storm", connect_timeout + 30, at=at, timeout=connect_timeout)
                res["storm"] = _connect_figures(ans, at)
                res["storm"].update(_phase(stat_b, b0, o0, at))
                # and the companion's device list says online for every one of them again
                res["storm"]["companion_all_online"] = _wait_status(
                    db_url, {(sp.site, sp.device) for sp in specs}, "online", time.time(),
                    timeout=connect_timeout) is not None  # fmt: skip
            # 4. devices taken off the network for good (their LWT)
            killed = []
            for k in range(kill):
                proc = k % len(sims.conns)
                sims.conns[proc].send(("kill", {"index": k // len(sims.conns)}))
                killed.append(sims.conns[proc].recv())
            res["killed"] = killed
            if killed:  # their LWT reaches the companion: the device list says offline
                res["lwt_offline_s"] = _wait_status(
                    db_url, {(k["site"], k["device"]) for k in killed}, "offline", time.time()
                )

            # 5. clean stop: everything queued delivered
            stops = sims.ask("stop", 120, timeout=60.0)
            generated: dict[str, list[Any]] = {}
            for s in stops:
                generated.update(s["generated"])
            total = sum(g[2] for g in generated.values())
            deadline = time.monotonic() + 120
            while len(feed.rows) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3 * POLL_S)
            feed.stop.set()
            feed.join(10)
            engine = create_engine(db_url)
            try:
                with engine.connect() as conn:
                    n_rows = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
                    n_keys = conn.execute(text(
                        "SELECT count(*) FROM (SELECT DISTINCT site, device, boot, seq "
                        "FROM events) k")).scalar_one()  # fmt: skip
                    dead = conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one()
            finally:
                engine.dispose()
            expected = {(g[0], d, g[1], s) for d, g in generated.items() for s in range(g[2])}
            stored = set(feed.rows)
            res["events"] = {
                "generated": total,
                "acked": sum(s["acked"] for s in stops),
                "stored": len(stored & expected),
                "lost": len(expected - stored),
                "unexpected": len(stored - expected),
                "duplicate_rows": n_rows - n_keys,
                "dead_letters": dead,
                "reconnects": sum(s["reconnects"] for s in stops),
            }
            # latencies: the traffic phase only (a storm's queued events wait for their link)
            t_end = cpu1[3]
            lat = [seen - ts for (seen, ts, _r) in feed.rows.values() if ts <= t_end]
            rec = [r - ts for (_s, ts, r) in feed.rows.values() if ts <= t_end]
            res["event_to_stored_ms"] = {
                "p50": _pct(lat, 50),
                "p95": _pct(lat, 95),
                "max": _pct(lat, 100),
                "poll_ms": POLL_S * 1000,
            }
            res["event_to_received_ms"] = {"p50": _pct(rec, 50), "p95": _pct(rec, 95)}
            # the same per 10 s of traffic: a start-up transient (the connect storm's status
            # and telemetry still being written) against a backlog that keeps growing
            win: dict[int, list[float]] = {}
            for seen, ts, _r in feed.rows.values():
                if cpu0[3] <= ts <= t_end:
                    win.setdefault(int((ts - cpu0[3]) // 10), []).append(seen - ts)
            res["event_to_stored_p95_ms_per_10s"] = [_pct(win[k], 95) for k in sorted(win)]
            if feed.rows:  # what the companion got through, traffic start to the last row
                last = max(v[0] for v in feed.rows.values())
                res["events"]["stored_per_s"] = round(len(feed.rows) / (last - cpu0[3]), 1)
                res["events"]["last_stored_after_traffic_s"] = round(last - t_end, 1)
            if live is not None:  # the feed item is sent right after the commit
                fl = [live.events[k] - v[1] for k, v in feed.rows.items()
                      if k in live.events and v[1] <= t_end]  # fmt: skip
                res["event_to_feed_ms"] = {"events": len(fl), "p50": _pct(fl, 50),
                                           "p95": _pct(fl, 95)}  # fmt: skip
            cm = [x for s in stops for x in s["call_manager"] if x[3] <= t_end]
            ts_of = {(e[0], e[1], e[2]): e[3] for e in reversed(cm)}  # the first per conversation
            if live is not None:
                cm_feed = _call_manager_feed(live, feed, cm)
                al = [t - ts_of[k] for k, t in live.alerts.items() if k in ts_of]
                res["call_manager_to_feed_ms"] = {"events": len(cm_feed), "p50": _pct(cm_feed, 50),
                                                  "p95": _pct(cm_feed, 95)}  # fmt: skip
                res["call_manager_to_alert_ms"] = {"alerts": len(al), "p50": _pct(al, 50),
                                                   "p95": _pct(al, 95)}  # fmt: skip
                res["feed_resyncs"] = live.resyncs
        finally:
            if live is not None:
                live.stop.set()
            feed.stop.set()
            if sims is not None:
                sims.close()
            comp.stop()
            res["companion_log_tail"] = _tail(work / "companion.log")
            if broker is not None:
                broker.close()
            if rabbit is not None:
                rabbit.close()
    print(table_line(res), flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        runs: list[Any] = []
        if out.exists():
            try:
                runs = json.loads(out.read_text()).get("runs", [])
            except (ValueError, AttributeError):
                runs = []
        runs.append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **res})
        out.write_text(json.dumps({"runs": runs}, indent=2))
    return res


def _wait_status(db_url: str, want: set[tuple[str, str]], status: str, t0: float,
                 timeout: float = 30.0) -> float | None:  # fmt: skip
    """Seconds from t0 until the companion's device list shows every device of `want` with
    `status` (None: not within the timeout)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        while time.time() - t0 < timeout:
            with engine.connect() as conn:
                off = {
                    (r.site, r.device)
                    for r in conn.execute(
                        text("SELECT site, device FROM devices WHERE status = :s"), {"s": status}
                    )
                }
            if want <= off:
                return round(time.time() - t0, 2)
            time.sleep(0.05)
    finally:
        engine.dispose()
    return None


def _call_manager_feed(live: FeedWatch, table: TableWatch, cm: list[Any]) -> list[float]:
    """Feed arrival minus publish time of the call_manager events (matched by their ts)."""
    want = {(e[0], e[1], round(e[3], 6)) for e in cm}
    out = []
    for key, (_seen, ts, _r) in table.rows.items():
        if (key[0], key[1], round(ts, 6)) in want and key in live.events:
            out.append(live.events[key] - ts)
    return out


def _listen_overflows() -> int | None:
    """The kernel's count of connection attempts dropped because a listening socket's accept
    queue was full (TcpExt ListenOverflows; machine-wide)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            row = dict(zip(head.split()[1:], vals.split()[1:], strict=False))
            return int(row.get("ListenOverflows", 0))
    return None


def _phase(stat_b: ProcStat, b0: float | None, o0: int | None, t0: float) -> dict[str, Any]:
    """Broker CPU and dropped connection attempts during a connect phase."""
    b1, o1, wall = stat_b.cpu_s(), _listen_overflows(), max(time.time() - t0, 1e-3)
    return {
        "broker_cpu_pct": None if b0 is None or b1 is None else round(100 * (b1 - b0) / wall, 1),
        "listen_overflows": None if o0 is None or o1 is None else o1 - o0,
    }


def _tail(path: Path, size: int = 1500) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


def _limit_hint(broker: Any, work: Path) -> str:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log = ""
    if broker is not None:
        try:
            log = (broker.workdir / "mosquitto.log").read_text()[-500:]
        except OSError:
            pass
    return f"open files limit {soft}; broker log: {log.strip() or '(nothing)'}"


def table_line(r: dict[str, Any]) -> str:
    c, ev = r.get("connect", {}), r.get("events", {})
    st = r.get("storm", {})
    s2, cmf, cma = r.get("event_to_stored_ms", {}), r.get("call_manager_to_feed_ms", {}), \
        r.get("call_manager_to_alert_ms", {})  # fmt: skip
    comp, brk = r.get("companion", {}), r.get("broker_proc", {})
    return (
        f"fleet N={r['devices']} x{r['rate_multiple']:g} {r['duration_s']:g}s | "
        f"connected {c.get('connected')}/{c.get('expected')} in {c.get('seconds')} s"
        + (f" | storm {st.get('connected')}/{st.get('expected')} in {st.get('seconds')} s"
           if st else "")
        + f" | {r.get('traffic', {}).get('events_per_s')} ev/s "
        f"{r.get('traffic', {}).get('telemetry_per_s')} tele/s"
        f" | stored {ev.get('stored')}/{ev.get('generated')} lost {ev.get('lost')} "
        f"dup {ev.get('duplicate_rows')}"
        f" | ev->stored p50 {s2.get('p50')} p95 {s2.get('p95')} ms"
        f" (feed p95 {r.get('event_to_feed_ms', {}).get('p95')})"
        f" | call_manager->feed p95 {cmf.get('p95')} ms, ->alert p95 {cma.get('p95')} ms"
        f" | companion {comp.get('cpu_pct')}% {comp.get('rss_mb')} MB"
        f" | broker {brk.get('cpu_pct')}% {brk.get('rss_mb')} MB"
    )  # fmt: skip


def main() -> dict[str, Any]:
    """`make bench`: 1,000 devices at 10x the field rate with a reconnect storm."""
    return run(BENCH_DEVICES, 10.0, BENCH_DURATION_S, storm=True)


def cli(args: Any) -> int:
    res = run(args.devices, args.rate_multiple, args.duration, mqtt_url=args.mqtt,
              storm=args.storm, db_url=args.db, out=Path(args.out),
              cluster=args.cluster, kill_node=args.kill_node)  # fmt: skip
    ev = res.get("events", {})
    ok = ev.get("lost") == 0 and res.get("connect", {}).get("connected") == args.devices
    return 0 if ok else 1
