"""Simulated fleet devices for `calmcue bench fleet`: many lightweight devices in one process, each
with its own real MQTT connection and the traffic of a Pi agent (firmware/pi/link.py).

Each device has its own paho-mqtt client (client id `calmcue-<site>-<device>`, clean session,
LWT `status` = `offline` retained at QoS 1, `online` retained on connect, subscriptions to its
`config` and `cmd/+`), events stamped and encoded by the real event code (firmware/core/events.py
`Stamper`, `encode`, `event_topic`) and published at QoS 1, telemetry at QoS 0 with the agent's
keys. Like the agent, a device keeps every event until its PUBACK arrives and publishes the
unacknowledged ones again, in order, on its next connection (store and forward), so an event in
flight when a link drops may arrive twice and the companion absorbs it by (device, boot, seq).

Thousands of clients share one asyncio loop: paho's external-loop interface (`loop_read`,
`loop_write`, `loop_misc`, the socket open/close/register-write callbacks) puts each socket on
the loop's selector, so a device costs one file descriptor and no thread. `loop_misc`
(keepalive pings) runs for all clients once a second from one task.

Rates (docs/fleet.md): the documented field rate is 20 events/s and 20 telemetry messages/s for
about 1,000 counters, i.e. per device 0.02 events/s (one every 50 s) and 0.02 telemetry/s; a
rate multiple K multiplies both per device.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware.core import cue_table, events, wire

FIELD_EVENTS_PER_DEVICE_S = 20 / 1000  # docs/fleet.md: 20 events/s for ~1,000 counters
FIELD_TELE_PER_DEVICE_S = 20 / 1000  # and as much again in status and telemetry
INFLIGHT = 20  # as firmware/pi/link.py
KEEPALIVE_S = 60
RECONNECT_MIN_S = 1.0  # firmware/pi/config.py defaults
RECONNECT_MAX_S = 60.0
NICE = 5  # simulator processes' niceness
CONNECT_THREADS = 32  # blocking TCP connects in flight at once per process
CUES = tuple(cue_table.names())
LEVEL_WEIGHTS = {1: 0.275, 2: 0.3, 3: 0.15}  # how often a simulated cue is of each level
CUE_WEIGHTS = tuple(LEVEL_WEIGHTS[cue_table.level(c)] for c in CUES)


@dataclass
class DeviceSpec:
    site: str
    device: str
    username: str | None = None
    password: str | None = None


@dataclass
class SimDevice:
    spec: DeviceSpec
    boot: int
    stamper: events.Stamper = field(init=False)
    client: mqtt.Client | None = None
    connected: bool = False
    killed: bool = False
    connects: int = 0
    connected_at: float = 0.0
    acked: int = 0
    conv: str | None = None
    conv_started: float = 0.0
    conv_cues: int = 0
    inflight: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # mid -> message
    outbox: list[tuple[str, bytes]] = field(default_factory=list)  # not yet on this connection
    backoff: float = RECONNECT_MIN_S
    node: int = 0  # index of the broker address it connects to next
    started: float = field(default_factory=time.monotonic)
    call_manager: list[tuple[str, float]] = field(default_factory=list)  # (conv, ts) sent

    def __post_init__(self) -> None:
        self.stamper = events.Stamper(self.spec.site, self.spec.device, self.boot)

    def topic(self, leaf: str) -> str:
        return wire.topic(self.spec.site, self.spec.device, leaf)

    def up_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def next_event(self, rnd: random.Random) -> tuple[str, bytes]:
        """A plausible next event of this counter: conversations with cues inside, a button
        press now and then; stamped and encoded as the agent does."""
        now = time.time()
        r = rnd.random()
        if self.conv is None:
            self.conv = events.new_conversation_id(os.urandom)
            self.conv_started, self.conv_cues = now, 0
            etype, fields = "conversation", {"conv": self.conv, "phase": "start", "conv_s": 0.0}
        elif r < 0.12:
            etype, fields = "conversation", {
                "conv": self.conv, "phase": "end", "conv_s": round(now - self.conv_started, 2),
                "cues": self.conv_cues, "peak": round(rnd.random(), 3)}  # fmt: skip
            self.conv = None
        elif r < 0.17:
            etype, fields = "button", {"action": "ack"}
        else:
            cue = rnd.choices(CUES, CUE_WEIGHTS)[0]
            self.conv_cues += 1
            etype, fields = "cue", {
                "conv": self.conv, "cue": cue, "level": cue_table.level(cue),
                "score": round(rnd.random(), 3), "conv_s": round(now - self.conv_started, 2),
                "stress_s": round(rnd.random() * 30, 1)}  # fmt: skip
            if cue_table.level(cue) >= cue_table.ALERT_LEVEL:  # the companion alerts on it
                self.call_manager.append((self.conv, now))
        event = self.stamper.stamp(etype, fields, self.up_ms(), ts=round(now, 6))
        return wire.event_topic(event), events.encode(event, checked=True)

    def telemetry(self) -> bytes:
        return json.dumps(
            {"agent": "fleet-sim", "boot": self.boot, "model": "sim", "uptime_s":
             round(time.monotonic() - self.started, 1), "cpu_pct": 1.0, "mem_kb": 50000,
             "mic_ok": True, "mic_error": None, "muted": False, "queue": len(self.outbox) +
             len(self.inflight), "dropped": 0, "overruns": 0, "rtf": 0.05, "chunk_max_ms": 3.0,
             "audio_lost_s": 0.0, "outputs_ok": True, "outputs_error": None, "source": "sim"},
            separators=(",", ":"),
        ).encode()  # fmt: skip

    @property
    def generated(self) -> int:
        return self.stamper.seq

    @property
    def unacked(self) -> int:
        return len(self.inflight) + len(self.outbox)


Address = tuple[str, int]


class Fleet:
    """The devices of one process on one asyncio loop. `brokers` lists the broker addresses a
    device fails over between (a clustered broker's nodes): device i starts at address
    i mod n, and moves to the next one whenever a connect fails or its link drops."""

    def __init__(self, brokers: list[Address], specs: list[DeviceSpec], boot: int, seed: int = 0):
        self.brokers = brokers
        self.devices = [SimDevice(s, boot) for s in specs]
        for i, d in enumerate(self.devices):
            d.node = i % len(brokers)
        self.rnd = random.Random(seed)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.connect_errors = 0
        self._tasks: list[asyncio.Task[Any]] = []
        # paho's connect() is a blocking TCP connect; when the broker's listen backlog is full
        # the kernel retries the SYN a second later, so it runs on threads, never on the loop
        self._pool = ThreadPoolExecutor(CONNECT_THREADS, thread_name_prefix="fleet-connect")
        self._loop_thread = 0

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Run `fn` on the loop: now when called from it, else scheduled thread-safely (the
        socket callbacks of a connect fire on a connect thread)."""
        assert self.loop is not None
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    # ---- the paho clients on the loop -------------------------------------------------------

    def _client(self, dev: SimDevice) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"calmcue-{dev.spec.site}-{dev.spec.device}",
            clean_session=True,
            userdata=dev,
        )
        if dev.spec.username:
            c.username_pw_set(dev.spec.username, dev.spec.password)
        c.will_set(dev.topic("status"), b"offline", qos=1, retain=True)
        c.max_inflight_messages_set(INFLIGHT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_socket_open = self._sock_open
        c.on_socket_close = self._sock_close
        c.on_socket_register_write = self._sock_want_write
        c.on_socket_unregister_write = self._sock_done_write
        return c

    def _sock_open(self, client: mqtt.Client, dev: SimDevice, sock: Any) -> None:
        assert self.loop is not None
        self._on_loop(self.loop.add_reader, sock, self._read, client)

    def _read(self, client: mqtt.Client) -> None:
        client.loop_read()

    def _sock_close(self, client: mqtt.Client, dev: SimDevice, sock: Any) -> None:
        assert self.loop is not None
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def _sock_want_write(self, client: mqtt.Client, dev: SimDevice, sock: Any) -> None:
        assert self.loop is not None
        self._on_loop(self.loop.add_writer, sock, client.loop_write)

    def _sock_done_write(self, client: mqtt.Client, dev: SimDevice, sock: Any) -> None:
        assert self.loop is not None
        self._on_loop(self.loop.remove_writer, sock)

    def _on_connect(
        self, client: mqtt.Client, dev: SimDevice, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.connect_errors += 1
            return
        dev.connected = True
        dev.connects += 1
        dev.connected_at = time.time()
        dev.backoff = RECONNECT_MIN_S
        client.publish(dev.topic("status"), b"online", qos=1, retain=True)
        client.subscribe([(dev.topic("config"), 1), (dev.topic("cmd/+"), 1)])
        client.publish(dev.topic("tele"), dev.telemetry(), qos=0)
        self._pump(dev)

    def _on_disconnect(
        self, client: mqtt.Client, dev: SimDevice, flags: Any, reason: Any, props: Any
    ) -> None:
        self._lost(dev, client)

    def _lost(self, dev: SimDevice, client: mqtt.Client) -> None:
        if dev.client is not client:
            return
        dev.connected = False
        dev.client = None
        # everything not acknowledged goes out again, in order, on the next connection
        dev.outbox[:0] = list(dev.inflight.values())
        dev.inflight.clear()
        dev.node += 1  # that node may be gone: the next address in the list
        if not (self.stopping or dev.killed):
            assert self.loop is not None
            delay = dev.backoff * (0.5 + self.rnd.random())
            dev.backoff = min(max(dev.backoff * 2, RECONNECT_MIN_S), RECONNECT_MAX_S)
            self.loop.call_later(delay, self._connect, dev)

    def _on_publish(
        self, client: mqtt.Client, dev: SimDevice, mid: int, reason: Any, props: Any
    ) -> None:
        if dev.inflight.pop(mid, None) is not None:
            dev.acked += 1
            self._pump(dev)

    def _pump(self, dev: SimDevice) -> None:
        c = dev.client
        while c is not None and dev.connected and dev.outbox and len(dev.inflight) < INFLIGHT:
            topic, payload = dev.outbox[0]
            info = c.publish(topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return
            dev.outbox.pop(0)
            dev.inflight[info.mid] = (topic, payload)

    def _connect(self, dev: SimDevice) -> None:
        if self.stopping or dev.killed or dev.client is not None:
            return
        c = self._client(dev)
        dev.client = c
        self._pool.submit(self._blocking_connect, dev, c)

    def _blocking_connect(self, dev: SimDevice, c: mqtt.Client) -> None:
        host, port = self.brokers[dev.node % len(self.brokers)]
        try:
            c.connect(host, port, KEEPALIVE_S)
        except OSError:
            assert self.loop is not None
            self.loop.call_soon_threadsafe(self._connect_failed, dev, c)

    def _connect_failed(self, dev: SimDevice, c: mqtt.Client) -> None:
        self.connect_errors += 1
        dev.node += 1
        if dev.client is c:
            dev.client = None
        assert self.loop is not None
        delay = dev.backoff * (0.5 + self.rnd.random())
        dev.backoff = min(max(dev.backoff * 2, RECONNECT_MIN_S), RECONNECT_MAX_S)
        self.loop.call_later(delay, self._connect, dev)

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for dev in self.devices:
                c = dev.client
                if c is not None and dev.connected:
                    c.loop_misc()

    # ---- what the orchestrator asks -----------------------------------------------------------

    async def connect_all(self, timeout: float) -> dict[str, Any]:
        """Connect every device at once (sequential TCP connects, yielding to the loop every few
        so CONNACKs are read meanwhile). Returns when all are connected or at the timeout."""
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if not self._tasks:
            self._tasks.append(asyncio.ensure_future(self._misc()))
        t0 = time.time()
        for i, dev in enumerate(self.devices):
            if not dev.killed:
                self._connect(dev)
            if i % 50 == 49:
                await asyncio.sleep(0)
        return await self._wait_connected(t0, timeout)

    async def _wait_connected(self, t0: float, timeout: float) -> dict[str, Any]:
        live = [d for d in self.devices if not d.killed]
        while time.time() - t0 < timeout and not all(d.connected for d in live):
            await asyncio.sleep(0.02)
        up = [d for d in live if d.connected]
        return {
            "started": t0,
            "connected": len(up),
            "expected": len(live),
            "last_connack": max((d.connected_at for d in up), default=t0),
            "connect_errors": self.connect_errors,
        }

    async def traffic(self, seconds: float, multiple: float) -> dict[str, Any]:
        """Events and telemetry for `seconds` at `multiple` times the field rate per device,
        as a Poisson stream over the devices of this process."""
        n = len(self.devices)
        ev_rate = n * FIELD_EVENTS_PER_DEVICE_S * multiple
        tele_rate = n * FIELD_TELE_PER_DEVICE_S * multiple
        t0 = time.monotonic()
        next_ev = t0 + self.rnd.expovariate(ev_rate) if ev_rate else float("inf")
        next_tele = t0 + self.rnd.expovariate(tele_rate) if tele_rate else float("inf")
        end = t0 + seconds
        sent = tele = 0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            while next_ev <= now:
                dev = self.devices[self.rnd.randrange(n)]
                if not dev.killed:
                    dev.outbox.append(dev.next_event(self.rnd))  # queued even when offline
                    self._pump(dev)
                    sent += 1
                next_ev += self.rnd.expovariate(ev_rate)
            while next_tele <= now:
                dev = self.devices[self.rnd.randrange(n)]
                if dev.connected and dev.client is not None:
                    dev.client.publish(dev.topic("tele"), dev.telemetry(), qos=0)
                    tele += 1
                next_tele += self.rnd.expovariate(tele_rate)
            await asyncio.sleep(min(0.01, max(0.0, min(next_ev, next_tele, end) - now)))
        return {"events": sent, "telemetry": tele}

    def _drop(self, dev: SimDevice) -> None:
        """Lose the link the way a pulled cable or a dead broker node does: the socket goes,
        no DISCONNECT is sent, so the broker publishes the device's LWT."""
        c = dev.client
        sock = c.socket() if c is not None else None
        if c is None or sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        except OSError:
            pass
        c.loop_read()  # paho sees the lost connection: on_disconnect, then our reconnect

    async def storm(self, at: float, timeout: float) -> dict[str, Any]:
        """Every device loses its connection at wall-clock time `at` and reconnects at once
        (no backoff for the first attempt, as devices whose broker node vanished)."""
        await asyncio.sleep(max(0.0, at - time.time()))
        for d in self.devices:
            d.backoff = 0.0  # first retry at once: the worst case for the broker
        t0 = time.time()
        for i, dev in enumerate(self.devices):
            self._drop(dev)
            if i % 50 == 49:
                await asyncio.sleep(0)
        return await self._wait_connected(t0, timeout)

    def kill(self, index: int) -> dict[str, str]:
        """Take one device off the network for good (its LWT says offline)."""
        dev = self.devices[index]
        dev.killed = True
        self._drop(dev)
        return {"site": dev.spec.site, "device": dev.spec.device}

    async def stop(self, timeout: float) -> dict[str, Any]:
        """Deliver what is queued (killed devices keep theirs), then say offline and disconnect
        cleanly, as the agent does on shutdown."""
        deadline = time.time() + timeout
        while time.time() < deadline and any(d.unacked for d in self.devices if not d.killed):
            for d in self.devices:
                if d.client is None and not d.killed:
                    self._connect(d)
            await asyncio.sleep(0.05)
        self.stopping = True
        for d in self.devices:
            if d.client is not None and d.connected:
                d.client.publish(d.topic("status"), b"offline", qos=1, retain=True)
        await asyncio.sleep(0.5)
        for d in self.devices:
            if d.client is not None:
                d.client.disconnect()
        await asyncio.sleep(0.2)
        for t in self._tasks:
            t.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return {
            "generated": {d.spec.device: [d.spec.site, d.boot, d.generated] for d in self.devices},
            "acked": sum(d.acked for d in self.devices),
            "unacked": sum(d.unacked for d in self.devices),
            "reconnects": sum(max(0, d.connects - 1) for d in self.devices),
            "connect_errors": self.connect_errors,
            "call_manager": [
                [d.spec.site, d.spec.device, conv, ts]
                for d in self.devices
                for conv, ts in d.call_manager
            ],
        }


def _priority(nice: int) -> None:
    """During traffic the simulator stands in for devices that are not on this machine, so the
    companion and the broker (the system measured) get the CPU first; connects and storms run
    at normal priority (their duration is measured on the device side). Lowering the
    niceness again needs root; elsewhere the simulator stays nice."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        pass


def process_main(conn: Any, brokers: list[Address], specs: list[DeviceSpec], boot: int,
                 seed: int) -> None:  # fmt: skip
    """A simulator process: commands arrive on `conn` (a multiprocessing Pipe end) as
    (name, kwargs); each answer is the command's result dict."""

    raise_fd_limit()
    fleet = Fleet(brokers, specs, boot, seed)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        while True:
            name, kw = await loop.run_in_executor(None, conn.recv)
            _priority(NICE if name == "traffic" else 0)
            try:
                if name == "connect":
                    out: Any = await fleet.connect_all(**kw)
                elif name == "traffic":
                    out = await fleet.traffic(**kw)
                elif name == "storm":
                    out = await fleet.storm(**kw)
                elif name == "kill":
                    out = fleet.kill(**kw)
                elif name == "stop":
                    out = await fleet.stop(**kw)
                else:
                    out = {"error": f"unknown command {name}"}
            except Exception as exc:  # reported to the orchestrator, which fails the run
                out = {"error": repr(exc)}
            conn.send(out)
            if name == "stop":
                return

    asyncio.run(serve())


def raise_fd_limit() -> int:
    """Every connection is a file descriptor: raise the soft limit to the hard one (children,
    the broker among them, inherit it). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft
