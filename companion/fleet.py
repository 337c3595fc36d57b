"""Fleet management for IT: the inventory of factory labels and device ids, per-device MQTT
accounts (the source of the Mosquitto password and ACL files), and signed over-the-air updates
with staged roll-out and per-device status.

Self-contained: its own tables (prefix `fleet_`, made by migration 0004) and two routers,
so the rest of the companion only mounts it (docs/fleet.md):

    from companion import fleet
    store = fleet.FleetStore(engine, key_path=Path("var/fleet/ota_signing_key.pem"))
    app.include_router(fleet.it_router(store), dependencies=[Depends(<IT or admin>)])
    app.include_router(fleet.device_router(store))   # devices fetch updates without a login

Update signatures: RSA-2048 PKCS#1 v1.5 over SHA-256 of the exact manifest bytes, because the
device verifies them in a few lines of MicroPython (firmware/headset/ota.py explains the choice). The
answer to an update check (the offer) is signed the same way and carries the device's nonce.
Versions are x.y.z numbers, compared as the device compares them; each site's versions only go
up, because a device refuses any update not above its confirmed version (anti-rollback).

Device reports are authenticated: an HMAC-SHA256 of the body under the device's report key,
derived from the signing key, the device id and its provisioning time (so re-provisioning a
device gives it a new key), handed to the device at provisioning.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Engine, select

from calmcue.shared import broker_access
from companion.fleet_tables import (  # the fleet's tables, shared with fleet_view
    inventory,
    mqtt_accounts,
    update_files,
    update_status,
    updates,
)

UPDATE_STATES = ("applied", "confirmed", "rolled_back", "refused")
# a device that ended in one of these is not offered the same update again
_FINAL = ("confirmed", "rolled_back", "refused")
# What a device's reports may change an update's status to, from its current status: only
# forward, so a replayed earlier report cannot move it back. confirmed -> rolled_back is the
# loader's safe mode giving up on a confirmed bundle (firmware/headset/ota_boot.py).
_NEXT: dict[str | None, tuple[str, ...]] = {
    None: UPDATE_STATES,
    "applied": ("confirmed", "rolled_back"),
    "confirmed": ("rolled_back",),
    "rolled_back": (),
    "refused": (),
}
VERSION_RE = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9}){0,7}$")


class FleetError(ValueError):
    """A request that cannot be carried out; the message says what to do."""


def create_tables(engine: Engine) -> None:
    """The fleet tables come from the companion's Alembic migrations (0004), like every other
    table; this brings a database to the newest schema."""
    from companion.db import migrate

    migrate(engine)


def version_key(version: str) -> tuple[int, ...]:
    """"2.10.1" -> (2, 10, 1), ordered as the device orders them (firmware/headset/ota.py _version)."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise FleetError(f"version {version!r} is not of the form x.y.z (numbers), e.g. 1.4.0")
    return tuple(int(x) for x in version.split("."))


def _newer(version: str, than: str | None) -> bool:
    """For offers: is `version` above what the device says it runs (unknown: yes)."""
    try:
        return not than or version_key(version) > version_key(than)
    except FleetError:
        return version != than


def in_rollout(update_id: str, device: str, percent: int) -> bool:
    """Stable bucket 0-99 per (update, device): widening the percentage keeps earlier devices in."""
    bucket = int(hashlib.sha256(f"{update_id}:{device}".encode()).hexdigest()[:8], 16) % 100
    return bucket < percent


# ---- signing key ----------------------------------------------------------------------------


def load_or_create_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_json(key: Any) -> dict[str, Any]:
    """The form the device stores in ota_key.json."""
    numbers = key.public_key().public_numbers()
    return {"alg": "rsa-pkcs1v15-sha256", "n": format(numbers.n, "x"), "e": numbers.e}


def sign(key: Any, data: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return str(key.sign(data, padding.PKCS1v15(), hashes.SHA256()).hex())


# ---- the store (used by the routers and directly by `calmcue device ... --db URL`) -----------


@dataclass
class FleetStore:
    engine: Engine
    key_path: Path

    def __post_init__(self) -> None:
        self._key: Any = None

    @property
    def key(self) -> Any:
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
        return self._key

    # inventory

    def record(
        self,
        *,
        device: str,
        site: str,
        name: str,
        label: str,
        profile: str,
        target: str,
        version: str | None,
    ) -> dict[str, Any]:
        now = time.time()
        with self.engine.begin() as conn:
            other = conn.execute(
                select(inventory.c.device).where(inventory.c.label == label)
            ).scalar_one_or_none()
            if other is not None and other != device:
                raise FleetError(
                    f"factory label {label!r} is already recorded for device {other}; check the "
                    "label on the box, or retire that device first"
                )
            row = dict(
                device=device,
                site=site,
                name=name,
                label=label,
                profile=profile,
                target=target,
                version=version,
                provisioned_at=now,
            )
            exists = conn.execute(
                select(inventory.c.device).where(inventory.c.device == device)
            ).scalar_one_or_none()
            if exists:
                conn.execute(inventory.update().where(inventory.c.device == device).values(**row))
            else:
                conn.execute(inventory.insert().values(**row))
        return row

    def inventory(self, site: str | None = None) -> list[dict[str, Any]]:
        """Every device once, provisioned or only seen over MQTT: the inventory joined with
        the companion's registry and telemetry (companion/fleet_view.py), the same records the
        IT screens show. `in_inventory` is False for a device that was never provisioned."""
        from companion.fleet_view import device_records

        return device_records(self.engine, site=site)

    def device(self, device: str) -> dict[str, Any] | None:
        """One device's record (as `inventory` lists it, provisioned or not) and its update
        history; None when the companion knows no such device."""
        from companion.fleet_view import device_records

        found = [r for r in device_records(self.engine) if r["device"] == device]
        if not found:
            return None
        out = found[0]
        with self.engine.connect() as conn:
            out["updates"] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(update_status)
                    .where(update_status.c.device == device)
                    .order_by(update_status.c.updated_at.desc())
                )
            ]
        return out

    # MQTT accounts

    def mqtt_account(
        self, *, site: str | None, device: str | None, username: str | None = None
    ) -> dict[str, str]:
        """Create or rotate an account; the password is returned only here, once."""
        username = username or device
        if not username:
            raise FleetError("an MQTT account needs a device id or a username")
        try:
            broker_access.check_account(username, site, device)
        except broker_access.AccessError as exc:
            raise FleetError(str(exc)) from None
        password = secrets.token_urlsafe(18)
        row = dict(
            username=username,
            site=site,
            device=device,
            password_hash=broker_access.hash_password(username, password),
            rabbitmq_hash=broker_access.rabbitmq_hash(password),
            created_at=time.time(),
        )
        with self.engine.begin() as conn:
            conn.execute(mqtt_accounts.delete().where(mqtt_accounts.c.username == username))
            conn.execute(mqtt_accounts.insert().values(**row))
        return {"username": username, "password": password}

    def accounts(self) -> list[broker_access.Account]:
        with self.engine.connect() as conn:
            return [
                broker_access.Account(r.username, r.password_hash, r.site, r.device,
                                      r.rabbitmq_hash)  # fmt: skip
                for r in conn.execute(select(mqtt_accounts).order_by(mqtt_accounts.c.username))
            ]

    def broker_files(self) -> dict[str, str]:
        accts = self.accounts()
        return {
            "passwd": broker_access.render_password_file(accts),
            "acl": broker_access.render_acl_file(accts),
            # the clustered broker's accounts, rules and ingest queue (docs/cluster.md)
            "rabbitmq-definitions.json": json.dumps(
                broker_access.rabbitmq_definitions(accts), indent=1
            ),
        }

    # updates

    def create_update(
        self, *, version: str, site: str, percent: int, files: dict[str, bytes],
        content_of: str | None = None,
    ) -> dict[str, Any]:
        if not files:
            raise FleetError("the bundle has no files; build it with `make firmware`")
        version_key(version)  # a version the devices can compare
        if not 0 <= percent <= 100:
            raise FleetError(f"percent is {percent}; choose 0-100")
        newest = self.newest_version(site)
        if newest is not None and version_key(version) <= version_key(newest):
            raise FleetError(
                f"site {site} already has version {newest}; a device refuses any update not above "
                "its confirmed version, so publish this bundle under a higher version (--version)")
        for path in files:
            if path.startswith("/") or ".." in path.split("/"):
                raise FleetError(f"bundle path {path!r} must be relative, without '..'")
        update_id = "u" + secrets.token_hex(6)
        manifest = {
            "v": 1,
            "update": update_id,
            "version": version,
            "site": site,
            **({"content_of": content_of} if content_of else {}),
            "files": {
                p: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                for p, d in sorted(files.items())
            },
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        signature = sign(self.key, manifest_bytes)
        with self.engine.begin() as conn:
            conn.execute(
                updates.insert().values(
                    id=update_id,
                    version=version,
                    site=site,
                    percent=percent,
                    state="active",
                    manifest=manifest_bytes,
                    signature=signature,
                    created_at=time.time(),
                )
            )
            for p, d in files.items():
                conn.execute(
                    update_files.insert().values(
                        update_id=update_id, path=p, sha256=hashlib.sha256(d).hexdigest(), data=d
                    )
                )
        return {"update": update_id, "version": version, "site": site, "percent": percent}

    def newest_version(self, site: str) -> str | None:
        with self.engine.connect() as conn:
            versions = [v for (v,) in conn.execute(
                select(updates.c.version).where(updates.c.site == site))]
        known = [v for v in versions if VERSION_RE.match(v)]
        return max(known, key=version_key) if known else None

    def rollback(self, update_id: str) -> dict[str, Any]:
        """Take a bad update back fleet-wide: pause it, and re-publish the site's previous
        update (same files, freshly signed) to every device on the bad version. Devices refuse
        to go below their confirmed version, so the old files go out under a version just above
        the site's newest: 2.0.0 -> 2.0.0.1 (2.0.0.1 -> 2.0.0.2), below any later 2.0.1."""
        bad = self._update_row(update_id)
        with self.engine.connect() as conn:
            prev = conn.execute(
                select(updates)
                .where(updates.c.site == bad.site, updates.c.created_at < bad.created_at,
                       updates.c.version != bad.version)
                .order_by(updates.c.created_at.desc())
            ).first()
            if prev is None:
                raise FleetError(
                    f"site {bad.site} has no earlier update to go back to; publish the previous "
                    "bundle with `calmcue device update --bundle DIR --site ...`")
            files = {r.path: bytes(r.data) for r in conn.execute(
                select(update_files).where(update_files.c.update_id == prev.id))}
        self.set_rollout(update_id, state="paused")
        newest = self.newest_version(bad.site) or bad.version
        parts = newest.split(".")
        if len(parts) > 3:
            version = ".".join(parts[:-1] + [str(int(parts[-1]) + 1)])
        else:
            version = ".".join(parts + ["0"] * (3 - len(parts)) + ["1"])
        out = self.create_update(version=version, site=bad.site, percent=100, files=files,
                                 content_of=prev.version)
        return {**out, "content_of": prev.version}

    def set_rollout(
        self, update_id: str, *, percent: int | None = None, state: str | None = None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if percent is not None:
            if not 0 <= percent <= 100:
                raise FleetError(f"percent is {percent}; choose 0-100")
            values["percent"] = percent
        if state is not None:
            if state not in ("active", "paused"):
                raise FleetError("state must be 'active' or 'paused'")
            values["state"] = state
        with self.engine.begin() as conn:
            n = conn.execute(updates.update().where(updates.c.id == update_id).values(**values))
            if n.rowcount == 0:
                raise KeyError(update_id)
        return self.update_summary(update_id)

    def update_site(self, update_id: str) -> str:
        return str(self._update_row(update_id).site)

    def _update_row(self, update_id: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(updates).where(updates.c.id == update_id)).first()
        if row is None:
            raise KeyError(update_id)
        return row

    def update_summary(self, update_id: str) -> dict[str, Any]:
        row = self._update_row(update_id)
        with self.engine.connect() as conn:
            statuses = [
                dict(r._mapping)
                for r in conn.execute(
                    select(update_status)
                    .where(update_status.c.update_id == update_id)
                    .order_by(update_status.c.device)
                )
            ]
        counts: dict[str, int] = {s: 0 for s in UPDATE_STATES}
        for s in statuses:
            counts[s["state"]] = counts.get(s["state"], 0) + 1
        return {
            "update": row.id,
            "version": row.version,
            "site": row.site,
            "percent": row.percent,
            "state": row.state,
            "created_at": row.created_at,
            "counts": counts,
            "devices": statuses,
        }

    def list_updates(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(select(updates.c.id).order_by(updates.c.created_at))]
        return [self.update_summary(i) for i in ids]

    def check(self, *, site: str, device: str, version: str) -> dict[str, Any]:
        """The newest active update for this device's site that it should take, if any."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(updates)
                .where(updates.c.site == site, updates.c.state == "active")
                .order_by(updates.c.created_at.desc())
            ).all()
            for row in rows:
                if not _newer(row.version, version) or not in_rollout(row.id, device,
                                                                       row.percent):
                    continue
                if version and json.loads(row.manifest).get("content_of") == version:
                    continue  # a rollback to what this device still runs
                done = conn.execute(
                    select(update_status.c.state).where(
                        update_status.c.update_id == row.id,
                        update_status.c.device == device,
                        update_status.c.site == site,
                    )
                ).scalar_one_or_none()
                if done in _FINAL:
                    continue
                return {"update": row.id, "version": row.version}
        return {}

    def offer(self, *, site: str, device: str, version: str, nonce: str) -> dict[str, str]:
        """The signed answer to a device's update check: the offer (exact JSON text, naming the
        device, its site and its nonce, and the update or none) and its signature."""
        found = self.check(site=site, device=device, version=version)
        raw = json.dumps({"v": 1, "site": site, "device": device, "nonce": nonce,
                          "update": found.get("update"), "version": found.get("version")},
                         separators=(",", ":"))
        return {"offer": raw, "sig": sign(self.key, raw.encode())}

    def _report_master(self) -> bytes:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        der = self.key.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        return bytes(HKDF(hashes.SHA256(), 32, salt=None,
                          info=b"calmcue ota device report keys v1").derive(der))

    def report_key(self, device: str) -> str:
        """The device's key for signing its update reports (hex), tied to its provisioning:
        re-provisioning (a new `record`) gives it a new one. KeyError: not in the inventory."""
        with self.engine.connect() as conn:
            at = conn.execute(select(inventory.c.provisioned_at)
                              .where(inventory.c.device == device)).scalar_one_or_none()
        if at is None:
            raise KeyError(device)
        msg = f"{device}\n{float(at)!r}".encode()
        return hmac.new(self._report_master(), msg, hashlib.sha256).hexdigest()

    def device_site(self, device: str) -> str | None:
        with self.engine.connect() as conn:
            site = conn.execute(select(inventory.c.site)
                                .where(inventory.c.device == device)).scalar_one_or_none()
        return None if site is None else str(site)

    def manifest(self, update_id: str) -> tuple[bytes, str]:
        row = self._update_row(update_id)
        return bytes(row.manifest), str(row.signature)

    def file(self, update_id: str, path: str) -> bytes:
        with self.engine.connect() as conn:
            data = conn.execute(
                select(update_files.c.data).where(
                    update_files.c.update_id == update_id, update_files.c.path == path
                )
            ).scalar_one_or_none()
        if data is None:
            raise KeyError(path)
        return bytes(data)

    def report(self, *, update_id: str, site: str, device: str, state: str, detail: str) -> None:
        if state not in UPDATE_STATES:
            raise FleetError(f"state must be one of {', '.join(UPDATE_STATES)}")
        self._update_row(update_id)
        with self.engine.begin() as conn:
            now = conn.execute(select(update_status.c.state).where(
                update_status.c.update_id == update_id, update_status.c.site == site,
                update_status.c.device == device)).scalar_one_or_none()
            if now == state:
                return  # the same report again (a retry): nothing changes
            if state not in _NEXT.get(now, ()):
                raise FleetError(f"update {update_id} is {now} on {device}; a report cannot "
                                 f"change that to {state}")
            conn.execute(
                update_status.delete().where(
                    update_status.c.update_id == update_id,
                    update_status.c.site == site,
                    update_status.c.device == device,
                )
            )
            conn.execute(
                update_status.insert().values(
                    update_id=update_id,
                    site=site,
                    device=device,
                    state=state,
                    detail=detail[:500],
                    updated_at=time.time(),
                )
            )
            if state == "confirmed":
                conn.execute(
                    inventory.update()
                    .where(inventory.c.device == device)
                    .values(version=self._update_row(update_id).version)
                )


# ---- HTTP -----------------------------------------------------------------------------------


class InventoryIn(BaseModel):
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    label: str = Field(min_length=1, max_length=64)
    profile: str = Field(min_length=1, max_length=32)
    target: str = Field(pattern=r"^(esp32|pi)$")
    version: str | None = None


class AccountIn(BaseModel):
    # bounded and plain, so no value can break the password/ACL files or the database (500s)
    site: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    device: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    username: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class UpdateIn(BaseModel):
    version: str = Field(min_length=1, max_length=64)
    site: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    percent: int = Field(default=100, ge=0, le=100)
    files: dict[str, str]  # path -> base64 content


class RolloutIn(BaseModel):
    percent: int | None = Field(default=None, ge=0, le=100)
    state: Literal["active", "paused"] | None = None

    @model_validator(mode="after")
    def _something(self) -> RolloutIn:
        if self.percent is None and self.state is None:
            raise ValueError("give percent (0-100), state ('active' or 'paused'), or both")
        return self


class ReportIn(BaseModel):
    site: str = Field(max_length=32)
    device: str = Field(max_length=32)
    update: str = Field(max_length=16)
    state: str = Field(max_length=16)
    detail: str = Field(default="", max_length=2000)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


_REPORT_HELP = ("device reports are signed: X-Calmcue-Device (its id) and X-Calmcue-Signature "
                "(HMAC-SHA256 of the body under its report key, hex; from provisioning)")


def _bad(e: Exception) -> HTTPException:
    return HTTPException(status_code=409 if isinstance(e, FleetError) else 404, detail=str(e))


def it_router(store: FleetStore) -> APIRouter:
    """Endpoints for IT tools; mount behind the companion's IT/admin dependency."""
    r = APIRouter(prefix="/fleet", tags=["fleet"])

    @r.put("/inventory/{device}")
    def put_inventory(device: str, body: InventoryIn) -> dict[str, Any]:
        try:
            return store.record(device=device, **body.model_dump())
        except FleetError as e:
            raise _bad(e) from None

    @r.post("/inventory/{device}/report-key",
            responses={404: {"description": "the device is not in the inventory"}})
    def post_report_key(device: str) -> dict[str, str]:
        """The key the device signs its update reports with; provisioning writes it into
        device.json. It changes when the device is provisioned again."""
        try:
            return {"device": device, "report_key": store.report_key(device)}
        except KeyError:
            raise HTTPException(404, f"device {device} is not in the inventory") from None

    @r.get("/inventory")
    def get_inventory(site: str | None = None) -> list[dict[str, Any]]:
        return store.inventory(site)

    @r.get("/devices/{device}")
    def get_device(device: str) -> dict[str, Any]:
        found = store.device(device)
        if found is None:
            raise HTTPException(404, f"device {device} is not in the inventory nor seen over MQTT")
        return found

    @r.post("/mqtt/accounts")
    def post_account(body: AccountIn) -> dict[str, str]:
        try:
            return store.mqtt_account(site=body.site, device=body.device, username=body.username)
        except FleetError as e:
            raise HTTPException(422, str(e)) from None

    @r.get("/mqtt/files")
    def get_broker_files() -> dict[str, str]:
        return store.broker_files()

    @r.get("/ota/key")
    def get_key() -> dict[str, Any]:
        return public_key_json(store.key)

    @r.post("/updates")
    def post_update(body: UpdateIn) -> dict[str, Any]:
        try:
            files = {p: base64.b64decode(d, validate=True) for p, d in body.files.items()}
            return store.create_update(
                version=body.version, site=body.site, percent=body.percent, files=files
            )
        except (FleetError, ValueError) as e:
            raise HTTPException(422, str(e)) from None

    @r.get("/updates")
    def get_updates() -> list[dict[str, Any]]:
        return store.list_updates()

    @r.get("/updates/{update_id}")
    def get_update(update_id: str) -> dict[str, Any]:
        try:
            return store.update_summary(update_id)
        except KeyError as e:
            raise _bad(e) from None

    @r.patch("/updates/{update_id}")
    def patch_update(update_id: str, body: RolloutIn) -> dict[str, Any]:
        try:
            return store.set_rollout(update_id, percent=body.percent, state=body.state)
        except (FleetError, KeyError) as e:
            raise _bad(e) from None

    @r.post("/updates/{update_id}/rollback")
    def post_rollback(update_id: str) -> dict[str, Any]:
        try:
            return store.rollback(update_id)
        except (FleetError, KeyError) as e:
            raise _bad(e) from None

    return r


def device_router(store: FleetStore) -> APIRouter:
    """What devices call, without a login: offers and manifests are signed with the update key,
    reports with the device's own report key (HTTP or HTTPS)."""
    r = APIRouter(prefix="/fleet/ota", tags=["fleet-devices"])

    @r.get("/check")
    def check(site: str, device: str, version: str = "",
              nonce: str | None = Query(default=None, pattern=r"^[0-9a-f]{16,64}$")
              ) -> dict[str, Any]:
        if nonce is None:
            # firmware from before signed offers (issue 17) sends no nonce; it still verifies
            # the manifest's signature and its version floor, and its first update brings the
            # code that checks offers
            return store.check(site=site, device=device, version=version)
        return store.offer(site=site, device=device, version=version, nonce=nonce)

    @r.get("/updates/{update_id}/manifest")
    def manifest(update_id: str) -> Response:
        try:
            data, _ = store.manifest(update_id)
        except KeyError as e:
            raise _bad(e) from None
        return Response(data, media_type="application/json")

    @r.get("/updates/{update_id}/signature")
    def signature(update_id: str) -> Response:
        try:
            _, sig = store.manifest(update_id)
        except KeyError as e:
            raise _bad(e) from None
        return Response(sig, media_type="text/plain")

    @r.get("/updates/{update_id}/files/{path:path}")
    def file(update_id: str, path: str) -> Response:
        try:
            return Response(store.file(update_id, path), media_type="application/octet-stream")
        except KeyError as e:
            raise _bad(e) from None

    @r.post("/report", openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": ReportIn.model_json_schema()}}}},
            responses={401: {"description": "unsigned, unknown device or bad signature"},
                       403: {"description": "signed by another device, or another site"},
                       404: {"description": "no such update"},
                       409: {"description": "not a forward change of the update's status"},
                       422: {"description": "not a report"}})
    def report(raw: bytes = Depends(_raw_body),
               x_calmcue_device: str = Header(default=""),
               x_calmcue_signature: str = Header(default="")) -> dict[str, str]:
        signer = x_calmcue_device
        try:
            want = store.report_key(signer) if signer else None
        except KeyError:
            want = None
        if want is None:
            raise HTTPException(401, f"unknown or missing device; {_REPORT_HELP}")
        mac = hmac.new(bytes.fromhex(want), raw, hashlib.sha256).hexdigest()
        given = x_calmcue_signature.lower().encode("latin-1", "replace")
        if not hmac.compare_digest(mac.encode(), given):
            raise HTTPException(401, f"bad signature for device {signer}; {_REPORT_HELP}")
        try:
            body = ReportIn.model_validate_json(raw)
        except ValueError as e:
            raise HTTPException(422, f"not a report: {e}") from None
        site = store.device_site(signer)
        if body.device != signer or body.site != site:
            raise HTTPException(403, f"device {signer} (site {site}) can only report for itself")
        try:
            if store.update_site(body.update) != site:
                raise HTTPException(403, f"update {body.update} is not for site {site}")
        except KeyError as e:
            raise _bad(e) from None
        try:
            store.report(
                update_id=body.update,
                site=body.site,
                device=body.device,
                state=body.state,
                detail=body.detail,
            )
        except (FleetError, KeyError) as e:
            raise _bad(e) from None
        return {"ok": "recorded"}

    return r
