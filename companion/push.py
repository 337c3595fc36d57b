"""Web Push: manager alerts that reach a locked phone (issue 15).

The dashboard is an installable web app (static/manifest.webmanifest, a service worker at /sw.js).
A manager's browser subscribes with the companion's VAPID public key; the subscription (the push
service's endpoint and the browser's keys) is stored in `push_subscriptions` (migration 0006).
When a `call_manager` alert opens, re-notifies, escalates, or is acknowledged/resolved, the
companion encrypts a small JSON message to every subscribed manager of that site (and admins)
and POSTs it to their push service with `pywebpush`, signed with its VAPID key. The service
worker shows (or closes) the notification even when the page is not open.

The VAPID key is made on first start and kept in `<data_dir>/vapid_private.pem` (0600), beside
the session secret. Sending runs on its own thread: a slow push service never holds up the
alert manager. A subscription its push service reports gone (404/410) is deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    or_,
    select,
    update,
)

from companion.db import Id, metadata, users

log = logging.getLogger("calmcue.companion.push")

VAPID_FILE = "vapid_private.pem"
# alerts a manager is woken for; silent devices are IT's and stay on the dashboard
PUSHED_KINDS = frozenset({"call_manager"})

push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("endpoint_hash", String(64), nullable=False, unique=True),
    Column("p256dh", String(128), nullable=False),
    Column("auth", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_sent_at", Float),
    Column("failures", Integer, nullable=False, default=0),
    Column("session_hash", String(64)),  # the dashboard session that subscribed, if any
    Index("ix_push_subscriptions_user", "user_id"),
)


class PushError(ValueError):
    """A subscription that cannot be stored; the message says why."""


# ---- the VAPID key ------------------------------------------------------------------------------


def vapid_key_path(data_dir: Path) -> Path:
    return data_dir / VAPID_FILE


def load_or_create_vapid_key(data_dir: Path) -> Any:
    """The companion's VAPID signing key (EC P-256), made on first start under data_dir (0600,
    written whole then linked into place, like the session secret)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = vapid_key_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{VAPID_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by other users; chmod 600 it")
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def public_key_b64(key: Any) -> str:
    """The browser's `applicationServerKey`: the uncompressed P-256 point, base64url."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---- subscriptions ----------------------------------------------------------------------------


def _hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


def _b64_len(value: str, want: int, what: str) -> None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise PushError(f"{what} is not base64url") from None
    if len(raw) != want:
        raise PushError(f"{what} must be {want} bytes, not {len(raw)}")


def subscribe(
    engine: Engine,
    *,
    username: str,
    endpoint: str,
    p256dh: str,
    auth: str,
    session_id: str | None = None,
) -> dict[str, Any]:
    """Store (or move to this user) the browser's subscription, as PushSubscription.toJSON()
    gives it. Made from a dashboard session, it ends with that session's logout."""
    if not endpoint.startswith(("https://", "http://")):
        raise PushError("endpoint must be the push service's http(s) URL")
    _b64_len(p256dh, 65, "keys.p256dh")
    _b64_len(auth, 16, "keys.auth")
    h = _hash(endpoint)
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise PushError(f"no user {username!r}")
        conn.execute(delete(push_subscriptions).where(push_subscriptions.c.endpoint_hash == h))
        new_id = conn.execute(
            insert(push_subscriptions).values(
                user_id=user_id,
                endpoint=endpoint,
                endpoint_hash=h,
                p256dh=p256dh,
                auth=auth,
                created_at=time.time(),
                failures=0,
                session_hash=_hash(session_id) if session_id else None,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    return {"id": new_id, "endpoint": endpoint}


def unsubscribe(engine: Engine, *, username: str, endpoint: str) -> bool:
    with engine.begin() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        n = conn.execute(
            delete(push_subscriptions).where(
                push_subscriptions.c.endpoint_hash == _hash(endpoint),
                push_subscriptions.c.user_id == user_id,
            )
        ).rowcount
    return bool(n)


def forget_session(engine: Engine, session_id: str) -> int:
    """Logout: the browser that subscribed in this session is not notified any more (a shared
    phone stops buzzing for the manager who left it)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                delete(push_subscriptions).where(
                    push_subscriptions.c.session_hash == _hash(session_id)
                )
            ).rowcount
        )


def count_for(engine: Engine, username: str) -> int:
    with engine.connect() as conn:
        return len(
            conn.execute(
                select(push_subscriptions.c.id)
                .join(users, users.c.id == push_subscriptions.c.user_id)
                .where(users.c.username == username)
            ).all()
        )


def subscriptions_for_site(engine: Engine, site: str) -> list[Any]:
    """Every subscription of a manager of `site` or of an admin (IT sees alerts but does not
    handle them, so is not woken)."""
    q = (
        select(push_subscriptions, users.c.role, users.c.sites)
        .join(users, users.c.id == push_subscriptions.c.user_id)
        .where(or_(users.c.role == "admin", users.c.role == "manager"))
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [r for r in rows if r.role == "admin" or site in r.sites.split(",")]


# ---- the message --------------------------------------------------------------------------------


def message_for(alert: dict[str, Any]) -> dict[str, Any]:
    """What the service worker shows: short enough for a lock screen, the counter first."""
    where = alert.get("site_name") or alert["site"]
    if alert["state"] != "open":
        who = (alert.get("acked_by") or "").removeprefix("user:")
        title = f"{alert['state'].capitalize()}: {alert['device']}, {where}"
        body = f"by {who}" if who else ""
    else:
        title = f"Manager needed at {alert['device']}, {where}"
        parts = []
        if alert.get("level") is not None:
            parts.append(f"level {alert['level']}")
        if alert.get("reason"):
            parts.append(str(alert["reason"]).replace("_", " "))
        if alert.get("escalated_at") is not None:
            parts.append(f"escalated to {alert.get('second_contact') or 'the second contact'}")
        body = ", ".join(parts)
    return {
        "id": alert["id"],
        "kind": alert["kind"],
        "site": alert["site"],
        "device": alert["device"],
        "state": alert["state"],
        "title": title,
        "body": body,
        "url": "/#alert-" + str(alert["id"]),
    }


# ---- sending ----------------------------------------------------------------------------------


class Pusher:
    """Sends Web Push messages for alert changes on its own thread (alert manager listener)."""

    def __init__(self, engine: Engine, data_dir: Path, subject: str, ttl_s: int = 300):
        from py_vapid import Vapid02

        self.engine = engine
        self.subject = subject
        self.ttl_s = ttl_s
        key = load_or_create_vapid_key(data_dir)
        self.public_key = public_key_b64(key)
        self._vapid = Vapid02(private_key=key)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="calmcue-push", daemon=True)
        self.sent = 0
        self.failed = 0
        self.removed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def on_alerts(self, kind: str, items: list[dict[str, Any]]) -> None:
        """The alert manager's notify hook (kind 'alert'); never raises, never blocks."""
        if kind != "alert":
            return
        for alert in items:
            if alert.get("kind") in PUSHED_KINDS:
                self._queue.put(alert)

    def _run(self) -> None:
        while (alert := self._queue.get()) is not None:
            try:
                self.send_alert(alert)
            except Exception:
                log.exception("web push for alert %s failed", alert.get("id"))

    def send_alert(self, alert: dict[str, Any]) -> int:
        """Encrypt and send `alert` to every subscription of its site; returns how many the
        push services accepted."""
        from pywebpush import WebPushException, webpush

        data = json.dumps(message_for(alert), separators=(",", ":"))
        ok = 0
        for sub in subscriptions_for_site(self.engine, alert["site"]):
            info = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
            try:
                webpush(
                    info,
                    data,
                    vapid_private_key=self._vapid,
                    vapid_claims={"sub": self.subject},
                    ttl=self.ttl_s,
                    headers={"Urgency": "high" if alert["state"] == "open" else "normal"},
                    timeout=5,
                )
            except WebPushException as exc:
                status = exc.response.status_code if exc.response is not None else None
                self.failed += 1
                with self.engine.begin() as conn:
                    if status in (404, 410):  # the browser dropped it
                        conn.execute(
                            delete(push_subscriptions).where(push_subscriptions.c.id == sub.id)
                        )
                        self.removed += 1
                    else:
                        conn.execute(
                            update(push_subscriptions)
                            .where(push_subscriptions.c.id == sub.id)
                            .values(failures=push_subscriptions.c.failures + 1)
                        )
                log.warning("web push to subscription %s failed: %s", sub.id, exc)
                continue
            except Exception as exc:  # network: the service is down or unreachable
                self.failed += 1
                log.warning("web push to subscription %s failed: %s", sub.id, exc)
                continue
            ok += 1
            self.sent += 1
            with self.engine.begin() as conn:
                conn.execute(
                    update(push_subscriptions)
                    .where(push_subscriptions.c.id == sub.id)
                    .values(last_sent_at=time.time(), failures=0)
                )
        return ok
