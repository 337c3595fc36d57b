"""Reads for the API and dashboard (keyword-only, a connection or engine passed in)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from companion.db import dead_letters, devices, events

EVENT_FIELDS = ("id", "received_at") + tuple(
    c.name for c in events.columns if c.name not in ("id", "received_at")
)


def event_public(row: Any) -> dict[str, Any]:
    """An event as the API shows it: absent optional fields are left out."""
    m = row._mapping if hasattr(row, "_mapping") else row
    return {k: m[k] for k in EVENT_FIELDS if m.get(k) is not None}


def list_events(
    engine: Engine,
    *,
    sites: frozenset[str] | None,
    site: str | None = None,
    device: str | None = None,
    etype: str | None = None,
    cue: str | None = None,
    since: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first. `sites` is what the caller may read (None = every site)."""
    q = select(events)
    if sites is not None:
        q = q.where(events.c.site.in_(sorted(sites)))
    if site is not None:
        q = q.where(events.c.site == site)
    if device is not None:
        q = q.where(events.c.device == device)
    if etype is not None:
        q = q.where(events.c.type == etype)
    if cue is not None:
        q = q.where(events.c.cue == cue)
    if since is not None:
        q = q.where(events.c.received_at >= since)
    q = q.order_by(events.c.id.desc()).limit(limit).offset(offset)
    with engine.connect() as conn:
        return [event_public(r) for r in conn.execute(q)]


def count_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def list_dead_letters(engine: Engine, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    q = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit).offset(offset)
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q):
            payload: bytes = r.payload
            out.append(
                {
                    "id": r.id,
                    "topic": r.topic,
                    "reason": r.reason,
                    "size": r.size,
                    "truncated": r.size > len(payload),
                    "payload": payload.decode("utf-8", "replace"),
                    "received_at": r.received_at,
                }
            )
    return out


def list_devices(engine: Engine, *, sites: frozenset[str] | None) -> list[dict[str, Any]]:
    q = select(devices).order_by(devices.c.site, devices.c.device)
    if sites is not None:
        q = q.where(devices.c.site.in_(sorted(sites)))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
