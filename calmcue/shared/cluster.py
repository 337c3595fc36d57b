"""A private three-node RabbitMQ cluster owned by this process: the clustered broker of
docs/cluster.md as the tests and `calmcue bench fleet --cluster` start it, on free ports.

Each node speaks MQTT to the devices (the `rabbitmq_mqtt` plugin; QoS 1 PUBACK only after the
queues holding the message have confirmed it) and AMQP 0-9-1 to the companion replicas, which
consume the one quorum queue `calmcue.ingest` (replicated on all three nodes; it survives the loss
of any one) and acknowledge each message after their database commit. The nodes find each other
through the classic peer-discovery list; they use a private Erlang port mapper (epmd) on a free
port and a private cookie, so nothing here touches a RabbitMQ already running on the machine.

Accounts and access rules come from `broker_access.rabbitmq_definitions` (the same per-device and
per-site rules `calmcue device register` writes for Mosquitto), loaded by every node at boot.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from calmcue.shared import broker_access
from calmcue.shared.broker import BrokerError, free_port

RABBIT_HOME = Path("/usr/lib/rabbitmq")
INGEST_QUEUE = broker_access.INGEST_QUEUE
NODES = 3


def find_rabbitmq() -> Path:
    server = RABBIT_HOME / "bin" / "rabbitmq-server"
    if not server.exists():
        raise BrokerError(
            "rabbitmq-server is not installed. Install it with 'apt-get install rabbitmq-server' "
            "(make test does this: scripts/system-deps.sh test)."
        )
    return server


@dataclass
class Node:
    index: int
    name: str  # Erlang node name, e.g. calmcue1-<tag>@localhost
    amqp_port: int
    mqtt_port: int
    dist_port: int
    mqtts_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def mqtt_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.mqtt_port)


@dataclass
class ClusterTLS:
    """PEM files for the nodes' MQTT over TLS listener (docs/cluster.md)."""

    certfile: str
    keyfile: str
    cafile: str


@dataclass
class RabbitCluster:
    """Three RabbitMQ nodes on 127.0.0.1. `start()` returns once all three run as one cluster;
    `kill(i)` is a kill -9 of node i, `start_node(i)` brings it back (same name, ports, data),
    `stop()` stops them all (their data stays for `start()` again), `close()` removes it all."""

    workdir: Path | None = None
    accounts: list[broker_access.Account] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)  # username -> password (generated)
    tls: ClusterTLS | None = None
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._own_dir = self.workdir is None
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="calmcue-cluster-"))
        self.tag = secrets.token_hex(3)
        self.epmd_port = free_port()
        self.cookie = secrets.token_hex(16)
        self._epmd: subprocess.Popen[bytes] | None = None
        if broker_access.COMPANION_USER not in self.passwords:
            self.add_account(broker_access.COMPANION_USER, None, None)
        for i in range(NODES):
            self.nodes.append(
                Node(i, f"calmcue{i + 1}-{self.tag}@localhost", free_port(), free_port(),
                     free_port(), free_port() if self.tls else None)  # fmt: skip
            )

    # ---- accounts -----------------------------------------------------------------------------

    def add_account(self, username: str, site: str | None, device: str | None) -> str:
        """A generated password and the fleet's rules for this account (before start())."""
        password = secrets.token_urlsafe(18)
        broker_access.check_account(username, site, device)
        self.passwords[username] = password
        self.accounts.append(
            broker_access.Account(
                username, "", site, device, rabbitmq_hash=broker_access.rabbitmq_hash(password)
            )
        )
        return password

    def add_devices(self, devices: Iterable[tuple[str, str]]) -> None:
        for site, device in devices:
            self.add_account(device, site, device)

    # ---- addresses ----------------------------------------------------------------------------

    @property
    def mqtt_addresses(self) -> list[tuple[str, int]]:
        return [n.mqtt_address for n in self.nodes]

    def mqtt_urls(self, username: str) -> str:
        """`mqtt://user:pw@127.0.0.1:p1,mqtt://…:p2,…`: one URL per node, for the companion."""
        pw = self.passwords[username]
        return ",".join(f"mqtt://{username}:{pw}@127.0.0.1:{n.mqtt_port}" for n in self.nodes)

    def amqp_urls(self, username: str = broker_access.COMPANION_USER) -> str:
        pw = self.passwords[username]
        return ",".join(f"amqp://{username}:{pw}@127.0.0.1:{n.amqp_port}/%2F" for n in self.nodes)

    # ---- files --------------------------------------------------------------------------------

    def _dir(self, node: Node) -> Path:
        assert self.workdir is not None
        return self.workdir / f"node{node.index + 1}"

    def _write(self, node: Node) -> dict[str, str]:
        assert self.workdir is not None
        d = self._dir(node)
        d.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        defs = self.workdir / "definitions.json"
        defs.write_text(json.dumps(broker_access.rabbitmq_definitions(self.accounts), indent=1))
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (d / "rabbitmq.conf").write_text(
            node_conf(
                node.amqp_port, node.mqtt_port, [n.name for n in self.nodes], str(defs),
                mqtts_port=node.mqtts_port, tls=self.tls,
            )
        )  # fmt: skip
        (self.workdir / "rabbitmq-env.conf").write_text("")  # not the system's /etc one
        return {
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
        }

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 240.0) -> RabbitCluster:
        """Start every node that is not running, one after the other, and wait until all three
        run as one cluster. One at a time: the MQTT adapter tracks client ids in a Raft group
        of the nodes, and a node that boots while another is joining that group is refused
        (`cluster_change_not_permitted`) and stays outside it for good; with only two members
        the loss of one node would stop every MQTT connect in the cluster."""
        find_rabbitmq()
        self._start_epmd()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self.start_node(node.index, wait=False)
            self._wait_listening(node, deadline)
        self.wait_ready(max(10.0, deadline - time.monotonic()))
        return self

    def _start_epmd(self) -> None:
        # our own port mapper, in the foreground as our child, so close() can end it
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.epmd_port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.05)

    def start_node(self, i: int, wait: bool = True, timeout: float = 120.0) -> None:
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            return
        env = {**os.environ, **self._write(node)}
        log = open(self._dir(node) / "out.log", "ab")
        node.proc = subprocess.Popen(
            [str(find_rabbitmq())], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=self._dir(node), start_new_session=True,
        )  # fmt: skip
        if wait:
            self._wait_listening(node, time.monotonic() + timeout)

    def _wait_listening(self, node: Node, deadline: float) -> None:
        # the MQTT listener opens last, once the node has booted (and joined the cluster)
        while True:
            if node.proc is None or node.proc.poll() is not None:
                raise BrokerError(
                    f"RabbitMQ node {node.name} exited; see {self._dir(node) / 'out.log'}"
                )
            try:
                with socket.create_connection(node.mqtt_address, timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"RabbitMQ node {node.name} did not open MQTT port {node.mqtt_port} in "
                        f"time; see {self._dir(node) / 'out.log'}"
                    ) from None
                time.sleep(0.2)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.proc is not None:
                self._wait_listening(node, deadline)
        while True:
            running = self.running_nodes()
            members = self.mqtt_tracker_members() if len(running) == NODES else []
            queue: list[str] = []
            if len(running) == sum(n.proc is not None for n in self.nodes) and (
                len(running) < NODES or len(members) == NODES
            ):
                if len(running) < NODES:
                    return
                queue = self.replicate_ingest_queue()
                if len(queue) == NODES:
                    return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the cluster did not form in time: running {running}; the MQTT client-id "
                    f"tracker answers with members {members} (all {NODES} nodes are needed, or "
                    f"losing one would stop MQTT connects); the ingest queue is on {queue}"
                )
            time.sleep(1.0)

    def ensure_healthy(self, timeout: float = 240.0, rejoin_s: float = 60.0) -> float:
        """All three nodes running as one cluster, in the MQTT client-id tracker, and the
        ingest queue on each: start the nodes that are down and wait. A node whose process runs
        but whose MQTT listener is not open yet is nudged (`nudge_mqtt_tracker`); a node still
        outside `rejoin_s` after its start is restarted (its data kept). If the cluster is not
        whole by `timeout`, raise a BrokerError saying which node is out, what the others see
        and the end of each node's log. Returns the seconds taken."""
        find_rabbitmq()
        self._start_epmd()
        t0 = time.monotonic()
        deadline = t0 + timeout
        since = {n.index: t0 for n in self.nodes}
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                node.proc = None
                self.start_node(node.index, wait=False)
        while True:
            try:
                self.wait_ready(min(15.0, max(1.0, deadline - time.monotonic())))
                return time.monotonic() - t0
            except BrokerError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise BrokerError(f"{last}; {self.diagnosis()}")
            for i in self.stragglers():
                node = self.nodes[i]
                up = node.proc is not None and node.proc.poll() is None
                if up and not self._listening(node):
                    self.nudge_mqtt_tracker(i)
                if not up or time.monotonic() - since[i] > rejoin_s:
                    self.stop_node(i, timeout=30)
                    self.start_node(i, wait=False)
                    since[i] = time.monotonic()

    def nudge_mqtt_tracker(self, i: int) -> None:
        """Start node i's member of the MQTT client-id tracker now. After all nodes restart at
        once, RabbitMQ 3.10's MQTT plugin on a booting node first asks its peers for the
        tracker's members, which needs a leader, which needs a majority of members running: each
        node waits for the others until a 100 s timeout, and its MQTT listener opens only then
        (measured here: 100 s). Starting the member out of band elects a leader at once."""
        self.ctl(i, "eval", "ra:restart_server(coordination, {mqtt_node, node()}).", check=False)

    def _listening(self, node: Node) -> bool:
        try:
            with socket.create_connection(node.mqtt_address, timeout=0.5):
                return True
        except OSError:
            return False

    def stragglers(self) -> list[int]:
        """The nodes that are down, not in the running cluster, not in the MQTT tracker, or
        whose MQTT listener is not open. The last matters after a power cut: a node can be back
        in the cluster and the tracker with its listener still shut, and left alone it stays
        so (the whole cluster then looks healthy to every other test but that node's port)."""
        running = set(self.running_nodes())
        members = set(self.mqtt_tracker_members()) if len(running) == NODES else running
        return [
            n.index for n in self.nodes
            if n.proc is None or n.proc.poll() is not None
            or n.name not in running or n.name not in members
            or not self._listening(n)
        ]  # fmt: skip

    def diagnosis(self) -> str:
        """Each node's state and the last lines of its log, for an error message."""
        parts = []
        for n in self.nodes:
            up = n.proc is not None and n.proc.poll() is None
            try:
                tail = (self._dir(n) / "out.log").read_text(errors="replace").splitlines()[-8:]
            except OSError:
                tail = []
            parts.append(f"{n.name} ({'process running' if up else 'process gone'}); log: "
                         + " | ".join(tail))  # fmt: skip
        return "; ".join(parts)

    def running_nodes(self) -> list[str]:
        """The cluster's running nodes, as one live node sees them."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            out = self.ctl(node.index, "cluster_status", "--formatter", "json", check=False)
            try:
                return sorted(json.loads(out).get("running_nodes", []))
            except ValueError:
                continue
        return []

    def replicate_ingest_queue(self) -> list[str]:
        """The ingest queue on all three nodes: the definitions declare it as soon as the first
        node boots, when the cluster may still have fewer members (a quorum queue keeps the
        members it was declared with; `grow` adds the others). Returns the nodes it was on
        before (all three: done; a node still booting its definitions answers nothing yet,
        so the caller asks again)."""
        listing = self.ctl(0, "list_queues", "name", "members", check=False)
        line = next((ln for ln in listing.splitlines() if ln.startswith(INGEST_QUEUE)), "")
        on = [n.name for n in self.nodes if n.name in line]
        for node in self.nodes:
            if line and node.name not in on:
                self.ctl(0, "grow", node.name, "all", tool="rabbitmq-queues", check=False)
        return on

    def mqtt_tracker_members(self) -> list[str]:
        """The nodes of the MQTT adapter's client-id tracker (a Raft group, `mqtt_node`)."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            out = self.ctl(node.index, "eval", "ra:members({mqtt_node, node()}).", check=False)
            if not out.lstrip().startswith("{ok,"):
                return []  # no answer yet (an election after a restart): not a member list
            return sorted(set(re.findall(r"'([^']+@localhost)'", out)))
        return []

    def ctl(self, i: int, *args: str, check: bool = True, tool: str = "rabbitmqctl") -> str:
        """`rabbitmqctl -n <node i> ARGS` with this cluster's cookie and port mapper."""
        node = self.nodes[i]
        env = {**os.environ, **self._write(node)}
        r = subprocess.run(
            [str(RABBIT_HOME / "bin" / tool), "-n", node.name, *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and r.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed: {r.stderr.strip()[:500]}")
        return r.stdout

    def pid(self, i: int) -> int | None:
        """The node's Erlang VM (beam.smp), for CPU and memory figures."""
        try:
            return int((self._dir(self.nodes[i]) / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self, i: int) -> None:
        """kill -9 node i: the machine it runs on is gone (no goodbye to clients or peers)."""
        node = self.nodes[i]
        if node.proc is None:
            return
        pid = self.pid(i)
        for p in (pid, node.proc.pid):
            if p is not None:
                try:
                    os.killpg(os.getpgid(p), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        node.proc.wait(10)
        node.proc = None

    def stop_node(self, i: int, timeout: float = 60.0) -> None:
        node = self.nodes[i]
        if node.proc is None:
            return
        if node.proc.poll() is None:
            try:
                os.killpg(node.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                node.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(i)
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node.index)

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node.index)
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait(5)
            self._epmd = None
        if self.workdir is not None:
            if self._own_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def node_conf(
    amqp_port: int,
    mqtt_port: int,
    cluster: list[str],
    definitions: str,
    mqtts_port: int | None = None,
    tls: ClusterTLS | None = None,
    bind: str = "127.0.0.1",
) -> str:
    """One node's rabbitmq.conf (docs/cluster.md shows the same lines for three hosts)."""
    lines = [
        f"listeners.tcp.default = {bind}:{amqp_port}",
        f"mqtt.listeners.tcp.default = {bind}:{mqtt_port}",
        "mqtt.allow_anonymous = false",
        "mqtt.exchange = amq.topic",
        "mqtt.vhost = /",
        # several thousand devices reconnect at once when a node goes away
        "mqtt.tcp_listen_options.backlog = 4096",
        "cluster_formation.peer_discovery_backend = classic_config",
        *(f"cluster_formation.classic_config.nodes.{i + 1} = {n}" for i, n in enumerate(cluster)),
        # a node that comes back after its peers carried on rejoins them (no split brain: the
        # minority pauses)
        "cluster_partition_handling = pause_minority",
        f"load_definitions = {definitions}",
        "loopback_users = none",
        "log.file = false",
        "log.console = true",
        "log.console.level = warning",
    ]
    if tls is not None and mqtts_port:
        lines += [
            f"mqtt.listeners.ssl.default = {bind}:{mqtts_port}",
            f"ssl_options.cacertfile = {tls.cafile}",
            f"ssl_options.certfile = {tls.certfile}",
            f"ssl_options.keyfile = {tls.keyfile}",
            "ssl_options.verify = verify_none",
            "ssl_options.fail_if_no_peer_cert = false",
            "ssl_options.versions.1 = tlsv1.3",
            "ssl_options.versions.2 = tlsv1.2",
        ]
    return "\n".join(lines) + "\n"
