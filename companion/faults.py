"""Fault runs against real peers: the companion as its own process (`calmcue companion serve`),
a real Mosquitto with the durable configuration (calmcue.shared.broker.durable_conf), SQLite or
PostgreSQL. Each run publishes known events, causes its fault, and counts what the database
holds: published vs stored, lost, duplicated rows, dead letters.

Used by tests/test_companion_faults.py (bounded sizes, in `make test`) and
companion/bench_faults.py (`make bench`: larger runs and the real-time 10-minute outage).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from sqlalchemy import create_engine, text

from calmcue.shared.broker import Mosquitto, free_port
from companion.db import make_engine, migrate

REPO = Path(__file__).resolve().parent.parent
SITE = "fault"
Message = tuple[str, bytes]


def event(device: str, seq: int, boot: int = 1, site: str = SITE, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "v": 1, "type": "cue", "site": site, "device": device, "boot": boot, "seq": seq,
        "up_ms": 1000 + seq, "conv": "3fa9c2d1", "cue": "empathize", "level": 2, "score": 0.8,
        "conv_s": 12.5,
    }  # fmt: skip
    ev.update(extra)
    return ev


def message(ev: dict[str, Any]) -> Message:
    topic = f"calmcue/v1/{ev['site']}/{ev['device']}/evt/{ev['type']}"
    return topic, json.dumps(ev, separators=(",", ":")).encode()


def good_events(n: int, devices: int = 4, site: str = SITE) -> list[Message]:
    """`n` valid events from `devices` counters, interleaved as a fleet sends them."""
    return [message(event(f"counter-{i % devices}", i // devices, site=site)) for i in range(n)]


def wait_until(pred: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """`pred()`'s first true answer, polled every 20 ms; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- the companion as its own process ------------------------------------------------------------


class CompanionProcess:
    """`python -m calmcue.cli companion serve` with a fixed MQTT client id (so its persistent
    session at the broker outlives the process), in demo mode (healthz shows the counters)."""

    def __init__(
        self,
        db_url: str,
        mqtt_url: str,
        workdir: Path,
        client_id: str = "companion",
        amqp_url: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.db_url, self.mqtt_url, self.workdir = db_url, mqtt_url, workdir
        self.client_id = client_id
        self.amqp_url = amqp_url  # the clustered broker's nodes (companion/cluster_ingest.py)
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{client_id}.log"
        self.starts = 0

    def start(self, wait_subscribed: bool = True) -> CompanionProcess:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CALMCUE_MQTT_CLIENT_ID": self.client_id,
            "CALMCUE_INGEST_BATCH_MS": "20",
            **self.env,
        }
        out = open(self.log, "ab")
        cluster = ["--amqp", self.amqp_url] if self.amqp_url else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "calmcue.cli", "companion", "serve", "--db", self.db_url,
             "--mqtt", self.mqtt_url, "--port", str(self.port), "--env", "demo", *cluster],
            cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.starts += 1
        if wait_subscribed:
            wait_until(lambda: (self.health() or {}).get("ingest", {}).get("subscribed"), 60,
                       "the companion to subscribe")  # fmt: skip
        return self

    def health(self) -> dict[str, Any] | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the companion exited ({self.proc.returncode}); see {self.log}")
        try:
            got: dict[str, Any] = httpx.get(
                f"http://127.0.0.1:{self.port}/healthz", timeout=2
            ).json()
            return got
        except httpx.HTTPError:
            return None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# ---- a fleet of devices publishing QoS 1 ---------------------------------------------------------


class Fleet:
    """Publishes messages at QoS 1 and makes sure the broker has each (PUBACK), publishing again
    what it did not confirm, as a device's store-and-forward queue does: in windows of
    `WINDOW`; a window not confirmed within 5 s is sent again on a fresh connection. `published`
    counts the distinct messages the broker confirmed."""

    WINDOW = 250

    def __init__(self, port: int, name: str = "fleet"):
        self.port, self.name = port, name
        self.published = 0
        self.client = self._connect(30)

    def _connect(self, timeout: float) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{self.name}-{os.getpid()}-{time.time_ns()}",
        )
        client.max_inflight_messages_set(self.WINDOW)
        client.max_queued_messages_set(0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.connect("127.0.0.1", self.port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        client.loop_start()
        wait_until(client.is_connected, timeout, "the fleet to connect")
        return client

    def _reconnect(self) -> None:
        self.close()
        self.client = self._connect(60)

    def send(
        self, msgs: list[Message], rate: float | None = None, confirm_timeout: float = 60.0
    ) -> int:
        """Publish `msgs` (paced at `rate`/s when given) until the broker confirmed each."""
        t0 = time.perf_counter()
        for start in range(0, len(msgs), self.WINDOW):
            pending = list(range(start, min(start + self.WINDOW, len(msgs))))
            deadline = time.monotonic() + confirm_timeout
            first = True
            while pending:
                infos = {}
                for i in pending:
                    if rate and first:
                        delay = t0 + i / rate - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    infos[i] = self.client.publish(*msgs[i], qos=1)
                first = False
                settle = time.monotonic() + 5
                while time.monotonic() < settle and not all(map(_confirmed, infos.values())):
                    time.sleep(0.01)
                pending = [i for i in pending if not _confirmed(infos[i])]
                if pending:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the broker did not confirm {len(pending)} messages")
                    self._reconnect()  # a fresh session; the window goes again (stored once)
        self.published += len(msgs)
        return len(msgs)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _confirmed(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):  # published while the broker was away: not confirmed
        return False


# ---- what the database holds ---------------------------------------------------------------------


class Ledger:
    def __init__(self, db_url: str):
        self.engine = create_engine(db_url) if "postgresql" in db_url else make_engine(db_url)

    def stored(self, site: str = SITE) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM events WHERE site = :s"), {"s": site}
                ).scalar_one()
            )

    def figures(
        self, published_keys: set[tuple[str, int, int]], site: str = SITE
    ) -> dict[str, int]:
        """published vs stored for one site: lost, duplicated rows, unexpected rows."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT device, boot, seq FROM events WHERE site = :s"), {"s": site}
            ).all()
            dead = int(conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one())
        keys = [(r.device, r.boot, r.seq) for r in rows]
        distinct = set(keys)
        return {
            "published": len(published_keys),
            "stored": len(keys),
            "lost": len(published_keys - distinct),
            "duplicated": len(keys) - len(distinct),
            "unexpected": len(distinct - published_keys),
            "dead_lettered": dead,
        }

    def dead_reasons(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            return [
                (r.topic, r.reason)
                for r in conn.execute(text("SELECT topic, reason FROM dead_letters ORDER BY id"))
            ]

    def close(self) -> None:
        self.engine.dispose()


def keys_of(msgs: list[Message]) -> set[tuple[str, int, int]]:
    out = set()
    for _topic, payload in msgs:
        ev = json.loads(payload)
        out.add((ev["device"], ev["boot"], ev["seq"]))
    return out


@contextmanager
def rig(db_url: str, workdir: Path, broker: Mosquitto | None = None) -> Iterator[
    tuple[Mosquitto, CompanionProcess, Ledger]
]:  # fmt: skip
    """A durable broker, the companion process (started, subscribed) and the ledger."""
    own = broker is None
    broker = broker or Mosquitto(workdir=workdir / "mqtt").start()
    comp = CompanionProcess(db_url, broker.url, workdir)
    ledger = Ledger(db_url)
    try:
        comp.start()
        yield broker, comp, ledger
    finally:
        comp.stop()
        ledger.close()
        if own:
            broker.close()


def _wait_stored(ledger: Ledger, n: int, timeout: float) -> float:
    t0 = time.perf_counter()
    try:
        wait_until(lambda: ledger.stored() >= n, timeout, f"{n} events stored")
    except AssertionError:
        pass  # the figures say how many are missing
    time.sleep(0.3)  # anything arriving late would show up as a duplicate or unexpected row
    return time.perf_counter() - t0


# ---- the faults ----------------------------------------------------------------------------------


def kill9_during_ingest(
    db_url: str, workdir: Path, n: int = 4000, rate: float | None = None
) -> dict[str, Any]:
    """kill -9 the companion while events stream in; start it again; count."""

    def kill(broker: Any, comp: Any) -> None:
        comp.kill9()  # mid-stream: rows in its queue, batches in flight
        comp.start()

    figures, comp = _fault_mid_stream(db_url, workdir, n, rate, n // 4, kill)
    figures.update(killed=figures.pop("faulted"), starts=comp.starts)
    return figures


def broker_restart_mid_stream(
    db_url: str, workdir: Path, n: int = 4000, rate: float = 2000
) -> dict[str, Any]:
    """Restart the (persistent) broker while events stream in; count."""
    figures, _ = _fault_mid_stream(
        db_url, workdir, n, rate, n // 3, lambda broker, comp: broker.restart()
    )
    figures.update(restarted=figures.pop("faulted"))
    return figures


def _fault_mid_stream(
    db_url: str,
    workdir: Path,
    n: int,
    rate: float | None,
    after: int,
    fault: Callable[[Any, Any], None],
) -> tuple[dict[str, Any], Any]:
    """Stream `n` good events; once `after` are stored, `fault(broker, companion)`; wait for
    every event; the ledger's figures plus `faulted` and `catch_up_s`."""
    msgs = good_events(n)
    with rig(db_url, workdir) as (broker, comp, ledger):
        fleet = Fleet(broker.port)
        done = threading.Event()

        def inject() -> None:
            wait_until(lambda: ledger.stored() >= after, 60, f"{after} stored")
            fault(broker, comp)
            done.set()

        t = threading.Thread(target=inject)
        t.start()
        fleet.send(msgs, rate=rate)
        t.join(90)
        catch_up = _wait_stored(ledger, n, 60)
        fleet.close()
        figures: dict[str, Any] = ledger.figures(keys_of(msgs))
        figures.update(faulted=int(done.is_set()), catch_up_s=round(catch_up, 1))
    return figures, comp


def companion_outage(
    db_url: str, workdir: Path, events_per_s: float = 20, outage_s: float = 600,
    realtime: bool = False, broker: Mosquitto | None = None, catch_up_timeout: float = 180,
) -> dict[str, Any]:  # fmt: skip
    """The companion is down for `outage_s` while the fleet sends `events_per_s` events and as
    many telemetry messages (the documented 40 messages/s); then it starts and catches up.
    `realtime=False` publishes the same backlog as fast as the broker takes it."""
    n = int(events_per_s * outage_s)
    msgs = good_events(n, devices=20)
    tele = [
        (f"calmcue/v1/{SITE}/counter-{i % 20}/tele",
         json.dumps({"fw": "0.3.0", "model": "stress-mlp-v2", "rssi": -60, "n": i}).encode())
        for i in range(n)
    ]  # fmt: skip
    mixed = [m for pair in zip(msgs, tele, strict=True) for m in pair]
    with rig(db_url, workdir, broker) as (broker, comp, ledger):
        comp.stop()  # its session stays at the broker: the queue fills while it is down
        fleet = Fleet(broker.port)
        t0 = time.perf_counter()
        fleet.send(mixed, rate=2 * events_per_s if realtime else None, confirm_timeout=120)
        down_s = time.perf_counter() - t0
        fleet.close()
        broker.restart()  # and the broker restarts once while holding the backlog
        t1 = time.perf_counter()
        comp.start()
        catch_up = _wait_stored(ledger, n, catch_up_timeout)
        catch_up += time.perf_counter() - t1 - catch_up
        health = comp.health() or {}
        figures: dict[str, Any] = ledger.figures(keys_of(msgs))
        figures.update(
            queued_messages=len(mixed),
            telemetry_stored=health.get("ingest", {}).get("device_updates", -1),
            outage_s=round(down_s, 1),
            catch_up_s=round(catch_up, 1),
        )
    return figures


REFUSED_UP_MS = 666_666  # the database refuses these rows (a trigger or CHECK put there)


def _refuse_some_rows(db_url: str) -> None:
    """Make the database itself refuse rows that pass the schema: the writer must isolate them."""
    engine = make_engine(db_url) if db_url.startswith("sqlite") else create_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.up_ms = "
                f"{REFUSED_UP_MS} BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            ))  # fmt: skip
        else:
            conn.execute(text(
                f"ALTER TABLE events ADD CONSTRAINT refuse_poison CHECK (up_ms <> {REFUSED_UP_MS})"
            ))  # fmt: skip
    engine.dispose()


def poison_in_stream(db_url: str, workdir: Path, n: int = 3000) -> dict[str, Any]:
    """Poison among good events: events with integers past what the database holds (the
    schema refuses them) and events the database itself refuses (the writer isolates them)."""
    _refuse_some_rows(db_url)
    good = good_events(n, devices=6)
    conversation = {
        k: v for k, v in event("poison-1", 3).items() if k not in ("cue", "level", "score")
    }
    nan = json.dumps(event("poison-1", 8)).replace('"conv_s": 12.5', '"conv_s": NaN')
    schema_poison = [
        message(event("poison-1", 2**63)),
        message(event("poison-1", 1, up_ms=10**30)),
        message(event("poison-1", 2, boot=2**64 + 5)),
        message(conversation | {"type": "conversation", "phase": "end", "cues": 2**40}),
        message(event("poison-1", 4, level=10**20)),
        message(event("poison-1", 5, score=1e300)),
        message(event("poison-1", -1)),
        message(event("poison-1", 7, conv_s=1e308)),
        (f"calmcue/v1/{SITE}/poison-1/evt/cue", nan.encode()),
        message(event("poison-1", 9, boot=10**19)),
    ]
    db_poison = [message(event(f"counter-{i}", 10_000 + i, up_ms=REFUSED_UP_MS)) for i in range(10)]
    bad = schema_poison + db_poison
    rng = random.Random(17)
    stream = list(good)
    for m in bad:
        stream.insert(rng.randrange(len(stream)), m)
    with rig(db_url, workdir) as (broker, comp, ledger):
        fleet = Fleet(broker.port)
        fleet.send(stream)
        _wait_stored(ledger, n, 60)
        wait_until(lambda: ledger.figures(set())["dead_lettered"] >= len(bad), 30, "dead letters")
        fleet.close()
        health = comp.health() or {}
        figures: dict[str, Any] = ledger.figures(keys_of(good))
        reasons = ledger.dead_reasons()
        ingest = health.get("ingest", {})
        figures.update(
            bad=len(bad),
            refused_by_schema=sum("database" not in r for _t, r in reasons),
            refused_by_database=sum("the database refused it" in r for _t, r in reasons),
            duplicates_counted=ingest.get("duplicates", -1),
            isolated=ingest.get("isolated", -1),
        )  # fmt: skip
    return figures


# ---- fuzzing -------------------------------------------------------------------------------------


def fuzz_messages(n: int, seed: int = 17) -> list[Message]:
    """`n` messages the companion must refuse, on every topic it reads: random bytes, wrong
    types, huge and negative integers, deep nesting, odd unicode, oversize, topic/payload
    mismatch, bad status and telemetry, bad alert commands."""
    rng = random.Random(seed)
    base = event("fuzz-1", 0)
    odd_strings = ["", "ü", "\u202e", "\ud83d\ude00", "a" * 40, "A", "x\u0000y", "../..", "%s"]
    out: list[Message] = []
    for i in range(n):
        kind = i % 12
        dev = f"fuzz-{i % 7}"
        evt = f"calmcue/v1/{SITE}/{dev}/evt/cue"
        if kind == 0:
            out.append((evt, rng.randbytes(rng.randrange(0, 600))))
        elif kind == 1:  # a field of the wrong type
            ev = dict(base, device=dev, seq=i)
            key = rng.choice(["boot", "seq", "up_ms", "level", "score", "conv", "cue", "v"])
            ev[key] = rng.choice([None, "7", [1], {"a": 1}, True, 1.5, "ü"])
            if key == "score" and ev[key] == 1.5:
                ev[key] = 7.5
            out.append((evt, json.dumps(ev).encode()))
        elif kind == 2:  # integers past what any column holds
            ev = dict(base, device=dev, seq=i)
            ev[rng.choice(["boot", "seq", "up_ms"])] = rng.choice(
                [2**63, 2**64, 10**30, -1, -(2**63) - 1]
            )
            out.append((evt, json.dumps(ev).encode()))
        elif kind == 3:  # nesting
            depth = rng.randrange(50, 300)
            out.append((evt, ("[" * depth + "]" * depth).encode()))
        elif kind == 4:  # unicode where identifiers go
            ev = dict(base, device=dev, seq=i)
            ev[rng.choice(["site", "device", "conv", "reason", "cue"])] = rng.choice(odd_strings)
            raw = json.dumps(ev, ensure_ascii=rng.random() < 0.5)
            out.append((evt, raw.encode("utf-8", "surrogatepass")))
        elif kind == 5:  # extra fields (audio, transcripts) and oversize
            ev = dict(base, device=dev, seq=i)
            ev[rng.choice(["audio", "transcript", "staff", "features"])] = "x" * rng.randrange(
                1, 900
            )
            out.append((evt, json.dumps(ev).encode()))
        elif kind == 6:  # the topic says another device or type
            ev = dict(base, device="someone-else", seq=i)
            out.append((evt, json.dumps(ev).encode()))
        elif kind == 7:  # status that is not online/offline, on odd topics
            site = rng.choice([SITE, "Fuzz", "ü", "a" * 40])
            out.append(
                (
                    f"calmcue/v1/{site}/{dev}/status",
                    rng.choice([b"", b"on", b"\xff\xfe", b"online!", b"[[[[", b"OFFLINE"]),
                )
            )
        elif kind == 8:  # telemetry that is not a JSON object of 1 KB at most
            depth = rng.randrange(100, 500)
            out.append((f"calmcue/v1/{SITE}/{dev}/tele", rng.choice([
                b"[1,2]", b"nope", rng.randbytes(50), b"{" * 10, ("[" * depth + "]" * depth).encode(),
                json.dumps({"fw": "x" * 2000}).encode(), b"\"\\ud800\"", b"{\"fw\": \"\xff\"}",
            ])))  # fmt: skip
        elif kind == 9:  # telemetry on a topic naming no valid device
            site = rng.choice(["Fuzz", "ü", "a" * 40, "-x"])
            out.append((f"calmcue/v1/{site}/{dev}/tele", b'{"fw": "0.3.0"}'))
        elif kind == 10:  # alert commands
            payload = rng.choice([
                b"not json", b"{}", json.dumps({"id": 2**70}).encode(),
                json.dumps({"id": "3"}).encode(), json.dumps({"id": -4}).encode(),
                json.dumps({"id": 987654321, "by": "x"}).encode(), b"[" * 400,
                json.dumps({"id": 5, "by": "a\nb"}).encode(), rng.randbytes(30),
            ])  # fmt: skip
            out.append((f"calmcue/v1/{SITE}/alert/{rng.choice(['ack', 'resolve'])}", payload))
        else:  # event topics with an odd type or shape
            typ = rng.choice(["nope", "cue", "conversation", "button"])
            ev = dict(base, device=dev, seq=i, type=rng.choice(["nope", "Cue", "cue "]))
            out.append((f"calmcue/v1/{SITE}/{dev}/evt/{typ}", json.dumps(ev).encode()))
    return out


def fuzzed_stream(
    db_url: str, workdir: Path, n_fuzz: int = 10_000, n_good: int = 2000
) -> dict[str, Any]:
    """`n_fuzz` fuzzed messages mixed with `n_good` good events; the companion stays up, every
    good event is stored, every fuzzed message is a dead letter."""
    good = good_events(n_good, devices=5)
    bad = fuzz_messages(n_fuzz)
    rng = random.Random(3)
    stream = good + bad
    rng.shuffle(stream)
    with rig(db_url, workdir) as (broker, comp, ledger):
        fleet = Fleet(broker.port)
        fleet.send(stream, confirm_timeout=120)
        _wait_stored(ledger, n_good, 60)
        wait_until(lambda: ledger.figures(set())["dead_lettered"] >= n_fuzz, 60, "dead letters")
        fleet.close()
        time.sleep(0.3)
        health = comp.health() or {}
        ingest = health.get("ingest", {})
        figures: dict[str, Any] = ledger.figures(keys_of(good))
        log_text = comp.log_text()
        figures.update(
            fuzzed=n_fuzz,
            received=ingest.get("received", -1),
            counted_dead=ingest.get("dead_lettered", -1),
            companion_up=int(health.get("status") == "ok" and comp.proc is not None
                             and comp.proc.poll() is None),
            tracebacks_in_log=log_text.count("Traceback"),
        )  # fmt: skip
    return figures
