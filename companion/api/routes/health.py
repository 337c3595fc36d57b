"""Health and ingest: /healthz, /metrics (Prometheus), /api/ingest."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from companion import ops
from companion.api.deps import AUTH, Config, Db, Maybe, Viewer, errors, require
from companion.ingest import Ingest

router = APIRouter()


@router.get("/healthz", tags=["ops"], responses=errors(503))
def healthz(request: Request, db: Db, who: Maybe, settings: Config) -> Any:
    """`{"status": "ok"}` when the database answers; IT and admins (and demo mode) also
    get the MQTT connection and the ingest counters."""
    try:
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"detail": "the database does not answer"}, status_code=503)
    if who is None or who.role not in ("admin", "it", "demo"):
        return {"status": "ok"}
    counters = request.app.state.ingest.counters()
    return {
        "status": "ok",
        "env": settings.env,
        "mqtt_connected": counters.connected,
        "ingest": asdict(counters),
    }


@router.get(
    "/metrics",
    tags=["ops"],
    response_class=PlainTextResponse,
    responses=errors(*AUTH, json_route=False),
)
def metrics(request: Request, who: Viewer, db: Db) -> PlainTextResponse:
    """Prometheus text format (scrape with an IT or admin bearer token)."""
    require(who, "admin", "it")
    body = ops.metrics_text(db, request.app.state.ingest.counters(), request.app.state.purger)
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/ingest", tags=["ops"], responses=errors(401))
def get_ingest(request: Request, who: Viewer) -> dict[str, Any]:
    """Ingest counters: received, stored, duplicates, dead-lettered, queue depth, and per
    site. A manager sees only the per-site counters of their own sites."""
    ingest: Ingest = request.app.state.ingest
    if who.role in ("admin", "it", "demo"):
        return {**asdict(ingest.counters()), "sites": ingest.site_counters()}
    return {"sites": ingest.site_counters(who.sites or frozenset())}
