"""Events: the list, the CSV exports, the dashboard's stats, the dead letters and the live stream.

The privacy rule (docs/privacy.md): cues reach a manager only as counts of at least
`min_group_size` (smaller groups are suppressed: null in JSON, an empty count in CSV). Single
cues, one row each with their counter and time, are for the roles that run the devices (IT,
admin; the demo's simulated data): GET /api/events, /api/events.csv and the live feed's `event`
messages refuse or leave them out for managers."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from companion import ops, stats, store
from companion.api.deps import (
    AUTH,
    Config,
    CsvResponse,
    Db,
    EventStreamResponse,
    Limit,
    Offset,
    Viewer,
    errors,
    require,
    require_site,
)
from companion.auth import Principal
from companion.live import LiveFeed
from firmware.core import cue_table

router = APIRouter()

SINGLE_CUES = (
    "single cues are for IT and admin; managers see counts of at least min_group_size "
    "(GET /api/stats, /api/stats.csv; docs/privacy.md)"
)


def require_single_cues(who: Principal) -> None:
    if who.role not in ("admin", "it", "demo"):
        raise HTTPException(403, SINGLE_CUES)


def _range(start: str | None, end: str | None) -> tuple[date, date]:
    try:
        return stats.parse_range(start, end)
    except stats.RangeError as exc:
        raise HTTPException(422, str(exc)) from None



@router.get("/api/events", tags=["events"], responses=errors(*AUTH, 422))
def get_events(
    who: Viewer,
    db: Db,
    limit: Limit = 100,
    offset: Offset = 0,
    site: str | None = None,
    device: str | None = None,
    type: str | None = None,
    cue: str | None = None,
) -> list[dict[str, Any]]:
    """Stored events, newest first (only the sites the caller may read; IT and admin only)."""
    require_single_cues(who)
    if site is not None:
        require_site(who, site)
    return store.list_events(
        db,
        sites=who.sites,
        site=site,
        device=device,
        etype=type,
        cue=cue,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/api/events.csv",
    tags=["events"],
    response_class=CsvResponse,
    responses={
        200: {"description": "CSV, header row first"},
        **errors(*AUTH, 422, json_route=False),
    },
)
def get_events_csv(
    who: Viewer,
    db: Db,
    site: str | None = None,
    since: float | None = None,
    until: float | None = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
) -> StreamingResponse:
    """CSV export of single events (oldest first; IT and admin only), times in ISO 8601 with
    their UTC offset. Filter by `site`, by days `from`/`to` (YYYY-MM-DD, both included) or by
    `since`/`until` (Unix seconds)."""
    require_single_cues(who)
    if site is not None:
        require_site(who, site)
    if start is not None or end is not None:
        first, last = _range(start, end)
        since = datetime.combine(first, datetime.min.time()).timestamp()
        until = datetime.combine(last + timedelta(days=1), datetime.min.time()).timestamp()
    return CsvResponse(
        ops.events_csv(db, sites=who.sites, site=site, since=since, until=until),
        headers={"Content-Disposition": 'attachment; filename="calmcue-events.csv"'},
    )


@router.get("/api/cues", tags=["events"], responses=errors(*AUTH))
def get_cues(who: Viewer) -> list[dict[str, Any]]:
    """The cue table (firmware/core/cue_table.py), as the devices play it: name, level, LED colour
    ("#rrggbb") and blinks, motor buzzes (each: pct, on_ms, off_ms, times), repeat_ms, the label
    the dashboard shows, and whether it alerts the manager."""
    cues = []
    for row in cue_table.rows():
        name, level, colour, led_pct, led_on, led_off, led_n, pct, on, off, n, repeat_ms, label = row
        cues.append({
            "name": name, "level": level, "colour": f"#{colour:06x}", "label": label,
            "led": {"pct": led_pct, "on_ms": led_on, "off_ms": led_off, "times": led_n},
            "motor": {"pct": pct, "on_ms": on, "off_ms": off, "times": n},
            "repeat_ms": repeat_ms, "alert": level >= cue_table.ALERT_LEVEL,
        })  # fmt: skip
    return cues


@router.get("/api/stats", tags=["events"], responses=errors(*AUTH, 422))
def get_stats(
    who: Viewer,
    db: Db,
    settings: Config,
    site: str | None = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
) -> dict[str, Any]:
    """Today's cues by type, per hour and per counter, time to de-escalate, weekly trend; and
    `range`: the days `from`..`to` (YYYY-MM-DD, default the last 7) by type, hour of day,
    counter and day, with time to de-escalate per day. Groups smaller than min_group_size are
    null (suppressed)."""
    if site is not None:
        require_site(who, site)
    first, last = _range(start, end)
    out = stats.dashboard_stats(
        db, sites=who.sites, site=site, min_group_size=settings.min_group_size
    )
    out["range"] = stats.range_stats(
        db, sites=who.sites, site=site, first=first, last=last,
        min_group_size=settings.min_group_size,
    )  # fmt: skip
    return out


@router.get(
    "/api/stats.csv",
    tags=["events"],
    response_class=CsvResponse,
    responses={
        200: {"description": "CSV, header row first"},
        **errors(*AUTH, 422, json_route=False),
    },
)
def get_stats_csv(
    who: Viewer,
    db: Db,
    settings: Config,
    site: str | None = None,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
    by: Literal["day", "hour"] = "day",
) -> StreamingResponse:
    """Cue counts per day (or hour), site, counter and cue for `from`..`to` (YYYY-MM-DD, default
    the last 7 days), the same filters as the dashboard's charts; periods in ISO 8601; a count
    below min_group_size is left empty with the note 'fewer than N'."""
    if site is not None:
        require_site(who, site)
    first, last = _range(start, end)
    rows = stats.counts_csv_rows(
        db, sites=who.sites, site=site, first=first, last=last,
        min_group_size=settings.min_group_size, by=by,
    )  # fmt: skip
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    name = f"calmcue-cues-{first}-{last}.csv"
    return CsvResponse(
        iter([buf.getvalue()]), headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/api/dead-letters", tags=["events"], responses=errors(*AUTH, 422))
def get_dead_letters(
    who: Viewer, db: Db, limit: Limit = 100, offset: Offset = 0
) -> list[dict[str, Any]]:
    """Messages the ingest could not store, newest first, with the reason."""
    require(who, "admin", "it")
    return store.list_dead_letters(db, limit=limit, offset=offset)


@router.get(
    "/api/stream",
    tags=["events"],
    response_class=EventStreamResponse,
    responses={
        200: {"description": "text/event-stream, until the client goes"},
        **errors(401, json_route=False),
    },
)
async def stream(request: Request, who: Viewer) -> StreamingResponse:
    """Server-Sent Events: `event` for every newly stored event (IT and admin: single cues are
    not a manager's to see), `alert` for alert changes."""
    feed: LiveFeed = request.app.state.feed
    single = who.role in ("admin", "it", "demo")
    return EventStreamResponse(
        feed.stream(who.sites, request.is_disconnected, events=single),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
