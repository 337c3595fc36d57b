"""Manager alerts: the list, one alert with its audit trail, acknowledge and resolve."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy import Engine

from companion import alerts as alerts_mod
from companion.alerts import AlertError, AlertManager
from companion.api.deps import (
    AUTH,
    AlertId,
    Alerts,
    Config,
    Db,
    Limit,
    Offset,
    Viewer,
    errors,
    require,
)
from companion.auth import Principal

router = APIRouter()


@router.get("/api/alerts", tags=["alerts"], responses=errors(401, 422))
def get_alerts(
    who: Viewer,
    db: Db,
    active: bool = False,
    resolved: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Alerts, newest first, each with the store's name, its contacts (`contact`: who should
    come now) and the cue that opened it; `active=true` for open and acknowledged ones only,
    `resolved=true` for the history of resolved ones."""
    return alerts_mod.list_alerts(
        db, sites=who.sites, active_only=active, resolved_only=resolved, limit=limit, offset=offset
    )


@router.get("/api/alerts/{alert_id}", tags=["alerts"], responses=errors(401, 404, 422))
def get_alert(who: Viewer, db: Db, alert_id: AlertId) -> dict[str, Any]:
    """One alert with its audit trail (every state change: who, when)."""
    found = alerts_mod.get_alert(db, alert_id)
    if found is None or not who.may_see(found["site"]):
        raise HTTPException(404, f"no alert {alert_id} you may see")
    return {**found, "audit": alerts_mod.audit_of(db, alert_id)}


def _act(
    who: Principal, db: Engine, mgr: AlertManager, alert_id: int, action: str, undo_s: float = 0
) -> Any:
    require(who, "admin", "manager")
    found = alerts_mod.get_alert(db, alert_id)
    if found is None or not who.may_see(found["site"]):
        raise HTTPException(404, f"no alert {alert_id} at your sites")
    site = found["site"]
    try:
        actor = f"user:{who.username}"
        if action == "ack":
            return mgr.acknowledge(alert_id, actor, site=site)
        if action == "undo":
            return mgr.undo(alert_id, actor, site=site, window_s=undo_s)
        return mgr.resolve(alert_id, actor, site=site)
    except AlertError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.post("/api/alerts/{alert_id}/ack", tags=["alerts"], responses=errors(*AUTH, 404, 409, 422))
def ack_alert(who: Viewer, db: Db, mgr: Alerts, alert_id: AlertId) -> dict[str, Any]:
    return _act(who, db, mgr, alert_id, "ack")  # type: ignore[no-any-return]


@router.post(
    "/api/alerts/{alert_id}/resolve", tags=["alerts"], responses=errors(*AUTH, 404, 409, 422)
)
def resolve_alert(who: Viewer, db: Db, mgr: Alerts, alert_id: AlertId) -> dict[str, Any]:
    return _act(who, db, mgr, alert_id, "resolve")  # type: ignore[no-any-return]


@router.post("/api/alerts/{alert_id}/undo", tags=["alerts"], responses=errors(*AUTH, 404, 409, 422))
def undo_alert(
    who: Viewer, db: Db, mgr: Alerts, settings: Config, alert_id: AlertId
) -> dict[str, Any]:
    """Take back your own acknowledge or resolve of this alert, within `alert_undo_s` (10 s by
    default): it returns to the state it had before."""
    return _act(who, db, mgr, alert_id, "undo", settings.alert_undo_s)  # type: ignore[no-any-return]
