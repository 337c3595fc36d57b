"""Events: the list, the CSV export, the dashboard's stats, the dead letters and the live stream."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
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
from companion.live import LiveFeed

router = APIRouter()


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
    """Stored events, newest first (only the sites the caller may read)."""
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
) -> StreamingResponse:
    """CSV export of events (oldest first); `since`/`until` are Unix seconds."""
    if site is not None:
        require_site(who, site)
    return CsvResponse(
        ops.events_csv(db, sites=who.sites, site=site, since=since, until=until),
        headers={"Content-Disposition": 'attachment; filename="calmcue-events.csv"'},
    )


@router.get("/api/stats", tags=["events"], responses=errors(*AUTH, 422))
def get_stats(who: Viewer, db: Db, settings: Config, site: str | None = None) -> dict[str, Any]:
    """Today's cues by type, per hour and per counter, time to de-escalate, weekly trend.
    Groups smaller than min_group_size are null (suppressed)."""
    if site is not None:
        require_site(who, site)
    return stats.dashboard_stats(
        db, sites=who.sites, site=site, min_group_size=settings.min_group_size
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
    """Server-Sent Events: `event` for every newly stored event, `alert` for alert changes."""
    feed: LiveFeed = request.app.state.feed
    return EventStreamResponse(
        feed.stream(who.sites, request.is_disconnected),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
