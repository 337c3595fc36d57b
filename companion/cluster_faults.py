"""Fault runs on the clustered broker (docs/cluster.md): a three-node RabbitMQ cluster
(calmcue.shared.cluster), two companion replicas as their own processes consuming its quorum
queue into one PostgreSQL, devices publishing over MQTT with a list of the nodes to fail over
between, and managers subscribed to their site's alerts on two different nodes.

Each run streams known events (some of them `call_manager` cues, which open one alert per
counter), causes its fault mid-stream, and counts: published vs stored, lost, duplicated rows,
and for every alert the number of times each manager received it.

Used by tests/test_cluster_faults.py (bounded sizes, in `make test`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import text

from calmcue.shared import broker_access
from calmcue.shared.cluster import ClusterTLS, RabbitCluster
from companion import faults
from companion.faults import SITE, CompanionProcess, Ledger, Message, wait_until

MANAGER = "fault-manager"  # the site account of the managers' devices
CALL_MANAGER_EVERY = 4  # counters 0, 4, 8, ... send one call_manager cue: one alert each


def cluster_for_faults(workdir: Path | None = None, tls: ClusterTLS | None = None) -> RabbitCluster:
    """The cluster the fault runs need: the companion account, and a site account for the
    managers' devices (the same rules `calmcue device register` gives a site)."""
    c = RabbitCluster(workdir=workdir, tls=tls)
    c.add_account(MANAGER, SITE, None)
    return c


def stream(n: int, devices: int = 40) -> list[Message]:
    """`n` events from `devices` counters; every CALL_MANAGER_EVERY-th counter sends one
    call_manager cue, at a point of the stream that moves with the counter (from 10 % to 90 %
    of it), so alerts open before, during and after a fault."""
    per = n // devices
    cm = {d: int((0.1 + 0.8 * d / devices) * per) for d in range(0, devices, CALL_MANAGER_EVERY)}
    out = []
    for i in range(n):
        dev, seq = i % devices, i // devices
        extra: dict[str, Any] = {"cue": "call_manager", "level": 3} if cm.get(dev) == seq else {}
        out.append(faults.message(faults.event(f"counter-{dev}", seq, **extra)))
    return out


def expected_alerts(msgs: list[Message]) -> set[str]:
    return {
        json.loads(p)["device"] for _t, p in msgs if json.loads(p).get("cue") == "call_manager"
    }


class ClusterFleet(faults.Fleet):
    """faults.Fleet publishing through a list of nodes: it connects to the first that answers
    and, when a window is not confirmed, to the next one."""

    def __init__(self, addresses: list[tuple[str, int]], username: str, password: str,
                 name: str = "fleet"):  # fmt: skip
        self.addresses, self.username, self.password = addresses, username, password
        self._next = 0
        self.nodes_used: list[int] = []
        super().__init__(addresses[0][1], name)

    def _connect(self, timeout: float) -> mqtt.Client:
        deadline = time.monotonic() + timeout
        while True:
            k = self._next % len(self.addresses)
            self._next += 1
            host, port = self.addresses[k]
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=f"{self.name}-{os.getpid()}-{time.time_ns()}",
            )
            client.username_pw_set(self.username, self.password)
            client.max_inflight_messages_set(self.WINDOW)
            client.max_queued_messages_set(0)
            try:
                client.connect(host, port, keepalive=10)
                client.loop_start()
                wait_until(client.is_connected, 5, "the node to accept the fleet")
                self.nodes_used.append(k)
                return client
            except (OSError, AssertionError):
                client.loop_stop()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _reconnect(self) -> None:
        self.close()
        self.client = self._connect(240)


@dataclass
class Manager:
    """A manager's device: subscribed to its site's alerts on one node (QoS 1, a persistent
    session, so alerts wait for it while its link is down), counting how often each alert
    arrives (re-notifications are off in these runs)."""

    address: tuple[str, int]
    username: str
    password: str
    name: str
    received: dict[int, int] = field(default_factory=dict)  # alert id -> times received
    client: mqtt.Client | None = None
    persistent: bool = True
    connects: int = 0
    dups: int = 0  # repeats the broker marked as such (sent again after a lost PUBACK)

    def start(self) -> Manager:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"calmcue-{self.name}",
                        clean_session=not self.persistent)  # fmt: skip
        c.username_pw_set(self.username, self.password)
        c.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(cl: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if not rc.is_failure:
                self.connects += 1
                cl.subscribe(f"calmcue/v1/{SITE}/alert/call_manager", qos=1)

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            alert = json.loads(msg.payload)
            self.dups += int(msg.dup)
            self.received[alert["id"]] = self.received.get(alert["id"], 0) + 1

        c.on_connect = on_connect
        c.on_message = on_message
        c.connect(*self.address)
        c.loop_start()
        wait_until(c.is_connected, 30, f"{self.name} to connect")
        self.client = c
        return self

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@dataclass
class Rig:
    cluster: RabbitCluster
    replicas: list[CompanionProcess]
    managers: list[Manager]
    ledger: Ledger
    db_url: str


def _rotated(urls: str, k: int) -> str:
    parts = urls.split(",")
    return ",".join(parts[k:] + parts[:k])


@contextmanager
def rig(cluster: RabbitCluster, db_url: str, workdir: Path,
        replicas: int = 2) -> Iterator[Rig]:  # fmt: skip
    """Two replicas (replica k consumes through node k first) and two managers on nodes 2
    and 3, against a running cluster and a fresh PostgreSQL database."""
    user = broker_access.COMPANION_USER
    env = {"CALMCUE_ALERT_RENOTIFY_S": "3600", "CALMCUE_ALERT_ESCALATE_S": "3600",
           "CALMCUE_SILENT_DEVICE_S": "3600"}  # fmt: skip
    comps = [
        CompanionProcess(
            db_url, _rotated(cluster.mqtt_urls(user), k), workdir, client_id=f"replica-{k + 1}",
            amqp_url=_rotated(cluster.amqp_urls(user), k), env=env,
        )  # fmt: skip
        for k in range(replicas)
    ]
    mgrs = [
        Manager(cluster.mqtt_addresses[k], MANAGER, cluster.passwords[MANAGER], f"manager-{k}",
                persistent=k == 1)  # fmt: skip
        for k in (1, 2)
    ]
    ledger = Ledger(db_url)
    try:
        for c in comps:
            c.start()
        for m in mgrs:
            m.start()
        yield Rig(cluster, comps, mgrs, ledger, db_url)
    finally:
        for m in mgrs:
            m.close()
        for c in comps:
            c.stop()
        ledger.close()


def _alert_figures(r: Rig, want_devices: set[str]) -> dict[str, Any]:
    with r.ledger.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, device FROM alerts WHERE site = :s AND kind = 'call_manager'"),
            {"s": SITE},
        ).all()
    ids = {row.id for row in rows}
    out: dict[str, Any] = {
        "alerts_expected": len(want_devices),
        "alerts_opened": len(rows),
        "alerts_devices_ok": int({row.device for row in rows} == want_devices),
    }
    for m in r.managers:
        got = m.received
        out[f"{m.name}_missed"] = len(ids - set(got))
        out[f"{m.name}_repeated"] = sum(n - 1 for n in got.values() if n > 1)
        out[f"{m.name}_unknown"] = len(set(got) - ids)
        out[f"{m.name}_repeated_ids"] = sorted(i for i, n in got.items() if n > 1)
        out[f"{m.name}_connects_dups"] = (m.connects, m.dups)
    return out


def _telemetry_figures(r: Rig, fleet: ClusterFleet, counters: list[str],
                       timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
    """After the fault: telemetry (QoS 0) from every counter reaches the devices table through
    the non-replicated telemetry queue (declared again if it went with a killed node), sent
    again every second until it does; and the replicated ingest queue has no telemetry
    binding. Returns how many counters' telemetry arrived and how long it took."""
    t0 = time.time()
    arrived: set[str] = set()
    while time.time() - t0 < timeout:
        for d in counters:
            if d not in arrived:
                fleet.client.publish(f"calmcue/v1/{SITE}/{d}/tele",
                                     json.dumps({"agent": "fault-run", "sent": time.time()}), qos=0)  # fmt: skip
        time.sleep(1.0)
        with r.ledger.engine.connect() as conn:
            arrived = set(conn.execute(
                text("SELECT device FROM devices WHERE site = :s AND tele_at >= :t"),
                {"s": SITE, "t": t0}).scalars())  # fmt: skip
        if arrived >= set(counters):
            break
    node = next(n.index for n in r.cluster.nodes if n.proc is not None and n.proc.poll() is None)
    bindings = r.cluster.ctl(node, "list_bindings", "destination_name", "routing_key")
    tele_key = broker_access.routing_key(broker_access.TELEMETRY_FILTERS[0])
    return {
        "telemetry_counters": len(arrived & set(counters)),
        "telemetry_expected": len(counters),
        "telemetry_s": round(time.time() - t0, 1),
        "telemetry_in_ingest_queue": sum(
            1 for ln in bindings.splitlines()
            if ln.split() == [broker_access.INGEST_QUEUE, tele_key]
        ),
    }


def _run(cluster: RabbitCluster, db_url: str, workdir: Path, n: int, rate: float,
         fault: Callable[[Rig, ClusterFleet], None], after: int,
         fleet_node: int = 0) -> dict[str, Any]:  # fmt: skip
    """Stream `n` events through node `fleet_node` (failing over to the others); once the
    broker has confirmed the first `after`, `fault(rig, fleet)` while the rest streams on; wait
    for every event and every alert; count."""
    msgs = stream(n)
    want = expected_alerts(msgs)
    with rig(cluster, db_url, workdir) as r:
        addrs = cluster.mqtt_addresses
        fleet = ClusterFleet(addrs[fleet_node:] + addrs[:fleet_node],
                             broker_access.COMPANION_USER,
                             cluster.passwords[broker_access.COMPANION_USER])  # fmt: skip
        done = threading.Event()
        errors: list[str] = []

        fault_s: list[float] = []

        def inject() -> None:
            t = time.perf_counter()
            try:
                fault(r, fleet)
            except Exception as exc:  # reported in the figures, the run goes on
                errors.append(repr(exc))
            fault_s.append(round(time.perf_counter() - t, 1))
            done.set()

        t0 = time.perf_counter()
        fleet.send(msgs[:after], rate=rate, confirm_timeout=300)
        t = threading.Thread(target=inject)
        t.start()
        fleet.send(msgs[after:], rate=rate, confirm_timeout=300)
        t.join(400)
        faults._wait_stored(r.ledger, n, 180)
        catch_up = time.perf_counter() - t0
        try:
            wait_until(lambda: all(len(m.received) >= len(want) for m in r.managers), 60,
                       "every manager to get every alert")  # fmt: skip
        except AssertionError:
            pass  # the figures say which are missing
        time.sleep(1.0)  # a late repeat would show
        counters = sorted({json.loads(p)["device"] for _t, p in msgs})
        figures_tele = _telemetry_figures(r, fleet, counters)
        fleet.close()
        figures: dict[str, Any] = r.ledger.figures(faults.keys_of(msgs))
        figures.update(_alert_figures(r, want))
        figures.update(faulted=int(done.is_set() and not errors), fault_errors=errors,
                       seconds=round(catch_up, 1), fault_seconds=fault_s,
                       fleet_nodes_used=fleet.nodes_used)  # fmt: skip
        figures.update(figures_tele)
        figures["replica_stored"] = [
            (c.health() or {}).get("ingest", {}).get("stored", -1) if c.proc else -1
            for c in r.replicas
        ]
        # alerts another replica published for one that stopped before it could (the outbox)
        figures["alerts_published_late"] = sum(
            c.log.read_text(errors="replace").count("published late") for c in r.replicas
            if c.log.exists()
        )
    return figures


def kill_node_mid_stream(cluster: RabbitCluster, db_url: str, workdir: Path, n: int = 4000,
                         rate: float = 500, node: int = 0) -> dict[str, Any]:  # fmt: skip
    """kill -9 the node the fleet publishes through and replica 1 consumes from, mid-stream;
    bring it back after the run."""

    def fault(r: Rig, fleet: ClusterFleet) -> None:
        r.cluster.kill(node)

    try:
        return _run(cluster, db_url, workdir, n, rate, fault, n // 4, fleet_node=node)
    finally:
        cluster.ensure_healthy()


def kill_replica_mid_stream(cluster: RabbitCluster, db_url: str, workdir: Path, n: int = 4000,
                            rate: float = 500) -> dict[str, Any]:  # fmt: skip
    """kill -9 replica 1 mid-stream (its unacknowledged messages go to replica 2); start it
    again a few seconds later."""

    def fault(r: Rig, fleet: ClusterFleet) -> None:
        r.replicas[0].kill9()
        time.sleep(3)
        r.replicas[0].start()

    return _run(cluster, db_url, workdir, n, rate, fault, n // 4, fleet_node=1)


def restart_everything(cluster: RabbitCluster, db_url: str, workdir: Path, n: int = 4000,
                       rate: float = 500) -> dict[str, Any]:  # fmt: skip
    """Power cut: kill -9 every node and both replicas at once mid-stream, then start them all
    again at once."""

    def fault(r: Rig, fleet: ClusterFleet) -> None:
        for c in r.replicas:
            c.kill9()
        for i in range(len(r.cluster.nodes)):
            r.cluster.kill(i)
        for i in range(len(r.cluster.nodes)):
            r.cluster.start_node(i, wait=False)  # together: each waits for its peers
        r.cluster.ensure_healthy(300, rejoin_s=120)
        for c in r.replicas:
            c.start()

    return _run(cluster, db_url, workdir, n, rate, fault, n // 4, fleet_node=2)
