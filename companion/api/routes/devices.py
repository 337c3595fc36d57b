"""Sites and devices: the registry, site details, and site and device configuration (validated,
stored, then published retained to the devices)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from calmcue.shared.broker_access import RESERVED_DEVICE_IDS
from companion import device_config, fleet_view, store
from companion.api.deps import (
    AUTH,
    BODY,
    Config,
    Db,
    Results,
    Viewer,
    errors,
    require,
    require_site,
)

router = APIRouter()


class DeviceCreate(BaseModel):
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    device: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")

    @field_validator("device")
    @classmethod
    def _not_a_topic_word(cls, v: str) -> str:
        if v in RESERVED_DEVICE_IDS:
            raise ValueError(f"device id {v!r} is a reserved topic word; choose another")
        return v


class SiteUpdate(BaseModel):
    name: str | None = Field(default=None, max_length=128)
    first_contact: str | None = Field(default=None, max_length=128)
    second_contact: str | None = Field(default=None, max_length=128)


@router.get("/api/sites", tags=["sites"], responses=errors(401))
def get_sites(who: Viewer, db: Db) -> list[dict[str, Any]]:
    return store.list_sites(db, sites=who.sites)


@router.put("/api/sites/{site}", tags=["sites"], responses=errors(*AUTH, *BODY))
def put_site(who: Viewer, db: Db, site: str, body: SiteUpdate) -> dict[str, Any]:
    """Name and alert contacts of a site (the second contact gets escalations)."""
    require(who, "admin")
    try:
        return store.upsert_site(db, site=site, **body.model_dump(exclude_none=True))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/api/sites/{site}/config", tags=["sites"], responses=errors(*AUTH, 404))
def get_site_config(who: Viewer, db: Db, site: str) -> dict[str, Any]:
    require_site(who, site)
    for row in store.list_sites(db, sites=None):
        if row["site"] == site:
            return json.loads(row["config"]) if row["config"] else {}
    raise HTTPException(404, f"no site {site!r}")


@router.put("/api/sites/{site}/config", tags=["sites"], responses=errors(*AUTH, *BODY))
def put_site_config(
    request: Request, who: Viewer, db: Db, results: Results, site: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Validate and store a site's configuration, then publish every device's effective
    configuration retained on calmcue/v1/<site>/<device>/config."""
    require(who, "admin", "it")
    try:
        cfg = device_config.set_site(db, site, body)
    except (device_config.ConfigError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    topics = device_config.publish_site(db, site, request.app.state.ingest.publish)
    if results is not None:
        results.sent_topics(topics)
    return {"config": cfg.model_dump(exclude_none=True), "published": topics}


@router.get("/api/devices/{site}/{device}/config", tags=["devices"], responses=errors(*AUTH, 404))
def get_device_config(who: Viewer, db: Db, site: str, device: str) -> dict[str, Any]:
    """Site and device documents, the effective merge, and the payload the device gets."""
    require_site(who, site)
    try:
        return device_config.effective(db, site, device)
    except device_config.ConfigError as exc:
        raise HTTPException(404, str(exc)) from None


@router.put(
    "/api/devices/{site}/{device}/config",
    tags=["devices"],
    responses=errors(*AUTH, 404, *BODY),
)
def put_device_config(
    request: Request,
    who: Viewer,
    db: Db,
    results: Results,
    site: str,
    device: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    require(who, "admin", "it")
    try:
        device_config.set_device(db, site, device, body)
    except device_config.ConfigError as exc:
        status = 404 if "registry" in str(exc) else 422
        raise HTTPException(status, str(exc)) from None
    device_config.publish_device(db, site, device, request.app.state.ingest.publish)
    if results is not None:
        results.sent(site, device)
    return device_config.effective(db, site, device)


@router.post("/api/devices", tags=["devices"], status_code=201, responses=errors(*AUTH, *BODY))
def post_device(request: Request, who: Viewer, db: Db, body: DeviceCreate) -> dict[str, Any]:
    """Register a device before it first reports (needed when auto-registration is off)."""
    require(who, "admin", "it")
    row = store.register_device(db, site=body.site, device=body.device)
    request.app.state.ingest.register_device(body.site, body.device)
    return row


@router.get("/api/devices", tags=["devices"], responses=errors(401))
def get_devices(who: Viewer, db: Db, settings: Config, results: Results) -> list[dict[str, Any]]:
    """Every device once (companion/fleet_view.py): the registry (status from the LWT, last
    seen, firmware, model, telemetry) joined with the fleet inventory, so the dashboard lists
    what `calmcue device list` and the IT screens list."""
    return fleet_view.device_records(
        db, sites=who.sites, silent_after_s=settings.silent_device_s, results=results
    )
