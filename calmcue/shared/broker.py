"""A private Mosquitto broker owned by this process: the embedded broker of `calmcue run`, and
the real peer the tests and benchmarks start on a free port (and can stop and restart)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from calmcue.shared import broker_access


class BrokerError(RuntimeError):
    pass


# The documented fleet rate (docs/fleet.md, "Broker durability"): 20 events/s fleet-wide plus
# status and telemetry, at most 40 messages/s for the companion. A 10-minute companion outage
# queues 24,000 messages in its persistent session; the limit leaves 4x margin over that.
FLEET_RATE_MSGS_S = 40
OUTAGE_S = 600
MAX_QUEUED_MESSAGES = 100_000


def durable_conf(persistence_dir: Path | str) -> str:
    """The Mosquitto lines that keep every QoS 1 message for the companion's persistent session
    across a companion outage and a broker restart: the same lines docs/fleet.md gives for a
    production broker (tests/test_companion_faults.py checks that they match)."""
    return (
        "persistence true\n"
        f"persistence_location {str(persistence_dir).rstrip('/')}/\n"
        "autosave_interval 30\n"
        f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
        "max_queued_bytes 0\n"
        "max_inflight_messages 1000\n"
        "persistent_client_expiration 14d\n"
    )


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server started next (broker, companion, PostgreSQL).

    Drawn at random below Linux's ephemeral range (32768-60999): a port the kernel hands out for
    bind(0) is also what it gives the next outgoing connection, which could take it in the
    moment before the server binds it ("address already in use"). Never the same port twice in
    one process."""
    import random

    for _ in range(200):
        port = random.randint(20000, 32767)
        if port in _PORTS_GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_GIVEN.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError(
        "mosquitto is not installed. Install it with 'apt-get install mosquitto' "
        "(make run and make test do this), or point calmcue at a broker with --mqtt URL."
    )


class Mosquitto:
    """Run `mosquitto -c <conf>` listening on 127.0.0.1:<port>.

    `extra_conf` lines are appended (password_file, acl_file, ...). The port stays the same
    across restart() so clients can reconnect to it. Persistence is on (`durable_conf`, stored
    in `workdir`): sessions and queued messages survive stop()/start() unless
    `persistence=False` or the workdir is a fresh one.
    """

    def __init__(
        self,
        port: int | None = None,
        extra_conf: str = "",
        workdir: Path | None = None,
        persistence: bool = True,
    ):
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.persistence = persistence
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="calmcue-mqtt-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        durable = self.persistence and "persistence " not in self.extra_conf
        if durable:
            (self.workdir / "persist").mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + (durable_conf(self.workdir / "persist") if durable else "persistence false\n")
            # mosquitto started as root drops to the 'mosquitto' user, which could not write
            # the persistence file in our folder
            + ("user root\n" if os.geteuid() == 0 and "user " not in self.extra_conf else "")
            + "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            + (
                f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
                if not durable and "max_queued_messages" not in self.extra_conf
                else ""
            )
            + ("allow_anonymous true\n" if "allow_anonymous" not in self.extra_conf else "")
            + self.extra_conf
            + "\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        conf = self._write_conf()
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with code {self.proc.returncode}; "
                    f"see {self.workdir / 'mosquitto.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Credentials:
    """Generated accounts of an authenticated embedded broker: username -> password."""

    host: str
    port: int
    passwords: dict[str, str] = field(default_factory=dict)

    def url(self, username: str) -> str:
        """mqtt://user:password@host:port (generated passwords are URL-safe)."""
        return f"mqtt://{username}:{self.passwords[username]}@{self.host}:{self.port}"


def authenticated(
    devices: Iterable[tuple[str, str]] = (),
    extra_accounts: Iterable[object] = (),
    workdir: Path | None = None,
) -> tuple[Mosquitto, Credentials]:
    """A private Mosquitto that refuses anonymous clients: a generated account for the companion
    (every topic) and one for each (site, device) with the fleet's per-device rules (its own
    topic tree only), plus `extra_accounts` (broker_access.Account rows from the fleet registry).
    Nobody else can publish an event, an alert acknowledgement or a fake alert. Start it with
    .start(); the passwords are in the returned Credentials only."""
    broker = Mosquitto(workdir=workdir)
    creds = Credentials("127.0.0.1", broker.port)
    accounts: list[broker_access.Account] = []

    def add(username: str, site: str | None, device: str | None) -> None:
        password = secrets.token_urlsafe(24)
        creds.passwords[username] = password
        accounts.append(
            broker_access.Account(
                username,
                broker_access.hash_password(username, password, use_tool=False),
                site,
                device,
            )
        )

    add(broker_access.COMPANION_USER, None, None)
    for site, device in devices:
        broker_access.check_account(device, site, device)
        add(device, site, device)
    accounts += [
        a  # type: ignore[misc]
        for a in extra_accounts
        if getattr(a, "username", None) not in creds.passwords
    ]
    passwd, acl = broker_access.write_files(accounts, broker.workdir / "access")
    broker.extra_conf = (
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"acl_file {acl}\n"
        # as root, Mosquitto would drop to its own user, which cannot read the private files
        + ("user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
    )
    return broker, creds
