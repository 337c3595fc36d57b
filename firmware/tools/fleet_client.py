"""How the IT tools reach the companion's fleet records: over its HTTP API (`--companion URL`,
the normal way) or straight to its database (`--db URL`, at a bench with no companion running).
Both give the same operations; companion/fleet.py holds the logic."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Protocol

DEFAULT_KEY_PATH = Path("fleet/ota_signing_key.pem")  # under the companion's data_dir


def default_key_path() -> Path:
    """The companion's signing key as its settings place it: CALMCUE_FLEET_KEY_PATH, relative
    ones under CALMCUE_DATA_DIR (default `var`), made absolute once, here."""
    data_dir = Path(os.environ.get("CALMCUE_DATA_DIR") or "var").expanduser().absolute()
    path = Path(os.environ.get("CALMCUE_FLEET_KEY_PATH") or DEFAULT_KEY_PATH).expanduser()
    return path if path.is_absolute() else data_dir / path


class FleetClientError(RuntimeError):
    pass


class Fleet(Protocol):
    def record(self, **row: Any) -> dict[str, Any]: ...
    def mqtt_account(self, *, site: str | None, device: str | None,
                     username: str | None = None) -> dict[str, str]: ...
    def public_key(self) -> dict[str, Any]: ...
    def report_key(self, device: str) -> str: ...
    def inventory(self, site: str | None = None) -> list[dict[str, Any]]: ...
    def device(self, device: str) -> dict[str, Any] | None: ...
    def broker_files(self) -> dict[str, str]: ...
    def create_update(self, *, version: str, site: str, percent: int,
                      files: dict[str, bytes]) -> dict[str, Any]: ...
    def set_rollout(self, update_id: str, *, percent: int | None = None,
                    state: str | None = None) -> dict[str, Any]: ...
    def update_summary(self, update_id: str) -> dict[str, Any]: ...
    def rollback(self, update_id: str) -> dict[str, Any]: ...
    def list_updates(self) -> list[dict[str, Any]]: ...


class DbFleet:
    def __init__(self, db_url: str, key_path: Path | None = None):
        from sqlalchemy import create_engine

        from companion import fleet

        self.engine = create_engine(db_url)
        fleet.create_tables(self.engine)
        self.store = fleet.FleetStore(self.engine, key_path or default_key_path())

    def record(self, **row: Any) -> dict[str, Any]:
        from companion.fleet import FleetError

        try:
            return self.store.record(**row)
        except FleetError as e:
            raise FleetClientError(str(e)) from None

    def mqtt_account(self, *, site: str | None, device: str | None,
                     username: str | None = None) -> dict[str, str]:
        from companion.fleet import FleetError

        try:
            return self.store.mqtt_account(site=site, device=device, username=username)
        except FleetError as e:
            raise FleetClientError(str(e)) from None

    def public_key(self) -> dict[str, Any]:
        from companion.fleet import public_key_json

        return public_key_json(self.store.key)

    def report_key(self, device: str) -> str:
        return self.store.report_key(device)

    def inventory(self, site: str | None = None) -> list[dict[str, Any]]:
        return self.store.inventory(site)

    def device(self, device: str) -> dict[str, Any] | None:
        return self.store.device(device)

    def broker_files(self) -> dict[str, str]:
        return self.store.broker_files()

    def create_update(self, **kw: Any) -> dict[str, Any]:
        return self.store.create_update(**kw)

    def set_rollout(self, update_id: str, **kw: Any) -> dict[str, Any]:
        return self.store.set_rollout(update_id, **kw)

    def update_summary(self, update_id: str) -> dict[str, Any]:
        return self.store.update_summary(update_id)

    def rollback(self, update_id: str) -> dict[str, Any]:
        from companion.fleet import FleetError

        try:
            return self.store.rollback(update_id)
        except FleetError as e:
            raise FleetClientError(str(e)) from None

    def list_updates(self) -> list[dict[str, Any]]:
        return self.store.list_updates()


class HttpFleet:
    """The companion's /fleet API. `client` may be any httpx-compatible client (tests pass a
    FastAPI TestClient)."""

    def __init__(self, base_url: str, token: str | None = None, client: Any = None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = client or httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                           timeout=30)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except OSError as e:
            raise FleetClientError(
                f"cannot reach the companion ({e}); is `calmcue companion serve` running, and "
                "is --companion the right URL?") from None
        if resp.status_code == 404 and method == "GET" and path.startswith("/fleet/devices/"):
            return None
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise FleetClientError(f"companion refused {method} {path}: {detail}")
        return resp.json()

    def record(self, **row: Any) -> dict[str, Any]:
        device = row.pop("device")
        out = dict(self._call("PUT", f"/fleet/inventory/{device}", json=row))
        # also into the companion's device registry, so its messages are accepted even with
        # auto-registration off (the endpoint is idempotent)
        resp = self.http.post("/api/devices", json={"site": row["site"], "device": device})
        if resp.status_code >= 400 and resp.status_code != 404:
            raise FleetClientError(f"companion refused to register {device}: {resp.text}")
        return out

    def mqtt_account(self, *, site: str | None, device: str | None,
                     username: str | None = None) -> dict[str, str]:
        return dict(self._call("POST", "/fleet/mqtt/accounts",
                               json={"site": site, "device": device, "username": username}))

    def public_key(self) -> dict[str, Any]:
        return dict(self._call("GET", "/fleet/ota/key"))

    def report_key(self, device: str) -> str:
        return str(self._call("POST", f"/fleet/inventory/{device}/report-key")["report_key"])

    def inventory(self, site: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", "/fleet/inventory", params={"site": site} if site else {}))

    def device(self, device: str) -> dict[str, Any] | None:
        return self._call("GET", f"/fleet/devices/{device}")  # type: ignore[no-any-return]

    def broker_files(self) -> dict[str, str]:
        return dict(self._call("GET", "/fleet/mqtt/files"))

    def create_update(self, *, version: str, site: str, percent: int,
                      files: dict[str, bytes]) -> dict[str, Any]:
        body = {"version": version, "site": site, "percent": percent,
                "files": {p: base64.b64encode(d).decode() for p, d in files.items()}}
        return dict(self._call("POST", "/fleet/updates", json=body))

    def set_rollout(self, update_id: str, *, percent: int | None = None,
                    state: str | None = None) -> dict[str, Any]:
        return dict(self._call("PATCH", f"/fleet/updates/{update_id}",
                               json={"percent": percent, "state": state}))

    def update_summary(self, update_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/fleet/updates/{update_id}"))

    def rollback(self, update_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/fleet/updates/{update_id}/rollback"))

    def list_updates(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/fleet/updates"))


def connect(companion: str | None, db: str | None, key_path: str | None = None) -> Fleet:
    companion = companion or os.environ.get("CALMCUE_COMPANION_URL")
    db = db or os.environ.get("CALMCUE_DB_URL")
    if companion:
        return HttpFleet(companion, token=os.environ.get("CALMCUE_API_TOKEN"))
    if db:
        return DbFleet(db, Path(key_path) if key_path else None)
    raise FleetClientError(
        "say where the fleet records live: --companion http://HOST:8000 (with CALMCUE_API_TOKEN "
        "for an IT account), or --db URL for the companion's database")
