"""IT's screens (companion/static/fleet.html at /it) and what they read: the one device list,
the configuration form's rows, and roll-outs with their progress. Writes go through the
existing routes (device config PUT, /fleet/updates PATCH and rollback, users, tokens)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse

from companion import device_config, fleet_view, settings_table, store
from companion.api.deps import (
    AUTH,
    STATIC,
    Config,
    Db,
    Results,
    Viewer,
    errors,
    require,
    require_fleet,
    require_site,
)

router = APIRouter()


@router.get("/it", include_in_schema=False)
def it_page() -> FileResponse:
    return FileResponse(STATIC / "fleet.html", headers={"Cache-Control": "no-cache"})


@router.get("/api/fleet/devices", tags=["fleet"], responses=errors(*AUTH))
def get_fleet_devices(
    who: Viewer, db: Db, settings: Config, results: Results, site: str | None = None
) -> list[dict[str, Any]]:
    """Every device once: inventory, registry and last telemetry joined, health in one unit
    per figure, and `flags` for what passes a threshold (`GET /api/fleet/settings` lists them).
    The same records as `calmcue device list` and `GET /fleet/inventory`."""
    require(who, "admin", "it")
    return fleet_view.device_records(
        db, sites=who.sites, site=site, silent_after_s=settings.silent_device_s, results=results
    )


@router.get("/api/fleet/settings", tags=["fleet"], responses=errors(*AUTH))
def get_fleet_settings(who: Viewer, settings: Config) -> dict[str, Any]:
    """The rows of the configuration form (key, kind, default, limits, unit) and the health
    thresholds the device list flags at."""
    require(who, "admin", "it")
    return {
        "rows": settings_table.rows(),
        "thresholds": {**fleet_view.THRESHOLDS, "silent_after_s": settings.silent_device_s},
    }


@router.get(
    "/api/fleet/devices/{site}/{device}/config", tags=["fleet"], responses=errors(*AUTH, 404)
)
def get_config_form(
    who: Viewer, db: Db, results: Results, site: str, device: str
) -> dict[str, Any]:
    """One device's configuration form: per setting the default, limits and unit, the site's
    and the device's own value, the effective value, and whether the device confirmed it
    (`confirmed`: a headset's telemetry reports the revision of what the companion publishes,
    or a Pi answered it applied what was last sent; `pending`: not yet; `refused`: the device
    answered no, `detail` says why; `defaults`: nothing published; `unknown`: not reported)."""
    require(who, "admin", "it")
    require_site(who, site)
    try:
        info = device_config.effective(db, site, device)
    except device_config.ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    (rec,) = [r for r in fleet_view.device_records(db, site=site, results=results)
              if r["device"] == device]
    state = rec["config_state"]
    return {
        **info,
        "state": state,
        "detail": rec["config_detail"],
        "expected_rev": rec["config_expected_rev"],
        "reported_rev": rec["config_rev"],
        "tele_at": rec["tele_at"],
        "rows": settings_table.form(info, state),
    }


@router.get("/api/fleet/sites/{site}/config", tags=["fleet"], responses=errors(*AUTH, 404))
def get_site_form(
    who: Viewer, db: Db, settings: Config, results: Results, site: str
) -> dict[str, Any]:
    """A whole site's configuration form (saved with `PUT /api/sites/{site}/config`): the rows
    with the site's values, and how many of its devices confirmed what they were sent
    (`counts` by config state; `state` confirmed only when every reporting device did)."""
    require(who, "admin", "it")
    require_site(who, site)
    found = [s for s in store.list_sites(db, sites=None) if s["site"] == site]
    if not found:
        raise HTTPException(404, f"no site {site!r}: a site appears with its first device")
    doc = json.loads(found[0]["config"]) if found[0]["config"] else {}
    recs = [r for r in fleet_view.device_records(db, site=site, results=results,
                                                 silent_after_s=settings.silent_device_s)
            if r["in_registry"]]
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["config_state"]] = counts.get(r["config_state"], 0) + 1
    if counts.get("refused"):
        state = "refused"
    elif counts.get("pending"):
        state = "pending"
    elif counts.get("confirmed"):
        state = "confirmed" if counts["confirmed"] == len(recs) else "partly"
    else:
        state = "defaults" if not doc else "unknown"
    info = {"site_config": doc, "device_config": doc, "effective": doc}
    refused = [{"device": r["device"], "detail": r["config_detail"]}
               for r in recs if r["config_state"] == "refused"]
    return {"site": site, "target": "site", **info, "devices": len(recs), "counts": counts,
            "refused": refused, "state": state, "rows": settings_table.form(info, state)}


@router.get("/api/fleet/rollouts", tags=["fleet"], responses=errors(*AUTH))
def get_rollouts(request: Request, db: Db, who: Viewer) -> list[dict[str, Any]]:
    """Every update, newest first, with its progress: the site's devices in its roll-out
    share (`targets`), how many confirmed it, and `no_devices` when nothing would take it."""
    require_fleet(who)
    store = getattr(request.app.state, "fleet_store", None)
    if store is None:
        raise HTTPException(404, "the fleet module is not part of this build")
    from companion.fleet import in_rollout

    devices_by_site: dict[str, list[str]] = {}
    for r in fleet_view.device_records(db):
        devices_by_site.setdefault(r["site"], []).append(r["device"])
    out = []
    for u in reversed(store.list_updates()):
        if not who.may_see(u["site"]):
            continue
        site_devices = devices_by_site.get(u["site"], [])
        targets = [d for d in site_devices if in_rollout(u["update"], d, u["percent"])]
        reported = {s["device"] for s in u["devices"]}
        manifest, _ = store.manifest(u["update"])
        out.append({
            **u,
            # a rollback re-publishes earlier files under a higher version (fleet.rollback)
            "content_of": json.loads(manifest).get("content_of"),
            "site_devices": len(site_devices),
            "targets": len(set(targets) | reported),
            "no_devices": not site_devices,
            "done": u["counts"]["confirmed"],
        })
    return out
