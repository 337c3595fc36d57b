"""Manager alerts: open → acknowledged → resolved, every change audited and published.

A `call_manager` cue opens an alert for its counter (one active alert per counter and kind; a
repeat while one is active is noted in the audit, not a new alert). Alerts go out on
`calmcue/v1/<site>/alert/<kind>` (QoS 1) for managers' devices and on the dashboard's live feed.
An open alert nobody acknowledges re-notifies every `alert_renotify_s` and, after
`alert_escalate_s`, escalates to the site's second contact (and the optional webhook).
Publishing goes through an outbox: each change sets the alert's `publish_due` in its own
transaction, and the row stays locked from reading it to clearing it once the broker took the
message. A replica that dies between its commit and its publish leaves it set; the alert watcher
of any replica publishes what has been due for `OUTBOX_GRACE_S` (SKIP LOCKED: one replica each).
So a killed replica costs managers a few seconds, not the alert (docs/cluster.md).

Managers' devices acknowledge or resolve over MQTT on `calmcue/v1/<site>/alert/ack` or
`.../alert/resolve` with `{"id": <alert id>, "by": "<who>"}`.

A device that stops reporting for `silent_device_s` raises a `silent_device` alert, which
resolves itself when the device reports again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from companion import device_config, replicas, schema
from companion.config import Settings
from companion.db import alert_audit, alert_public, alerts, devices, sites
from companion.db import alerts_with_context as with_context
from firmware.core import cue_table

log = logging.getLogger("calmcue.companion.alerts")

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
ACTIVE = (OPEN, ACKNOWLEDGED)
SILENT_DEVICE = "silent_device"
ACK_TOPIC_FILTER = "calmcue/v1/+/alert/+"  # .../alert/ack and .../alert/resolve

# False: the broker did not take it (the outbox tries again); anything else: it did
Publish = Callable[[str, bytes], Any]
# an alert change left unpublished this long is its replica's loss: another replica sends it
OUTBOX_GRACE_S = 3.0
Notify = Callable[[str, list[dict[str, Any]]], None]


class AlertError(ValueError):
    """An alert change that is not allowed (unknown id, wrong state); the message says why."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def alert_topic(site: str, kind: str) -> str:
    return f"calmcue/v1/{site}/alert/{kind}"


class AlertManager:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        publish: Publish,
        notify: Notify,
        clock: Callable[[], float] = time.time,
        replica: str | None = None,
    ):
        self.settings = settings
        self.engine = engine
        self._publish = publish
        self._notify = notify  # the dashboard's live feed
        self._clock = clock
        self.replica = replica  # set when replicas share the database: announce changes to them
        self._lock = threading.Lock()  # one state change at a time keeps the audit in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._webhook: Webhook | None = (
            Webhook(settings.webhook_url) if settings.webhook_url else None
        )

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="calmcue-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._webhook:
            self._webhook.stop()

    # ---- inputs ----------------------------------------------------------------------------

    def on_mqtt(self, topic: str, payload: bytes) -> str | None:
        """`calmcue/v1/<site>/alert/ack|resolve` from a manager's device; never raises. Returns
        None when done (or nothing to do), else why the command was not applied: the ingest
        keeps such a message as a dead letter with that reason."""
        parts = topic.split("/")
        action = parts[-1]
        if action not in ("ack", "resolve"):
            return None  # our own alert publications echo back here; nothing to do
        try:
            cmd = schema.parse_alert_command(payload)
        except schema.EventRejected as exc:
            log.warning("ignored %s: %s", topic, exc.reason)
            return exc.reason
        by = cmd.by or "device"
        try:
            if action == "ack":
                self.acknowledge(cmd.id, f"mqtt:{by}", site=parts[2])
            else:
                self.resolve(cmd.id, f"mqtt:{by}", site=parts[2])
        except AlertError as exc:
            log.warning("ignored %s for alert %s: %s", action, cmd.id, exc)
            return f"{action} not applied: {exc}"
        return None

    # ---- state changes ---------------------------------------------------------------------

    def open(
        self, site: str, device: str, kind: str, *, event: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Open an alert unless this counter already has an active one of this kind (then the
        repeat is audited on it). Returns the new alert, or None for a repeat."""
        for attempt in (1, 2):
            try:
                return self._open_once(site, device, kind, event)
            except IntegrityError:
                # another replica opened it a moment ago (uq_alerts_active): a repeat after all
                if attempt == 2:
                    raise
        return None

    def _open_once(
        self, site: str, device: str, kind: str, event: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        with self._lock, self.engine.begin() as conn:
            alert = self._open_in(conn, site, device, kind, event)
        if alert is not None:
            self._announce(alert)
        return alert

    def open_with_events(
        self, conn: Connection, rows: list[dict[str, Any]]
    ) -> Callable[[], None] | None:
        """Ingest hook, inside the transaction that stores `rows` (companion/ingest.py): open
        the alerts their cues call for (cues of the alert level, firmware/core/cue_table.py:
        call_manager; the alert's kind is the cue's name) in that same transaction, so an event
        is never stored without the alert it opens: a replica killed between two commits
        lost it. Returns what to do after the commit (announce them), or None."""
        calls = [
            r for r in rows
            if r.get("type") == "cue" and cue_table.level(r.get("cue")) >= cue_table.ALERT_LEVEL
        ]  # fmt: skip
        if not calls:
            return None
        opened: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []
        savepoints = conn.dialect.name == "postgresql"  # SQLite: one process, no replicas
        quiet = device_config.sites_in_quiet_hours(conn, {r["site"] for r in calls})
        # the batch's active alerts in one query, kept up to date as this batch opens more
        active = _active_alerts(conn, {(r["site"], r["device"], r["cue"]) for r in calls})
        for row in calls:
            if row["site"] in quiet:
                log.info("%s at %s/%s in quiet hours: no alert", row["cue"], row["site"],
                         row["device"])  # fmt: skip
                continue
            for attempt in (1, 2):
                # a second attempt (another replica opened it meanwhile) looks again
                known = active if attempt == 1 else None
                try:
                    if savepoints:
                        with conn.begin_nested():
                            alert = self._open_in(conn, row["site"], row["device"], row["cue"],
                                                  row, known)  # fmt: skip
                    else:
                        alert = self._open_in(conn, row["site"], row["device"], row["cue"], row,
                                              known)  # fmt: skip
                except IntegrityError:
                    if attempt == 1:  # another replica opened it a moment ago: a repeat
                        continue
                    later.append(row)
                except Exception as exc:  # the events commit anyway; the alert after them
                    log.error("could not open an alert with its event: %s", exc)
                    later.append(row)
                else:
                    if alert is not None:
                        opened.append(alert)
                break

        def after_commit() -> None:
            for alert in opened:
                self._announce(alert)
            for row in later:
                self.open(row["site"], row["device"], row["cue"], event=row)

        return after_commit

    def _open_in(
        self,
        conn: Connection,
        site: str,
        device: str,
        kind: str,
        event: dict[str, Any] | None,
        known: dict[tuple[str, str, str], tuple[int, str]] | None = None,
    ) -> dict[str, Any] | None:
        """Open an alert in `conn`'s transaction, or audit a repeat on the active one. `known`:
        the active alerts (id, state) by (site, device, kind) as read in this transaction
        (`_active_alerts`), updated with the one opened here; None: read it now."""
        now = self._clock()
        key = (site, device, kind)
        hit = (known if known is not None else _active_alerts(conn, {key})).get(key)
        if hit is not None:
            _audit(conn, hit[0], now, "repeated", "system", hit[1], _event_detail(event))
            return None
        opened = conn.execute(
            insert(alerts)
            .values(
                site=site,
                device=device,
                kind=kind,
                state=OPEN,
                event_id=event.get("id") if event else None,
                conv=event.get("conv") if event else None,
                opened_at=now,
                notified_at=now,
                notify_count=1,
                publish_due=now,
            )
            .returning(*alerts.c)
        ).one()
        _audit(conn, opened.id, now, "opened", "system", OPEN, _event_detail(event))
        if known is not None:
            known[key] = (opened.id, OPEN)
        return alert_public(opened)

    def acknowledge(self, alert_id: int, actor: str, *, site: str | None = None) -> dict[str, Any]:
        return self._change(alert_id, actor, "acknowledged", {OPEN}, ACKNOWLEDGED, site)

    def resolve(self, alert_id: int, actor: str, *, site: str | None = None) -> dict[str, Any]:
        return self._change(alert_id, actor, "resolved", set(ACTIVE), RESOLVED, site)

    def undo(
        self, alert_id: int, actor: str, *, site: str | None = None, window_s: float = 10.0
    ) -> dict[str, Any]:
        """Take back `actor`'s own acknowledge or resolve within `window_s` of it: the alert
        goes back to the state it had (audited as 'undone'). A tap on the wrong alert on a phone
        is put right without waiting for the next call_manager."""
        now = self._clock()
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
            if row is None or (site is not None and row.site != site):
                raise AlertError(f"no alert {alert_id}" + (f" at site {site}" if site else ""), 404)
            last = conn.execute(
                select(alert_audit)
                .where(alert_audit.c.alert_id == alert_id)
                .order_by(alert_audit.c.id.desc())
                .limit(1)
            ).one()
            if last.action not in ("acknowledged", "resolved") or last.actor != actor:
                raise AlertError(f"alert {alert_id}: nothing of yours to undo (last: {last.action})")
            if now - last.at > window_s:
                raise AlertError(
                    f"alert {alert_id} was {last.action} {now - last.at:.0f} s ago; undo is "
                    f"possible for {window_s:.0f} s"
                )
            values: dict[str, Any]
            if last.action == "acknowledged":
                values = {"state": OPEN, "acked_at": None, "acked_by": None}
            elif row.acked_at is not None and row.acked_at < row.resolved_at:
                values = {"state": ACKNOWLEDGED, "resolved_at": None, "resolved_by": None}
            else:  # resolved straight from open: the acknowledgement it implied goes too
                values = {
                    "state": OPEN, "resolved_at": None, "resolved_by": None,
                    "acked_at": None, "acked_by": None,
                }  # fmt: skip
            key = (row.site, row.device, row.kind)
            if row.state == RESOLVED and key in _active_alerts(conn, {key}):
                raise AlertError(
                    f"alert {alert_id} cannot be reopened: a newer alert is active for "
                    f"{row.site}/{row.device}"
                )
            values["publish_due"] = now
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values(**values))
            _audit(conn, alert_id, now, "undone", actor, values["state"], f"undid {last.action}")
            alert = alert_public(conn.execute(select(alerts).where(alerts.c.id == alert_id)).one())
        self._announce(alert)
        return alert

    def _change(
        self,
        alert_id: int,
        actor: str,
        action: str,
        allowed_from: set[str],
        new_state: str,
        site: str | None,
    ) -> dict[str, Any]:
        now = self._clock()
        with self._lock, self.engine.begin() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
            if row is None or (site is not None and row.site != site):
                raise AlertError(f"no alert {alert_id}" + (f" at site {site}" if site else ""), 404)
            if row.state not in allowed_from:
                raise AlertError(f"alert {alert_id} is {row.state}; it cannot be {action}")
            values: dict[str, Any] = {"state": new_state, "publish_due": now}
            if new_state == ACKNOWLEDGED:
                values.update(acked_at=now, acked_by=actor)
            else:
                values.update(resolved_at=now, resolved_by=actor)
                if row.acked_at is None:
                    values.update(acked_at=now, acked_by=actor)  # resolving implies seeing it
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values(**values))
            _audit(conn, alert_id, now, action, actor, new_state, None)
            alert = alert_public(conn.execute(select(alerts).where(alerts.c.id == alert_id)).one())
        self._announce(alert)
        return alert

    # ---- the watcher: re-notify, escalate, silent devices ----------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.alert_check_s):
            try:
                self.check()
            except Exception:
                log.exception("alert check failed; trying again")

    def check(self) -> None:
        """One pass: re-notify and escalate unacknowledged alerts, raise and clear silent-device
        alarms. Runs every `alert_check_s`; callable directly in tests."""
        now = self._clock()
        s = self.settings
        changed: list[dict[str, Any]] = []
        escalations: list[tuple[dict[str, Any], str | None]] = []
        with self._lock, self.engine.begin() as conn:
            # SKIP LOCKED: with several replicas (PostgreSQL) each alert is handled by one
            # (only the alerts due now: a lock on every open alert held up their publishing)
            open_alerts = select(alerts).where(
                alerts.c.state == OPEN,
                or_(
                    and_(alerts.c.escalated_at.is_(None),
                         alerts.c.opened_at <= now - s.alert_escalate_s),
                    alerts.c.notified_at <= now - s.alert_renotify_s,
                ),
            )  # fmt: skip
            for row in conn.execute(open_alerts.with_for_update(skip_locked=True)).all():
                values: dict[str, Any] = {
                    "notified_at": now, "notify_count": row.notify_count + 1, "publish_due": now,
                }  # fmt: skip
                if row.escalated_at is None and now - row.opened_at >= s.alert_escalate_s:
                    contact = conn.execute(
                        select(sites.c.second_contact).where(sites.c.site == row.site)
                    ).scalar()
                    values["escalated_at"] = now
                    detail = f"second contact: {contact}" if contact else "no second contact set"
                    _audit(conn, row.id, now, "escalated", "system", OPEN, detail)
                elif now - row.notified_at >= s.alert_renotify_s:
                    _audit(conn, row.id, now, "renotified", "system", OPEN, None)
                else:
                    continue
                conn.execute(update(alerts).where(alerts.c.id == row.id).values(**values))
                alert = alert_public(
                    conn.execute(select(alerts).where(alerts.c.id == row.id)).one()
                )
                changed.append(alert)
                if "escalated_at" in values:
                    escalations.append((alert, contact))
            # silent devices: clear alarms for devices that reported again, then raise new ones
            for row in conn.execute(
                select(alerts, devices.c.last_seen)
                .join(
                    devices,
                    and_(devices.c.site == alerts.c.site, devices.c.device == alerts.c.device),
                )
                .where(alerts.c.kind == SILENT_DEVICE, alerts.c.state.in_(ACTIVE))
                .with_for_update(skip_locked=True, of=alerts)
            ).all():
                if row.last_seen > row.opened_at:
                    conn.execute(
                        update(alerts)
                        .where(alerts.c.id == row.id)
                        .values(
                            state=RESOLVED, resolved_at=now, resolved_by="system", publish_due=now
                        )
                    )
                    _audit(
                        conn, row.id, now, "resolved", "system", RESOLVED, "device reported again"
                    )
                    changed.append(
                        alert_public(
                            conn.execute(select(alerts).where(alerts.c.id == row.id)).one()
                        )
                    )
            silent = conn.execute(
                select(devices.c.site, devices.c.device)
                .where(devices.c.silent.is_(False), devices.c.last_seen < now - s.silent_device_s)
                .with_for_update(skip_locked=True)
            ).all()
            for d in silent:
                conn.execute(
                    update(devices)
                    .where(devices.c.site == d.site, devices.c.device == d.device)
                    .values(silent=True)
                )
        for a in changed:
            self._announce(a)
        for alert, contact in escalations:
            if self._webhook:
                self._webhook.send({**alert, "escalated": True, "contact": contact})
        for d in silent:
            self.open(d.site, d.device, SILENT_DEVICE)
        self.publish_due()

    def _announce(self, alert: dict[str, Any]) -> None:
        """After a change's commit: tell the other replicas and this one's live feed, then
        publish it for managers' devices."""
        if self.replica:
            with self.engine.begin() as conn:
                replicas.notify(conn, self.replica, "a", [alert["id"]])
        with self.engine.connect() as conn:
            full = with_context(conn, [alert])[0]
        self._notify("alert", [full])
        self.publish_due(alert["id"])

    def publish_due(self, alert_id: int | None = None) -> int:
        """Publish alerts whose change is due (the outbox): `alert_id` alone, just changed here
        (waiting for a lock another transaction holds: the watcher's pass, an audit row's key
        lock, or another replica publishing it, after which it is no longer due), or else every
        alert due for `OUTBOX_GRACE_S` (SKIP LOCKED: a row another replica holds is that
        replica's to publish). Each row stays locked from the read until its `publish_due` is
        cleared after the broker took the message, and the message is built from the row as it
        is then; a change made meanwhile waits for the lock and is due again. So two replicas
        never send the same change, and an earlier state never reaches managers after a later
        one. Returns how many were published."""
        q = select(alerts).where(alerts.c.publish_due.is_not(None))
        if alert_id is not None:
            q = q.where(alerts.c.id == alert_id).with_for_update()
        else:
            q = (
                q.where(alerts.c.publish_due < self._clock() - OUTBOX_GRACE_S)
                .order_by(alerts.c.id)
                .limit(100)
                .with_for_update(skip_locked=True)
            )
        sent = 0
        with self.engine.begin() as conn:
            for row in conn.execute(q).all():
                alert = alert_public(row)
                full = with_context(conn, [alert])[0]
                escalated = alert["escalated_at"] is not None
                body = json.dumps({**alert, "escalated": escalated, "contact": full["contact"]})
                try:
                    took = self._publish(alert_topic(alert["site"], alert["kind"]), body.encode())
                except Exception:
                    log.exception("could not publish alert %s", alert["id"])
                    took = False
                if took is False:
                    log.warning("alert %s not published yet; the watcher tries again", row.id)
                    break  # the broker is away: the rest waits for the next pass too
                conn.execute(
                    update(alerts).where(alerts.c.id == row.id).values(publish_due=None)
                )
                sent += 1
                if alert_id is None:
                    log.warning("alert %s published late: its replica stopped or the broker "
                                "did not take it at first", row.id)  # fmt: skip
        return sent


def _active_alerts(
    conn: Connection, keys: set[tuple[str, str, str]]
) -> dict[tuple[str, str, str], tuple[int, str]]:
    """The active alert (id, state) of each (site, device, kind) in `keys` that has one."""
    if not keys:
        return {}
    rows = conn.execute(
        select(alerts.c.id, alerts.c.site, alerts.c.device, alerts.c.kind, alerts.c.state).where(
            alerts.c.site.in_(sorted({k[0] for k in keys})), alerts.c.state.in_(ACTIVE)
        )
    )
    return {(r.site, r.device, r.kind): (r.id, r.state) for r in rows
            if (r.site, r.device, r.kind) in keys}  # fmt: skip


def _audit(
    conn: Connection,
    alert_id: int,
    at: float,
    action: str,
    actor: str,
    state: str,
    detail: str | None,
) -> None:
    conn.execute(
        insert(alert_audit).values(
            alert_id=alert_id, at=at, action=action, actor=actor, state=state, detail=detail
        )
    )


def _event_detail(event: dict[str, Any] | None) -> str | None:
    if not event:
        return None
    return f"event {event.get('id')} level {event.get('level')} score {event.get('score')}"


def list_alerts(
    engine: Engine,
    *,
    sites: frozenset[str] | None,
    active_only: bool = False,
    resolved_only: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first, each with its context (`with_context`)."""
    q = select(alerts).order_by(alerts.c.id.desc()).limit(limit).offset(offset)
    if sites is not None:
        q = q.where(alerts.c.site.in_(sorted(sites)))
    if active_only:
        q = q.where(alerts.c.state.in_(ACTIVE))
    if resolved_only:
        q = q.where(alerts.c.state == RESOLVED)
    with engine.connect() as conn:
        return with_context(conn, [alert_public(r) for r in conn.execute(q)])


def get_alert(engine: Engine, alert_id: int) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        return with_context(conn, [alert_public(row)])[0] if row else None


def audit_of(engine: Engine, alert_id: int) -> list[dict[str, Any]]:
    q = select(alert_audit).where(alert_audit.c.alert_id == alert_id).order_by(alert_audit.c.id)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


class Webhook:
    """JSON POST to a chat tool on escalation, retried with backoff on its own thread."""

    def __init__(self, url: str, attempts: int = 4):
        import queue

        self.url = url
        self.attempts = attempts
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="calmcue-webhook", daemon=True)
        self._thread.start()
        self.delivered = 0
        self.failed = 0

    def send(self, body: dict[str, Any]) -> None:
        self._queue.put(body)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as client:
            while (body := self._queue.get()) is not None:
                for attempt in range(self.attempts):
                    try:
                        client.post(self.url, json=body).raise_for_status()
                        self.delivered += 1
                        break
                    except httpx.HTTPError as exc:
                        log.warning("webhook attempt %d failed: %s", attempt + 1, exc)
                        time.sleep(0.2 * 2**attempt)
                else:
                    self.failed += 1
