"""Mosquitto password and ACL files for the fleet: each device gets its own account and may
publish only under its own topic tree and read only its own config and commands; a site account
(a manager's device) reads its site's alerts and may acknowledge or resolve them; the companion
account reads everything. Generated from the companion's registry (companion/fleet.py); see
docs/fleet.md for the reload step.

Nothing else gets access: an account without a site (other than the companion's) is refused when
it is created and, should one be in the registry, rendered with no rules at all. Usernames, sites
and device ids are checked against strict patterns before anything is written, so no newline,
space, `:` or topic wildcard can reach the files, and device ids cannot be a word the topic scheme
uses at that level (`calmcue/v1/<site>/alert/...` is the site's alerts, not a device).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from firmware.core.events import TOPIC_ROOT

# Mosquitto 2's own format ($7$ = PBKDF2-SHA512); mosquitto_passwd uses 101 iterations.
PBKDF2_ITERATIONS = 101
COMPANION_USER = "companion"

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SITE_OR_DEVICE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# words the topic scheme uses, or may use, where a device id goes (calmcue/v1/<site>/<device>/...);
# `alert` is taken today: calmcue/v1/<site>/alert/<kind> and .../alert/ack|resolve
RESERVED_DEVICE_IDS = frozenset(
    {"alert", "alerts", "companion", "fleet", "ota", "cmd", "config", "evt", "status", "tele",
     "state", "all", "broadcast", "sys"}
)


class AccessError(ValueError):
    """An account or identity the broker rules must not contain; the message says why."""


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise AccessError(
            f"MQTT username {username!r} is not allowed: 1-64 characters of A-Z, a-z, 0-9, "
            "'_', '.', '@' or '-', starting with a letter or digit (no spaces, newlines, ':', "
            "'/', '+' or '#')"
        )
    return username


def _topic_word(kind: str, value: str) -> str:
    # a site or device id is one level of the topic tree: calmcue/v1/<site>/<device>/...
    if not isinstance(value, str) or not SITE_OR_DEVICE.fullmatch(value):
        raise AccessError(
            f"{kind} {value!r} is not allowed: 1-32 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_site(site: str) -> str:
    return _topic_word("site", site)


def check_device(device: str) -> str:
    _topic_word("device id", device)
    if device in RESERVED_DEVICE_IDS:
        raise AccessError(
            f"device id {device!r} is a reserved topic word (calmcue/v1/<site>/{device}/... "
            "means something else); choose another, e.g. counter-1"
        )
    return device


def check_account(username: str, site: str | None, device: str | None) -> None:
    """Raise AccessError unless this is the companion's account, a device's (site and device)
    or a site's (a manager's device: site, no device)."""
    check_username(username)
    if site is None:
        if device is not None:
            raise AccessError(f"device {device!r} needs its site")
        if username != COMPANION_USER:
            raise AccessError(
                f"account {username!r} has no site: only the companion's own account "
                f"({COMPANION_USER!r}) may cover every site; give a site (and a device)"
            )
        return
    check_site(site)
    if device is not None:
        check_device(device)
    if username == COMPANION_USER:
        raise AccessError(f"{COMPANION_USER!r} is the companion's account; it has no site")


@dataclass(frozen=True)
class Account:
    username: str
    password_hash: str
    site: str | None = None  # None for the companion account
    device: str | None = None
    # the same password in RabbitMQ's format (`rabbitmq_hash`), for the clustered broker;
    # None for an account made before it existed (rotate it to give it one)
    rabbitmq_hash: str | None = None


def hash_password(username: str, password: str, use_tool: bool = True) -> str:
    """A password-file hash Mosquitto 2 reads: from `mosquitto_passwd` when it is installed,
    else the same PBKDF2-SHA512 `$7$` format computed here."""
    tool = shutil.which("mosquitto_passwd") if use_tool else None
    if tool:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "passwd"
            subprocess.run(
                [tool, "-c", "-b", str(path), username, password],
                check=True,
                capture_output=True,
            )
            line = path.read_text().strip()
        return line.split(":", 1)[1]
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password_hash: str, password: str) -> bool:
    """Verify a `$7$` hash (used by tests and by `calmcue device register --check`)."""
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    iterations, salt, want = int(parts[2]), base64.b64decode(parts[3]), base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
    return got == want


def device_topics(site: str, device: str) -> dict[str, list[str]]:
    own = f"{TOPIC_ROOT}/{site}/{device}"
    return {
        "write": [f"{own}/#"],
        "read": [f"{own}/config", f"{own}/cmd/#"],
    }


def site_topics(site: str) -> dict[str, list[str]]:
    """A manager's device: reads the site's alerts, acknowledges and resolves them."""
    alerts = f"{TOPIC_ROOT}/{site}/alert"
    return {"write": [f"{alerts}/ack", f"{alerts}/resolve"], "read": [f"{alerts}/#"]}


def _rules(a: Account) -> list[str]:
    try:
        check_account(a.username, a.site, a.device)
    except AccessError as exc:
        # the registry holds something it should not (an older version wrote it): no access
        return [f"# no access: {str(exc).splitlines()[0][:200]!r}"]
    if a.site is None:
        return [f"topic readwrite {TOPIC_ROOT}/#"]
    topics = site_topics(a.site) if a.device is None else device_topics(a.site, a.device)
    return [f"topic write {t}" for t in topics["write"]] + [
        f"topic read {t}" for t in topics["read"]
    ]


def _safe_in_files(a: Account) -> bool:
    try:
        check_username(a.username)
    except AccessError:
        return False
    return "\n" not in a.password_hash and "\r" not in a.password_hash


def render_password_file(accounts: Iterable[Account]) -> str:
    """One `user:hash` line per account; an account whose name could break the file (newline,
    ':' ...) is left out, so it cannot log in at all."""
    return "".join(f"{a.username}:{a.password_hash}\n" for a in accounts if _safe_in_files(a))


def render_acl_file(accounts: Iterable[Account]) -> str:
    lines = [
        "# calmcue broker access rules, generated by `calmcue device register`; do not edit.",
        "# A device publishes only under its own topic tree and reads only its own config and",
        "# commands; a site account reads its site's alerts and acknowledges them. The companion",
        "# account reads and writes everything under the root. Anyone else gets nothing.",
        "",
    ]
    for a in sorted(accounts, key=lambda a: a.username):
        if not _safe_in_files(a):
            lines += ["# an account with a malformed username was left out", ""]
            continue
        lines.append(f"user {a.username}")
        lines += _rules(a)
        lines.append("")
    return "\n".join(lines)


def write_files(accounts: list[Account], out_dir: Path) -> tuple[Path, Path]:
    """Write `passwd` and `acl` into out_dir atomically (Mosquitto may read them at any time)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = []
    for name, text in (
        ("passwd", render_password_file(accounts)),
        ("acl", render_acl_file(accounts)),
    ):
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600 if name == "passwd" else 0o644)
        os.replace(tmp, path)
        result.append(path)
    return result[0], result[1]


# ---- the clustered broker (RabbitMQ, docs/cluster.md) ---------------------------------------------

RABBITMQ_HASHING = "rabbit_password_hashing_sha256"
INGEST_QUEUE = "calmcue.ingest"
# what the companion's replicated ingest queue receives, as MQTT topic filters (the broker's
# routing keys are these with '/' -> '.', '+' -> '*'): what must not be lost
INGEST_FILTERS = (
    f"{TOPIC_ROOT}/+/+/evt/+",
    f"{TOPIC_ROOT}/+/+/status",
    f"{TOPIC_ROOT}/+/alert/ack",
    f"{TOPIC_ROOT}/+/alert/resolve",
)
# Telemetry (QoS 0, sent again every ~50 s, only the last one kept) goes to a queue of its own
# that is not replicated: a transient classic queue, declared by the replicas on the node they
# consume from, capped, and gone with its node (the replicas declare it again on another). So
# only what must not be lost pays for three quorum-queue members (docs/cluster.md).
TELEMETRY_QUEUE = "calmcue.telemetry"
TELEMETRY_FILTERS = (f"{TOPIC_ROOT}/+/+/tele",)
TELEMETRY_MAX = 100_000  # messages held while no replica consumes; the oldest go first
TELEMETRY_ARGUMENTS = {"x-queue-type": "classic", "x-max-length": TELEMETRY_MAX,
                       "x-overflow": "drop-head"}  # fmt: skip


def rabbitmq_hash(password: str) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + SHA-256(salt + password)),
    a 4-byte random salt."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def routing_key(topic_filter: str) -> str:
    """An MQTT topic or filter as the broker's AMQP routing key or binding pattern."""
    return topic_filter.replace("/", ".").replace("+", "*")


def mqtt_topic(key: str) -> str:
    """A routing key of a message the broker's MQTT adapter published, as its MQTT topic
    (calmcue's topic words never contain '.' or '/')."""
    return key.replace(".", "/")


def _rx(topic: str) -> str:
    """A rule's MQTT filter as a RabbitMQ topic-permission regex over routing keys."""
    out = []
    for word in topic.split("/"):
        out.append(".+" if word == "#" else "[^.]+" if word == "+" else re.escape(word))
    return "\\.".join(out)


def _alternatives(topics: list[str]) -> str:
    return "^(" + "|".join(_rx(t) for t in topics) + ")$"


def rabbitmq_definitions(accounts: Iterable[Account]) -> dict[str, object]:
    """The cluster's accounts and rules as a RabbitMQ definitions file (`load_definitions`, read
    at every node's boot): the same per-device and per-site topic rules as the Mosquitto ACL
    (routing keys are topics with '.' for '/'), each account's own MQTT subscription queues,
    and the companion's durable ingest queue (a quorum queue on every node) bound to every
    topic it reads, declared before any device publishes. `password_hash` must be a
    `rabbitmq_hash`. Accounts the rules refuse get no permissions at all."""
    users: list[dict[str, object]] = []
    perms: list[dict[str, str]] = []
    topic_perms: list[dict[str, str]] = []
    own_queues = "^(amq\\.topic|mqtt-subscription-.*)$"
    for a in sorted(accounts, key=lambda a: a.username):
        if not _safe_in_files(a) or not a.rabbitmq_hash:
            continue
        users.append({"name": a.username, "password_hash": a.rabbitmq_hash,
                      "hashing_algorithm": RABBITMQ_HASHING, "tags": []})  # fmt: skip
        try:
            check_account(a.username, a.site, a.device)
        except AccessError:
            continue  # in the registry but not allowed: it may log in to nothing
        if a.site is None:
            perms.append({"user": a.username, "vhost": "/", "configure": ".*", "write": ".*",
                          "read": ".*"})  # fmt: skip
            everything = "^" + re.escape(TOPIC_ROOT.replace("/", ".")) + "\\..+$"
            topic_perms.append({"user": a.username, "vhost": "/", "exchange": "amq.topic",
                                "write": everything, "read": everything})  # fmt: skip
            continue
        topics = site_topics(a.site) if a.device is None else device_topics(a.site, a.device)
        perms.append({"user": a.username, "vhost": "/", "configure": "^mqtt-subscription-.*$",
                      "write": own_queues, "read": own_queues})  # fmt: skip
        topic_perms.append({"user": a.username, "vhost": "/", "exchange": "amq.topic",
                            "write": _alternatives(topics["write"]),
                            "read": _alternatives(topics["read"])})  # fmt: skip
    return {
        "users": users,
        "vhosts": [{"name": "/"}],
        "permissions": perms,
        "topic_permissions": topic_perms,
        "queues": [{"name": INGEST_QUEUE, "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {"x-queue-type": "quorum"}}],
        "bindings": [
            {"source": "amq.topic", "vhost": "/", "destination": INGEST_QUEUE,
             "destination_type": "queue", "routing_key": routing_key(f), "arguments": {}}
            for f in INGEST_FILTERS
        ],
        "exchanges": [],
        "parameters": [],
        "policies": [],
        "global_parameters": [],
    }  # fmt: skip
