"""The companion web service: REST API, live dashboard, and the MQTT ingest in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, text

from companion import store
from companion.auth import Principal, current_principal
from companion.config import Settings
from companion.db import make_engine, migrate
from companion.ingest import Ingest
from companion.live import LiveFeed

log = logging.getLogger("calmcue.companion")
STATIC = Path(__file__).resolve().parent / "static"


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


Viewer = Annotated[Principal, Depends(current_principal)]
Db = Annotated[Engine, Depends(engine_of)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. The lifespan migrates the database, then starts the MQTT ingest (when
    `settings.mqtt_url` names a broker) and stops it on shutdown."""
    settings = settings or Settings()
    if settings.mqtt_url == "embedded":
        raise ValueError(
            "mqtt_url 'embedded' is resolved by companion.server.serve(); pass a URL here"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.db_url)
        migrate(engine)
        feed = LiveFeed()
        ingest = Ingest(settings, engine)
        ingest.on_events(lambda rows: feed.publish("event", rows))
        app.state.engine = engine
        app.state.feed = feed
        app.state.ingest = ingest
        ingest.start()
        log.info(
            "companion ready (%s mode) on database %s", settings.env, engine.url.render_as_string()
        )
        try:
            yield
        finally:
            feed.close()
            ingest.stop()
            engine.dispose()

    app = FastAPI(
        title="calmcue companion",
        version="1",
        summary="Cue events, alerts and device health from calmcue counter devices.",
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.get("/healthz", tags=["ops"])
    def healthz(request: Request, db: Db) -> dict[str, Any]:
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
        counters = request.app.state.ingest.counters()
        return {
            "status": "ok",
            "env": settings.env,
            "mqtt_connected": counters.connected,
            "ingest": asdict(counters),
        }

    @app.get("/api/session", tags=["auth"])
    def session_info(request: Request) -> dict[str, Any]:
        if settings.open_access:
            return {"mode": "demo", "user": None, "role": "demo", "sites": None}
        try:
            who = current_principal(request)
        except HTTPException:
            return {"mode": settings.env, "user": None, "role": None, "sites": []}
        return {
            "mode": settings.env,
            "user": who.username,
            "role": who.role,
            "sites": None if who.sites is None else sorted(who.sites),
        }

    @app.get("/api/events", tags=["events"])
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
        """Stored events, newest first."""
        if site is not None and not who.may_see(site):
            raise HTTPException(403, f"you may not read site {site!r}")
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

    @app.get("/api/dead-letters", tags=["events"])
    def get_dead_letters(
        who: Viewer, db: Db, limit: Limit = 100, offset: Offset = 0
    ) -> list[dict[str, Any]]:
        """Messages the ingest could not store, newest first, with the reason."""
        if who.role not in ("admin", "it", "demo"):
            raise HTTPException(403, "dead letters are for IT and admins")
        return store.list_dead_letters(db, limit=limit, offset=offset)

    @app.get("/api/devices", tags=["devices"])
    def get_devices(who: Viewer, db: Db) -> list[dict[str, Any]]:
        """The device registry: status from the LWT, last seen, firmware, model, telemetry."""
        return store.list_devices(db, sites=who.sites)

    @app.get("/api/ingest", tags=["ops"])
    def get_ingest(request: Request, who: Viewer) -> dict[str, Any]:
        """Ingest counters: received, stored, duplicates, dead-lettered, queue depth."""
        return asdict(request.app.state.ingest.counters())

    @app.get("/api/stream", tags=["events"])
    async def stream(request: Request, who: Viewer) -> StreamingResponse:
        """Server-Sent Events: `event` for every newly stored event (and `alert` changes)."""
        feed: LiveFeed = request.app.state.feed
        return StreamingResponse(
            feed.stream(who.sites, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
