"""Reads for the API and dashboard (keyword-only, a connection or engine passed in)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from companion.db import (
    dead_letters,
    devices,
    event_public,
    events,
    insert_ignoring_duplicates,
)
from companion.db import sites as sites_table


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


_SITE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def list_sites(engine: Engine, *, sites: frozenset[str] | None) -> list[dict[str, Any]]:
    """Sites with a row of their own (contacts, config) or with devices."""
    with engine.connect() as conn:
        rows = {r.site: dict(r._mapping) for r in conn.execute(select(sites_table))}
        for (site,) in conn.execute(select(devices.c.site).distinct()):
            rows.setdefault(
                site,
                {
                    "site": site,
                    "name": None,
                    "first_contact": None,
                    "second_contact": None,
                    "config": None,
                },
            )
    return [rows[k] for k in sorted(rows) if sites is None or k in sites]


def upsert_site(engine: Engine, *, site: str, **values: Any) -> dict[str, Any]:
    if not _SITE.fullmatch(site):
        raise ValueError("site must be 1-32 chars of a-z, 0-9, '_' or '-'")
    with engine.begin() as conn:
        exists = conn.execute(select(sites_table.c.site).where(sites_table.c.site == site)).first()
        if exists:
            if values:
                conn.execute(update(sites_table).where(sites_table.c.site == site).values(**values))
        else:
            conn.execute(insert(sites_table).values(site=site, **values))
        return dict(
            conn.execute(select(sites_table).where(sites_table.c.site == site)).one()._mapping
        )


def register_device(engine: Engine, *, site: str, device: str) -> dict[str, Any]:
    """Add a device to the registry (status unknown until it reports); idempotent."""
    import time

    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            insert_ignoring_duplicates(engine, devices),
            {
                "site": site,
                "device": device,
                "status": "unknown",
                "first_seen": now,
                "last_seen": now,
                "silent": False,
            },
        )
        row = conn.execute(
            select(devices).where(devices.c.site == site, devices.c.device == device)
        ).one()
    return dict(row._mapping)
