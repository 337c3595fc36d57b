"""Per-site and per-device configuration: edited in the API/UI, validated before anything is
sent, published retained on `calmcue/v1/<site>/<device>/config`.

What a manager or IT edits is one document (`ConfigDoc`); a device's effective configuration
is its site's document overlaid with its own. The two device kinds read different shapes, so
the published payload is rendered for the kind the device's telemetry reveals:

- ESP32 headset (telemetry has `fw`): firmware/headset/config.py keys — rev, brightness, haptic, tele_s,
  eu_mode, policy.
- Pi counter agent (telemetry has `agent`): firmware/pi/config.py LIVE_KEYS — policy,
  outputs.brightness/haptic_strength, mqtt.telemetry_s.

Cue-policy thresholds are checked with the same validator the devices run
(firmware/core/cue_settings.py), so a config the companion accepts is one the devices accept. EU
mode goes inside `policy` (the policy is what infers, or not, about the staff voice).
Quiet hours are enforced by the companion: no manager alert is opened during them.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, Engine, select, update

from companion.db import devices, sites
from firmware.core import cue_settings

_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


class ConfigError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = Field(description="HH:MM, local time of the companion")
    end: str = Field(description="HH:MM; may be earlier than start (over midnight)")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.fullmatch(v):
            raise ValueError(f"{v!r} is not a time like 22:00 (24-hour HH:MM)")
        return v

    def contains(self, when: datetime) -> bool:
        now = when.strftime("%H:%M")
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


class ConfigDoc(BaseModel):
    """Every field optional: a site sets what it wants, a device overrides what it must."""

    model_config = ConfigDict(extra="forbid")
    policy: dict[str, Any] | None = Field(
        default=None, description="cue-policy thresholds (firmware/core/cue_settings.py keys)"
    )
    eu_mode: bool | None = None
    brightness: float | None = Field(default=None, ge=0, le=1, description="LED, 0 off .. 1 full")
    haptic: float | None = Field(default=None, ge=0, le=1, description="vibration, 0 .. 1")
    tele_s: int | None = Field(default=None, ge=10, le=3600, description="telemetry period, s")
    quiet_hours: QuietHours | None = None


def validate(doc: dict[str, Any]) -> ConfigDoc:
    """Parse and check a document; raises ConfigError with fix-it messages."""
    from pydantic import ValidationError

    try:
        cfg = ConfigDoc.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(
            [f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()]
        ) from None
    if cfg.policy is not None:
        if "eu_mode" in cfg.policy:
            raise ConfigError(["set eu_mode at the top level, not inside policy"])
        _, errors = cue_settings.validate_settings(cfg.policy)
        if errors:
            raise ConfigError([f"policy: {e}" for e in errors])
    return cfg


def merge(site_doc: ConfigDoc | None, device_doc: ConfigDoc | None) -> ConfigDoc:
    """The device's effective document: its own values over its site's (policy key by key)."""
    base = site_doc.model_dump(exclude_none=True) if site_doc else {}
    over = device_doc.model_dump(exclude_none=True) if device_doc else {}
    policy = {**base.get("policy", {}), **over.get("policy", {})}
    out = {**base, **over}
    if policy:
        out["policy"] = policy
    cfg = validate(out)  # cross-setting rules must hold for the combination too
    return cfg


def render(cfg: ConfigDoc, kind: str, rev: int) -> dict[str, Any]:
    """The payload a device of `kind` ("esp32", "pi") applies; only keys that are set."""
    policy = dict(cfg.policy or {})
    if cfg.eu_mode is not None:
        policy["eu_mode"] = cfg.eu_mode
    if kind == "pi":
        out: dict[str, Any] = {}
        if policy:
            out["policy"] = policy
        outputs = {}
        if cfg.brightness is not None:
            outputs["brightness"] = cfg.brightness
        if cfg.haptic is not None:
            outputs["haptic_strength"] = cfg.haptic
        if outputs:
            out["outputs"] = outputs
        if cfg.tele_s is not None:
            out["mqtt"] = {"telemetry_s": float(cfg.tele_s)}
        return out
    out = {"rev": rev}
    for key in ("brightness", "haptic", "tele_s", "eu_mode"):
        v = getattr(cfg, key)
        if v is not None:
            out[key] = v
    if policy:
        out["policy"] = policy
    return out


def payload_rev(payload: dict[str, Any]) -> int:
    """The revision of a rendered headset payload, made from its content (1 .. 2**28): the
    device echoes it in its telemetry (`config_rev`) once it runs exactly this configuration,
    so the companion sees it confirmed without storing what it sent, and every replica
    computes the same number. 0 is the device's own defaults."""
    body = {k: v for k, v in payload.items() if k != "rev"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return int(digest.hexdigest()[:7], 16) + 1


def device_kind(tele_json: str | None) -> str:
    try:
        tele = json.loads(tele_json or "{}")
    except ValueError:
        return "esp32"
    return "pi" if isinstance(tele, dict) and "agent" in tele else "esp32"


def config_topic(site: str, device: str) -> str:
    return f"calmcue/v1/{site}/{device}/config"


def _doc(text: str | None) -> ConfigDoc | None:
    return ConfigDoc.model_validate_json(text) if text else None


def effective(engine: Engine, site: str, device: str) -> dict[str, Any]:
    with engine.connect() as conn:
        s = conn.execute(select(sites.c.config).where(sites.c.site == site)).scalar()
        d = conn.execute(
            select(devices.c.config, devices.c.tele).where(
                devices.c.site == site, devices.c.device == device
            )
        ).first()
    if d is None:
        raise ConfigError([f"no device {site}/{device} in the registry"])
    cfg = merge(_doc(s), _doc(d.config))
    kind = device_kind(d.tele)
    return {
        "site": site,
        "device": device,
        "kind": kind,
        "site_config": json.loads(s) if s else {},
        "device_config": json.loads(d.config) if d.config else {},
        "effective": cfg.model_dump(exclude_none=True),
        "payload": render(cfg, kind, 0),
    }


def set_site(engine: Engine, site: str, doc: dict[str, Any]) -> ConfigDoc:
    cfg = validate(doc)
    from companion.store import upsert_site

    # the site's devices must accept the combination before anything is stored
    with engine.connect() as conn:
        rows = conn.execute(
            select(devices.c.device, devices.c.config).where(devices.c.site == site)
        ).all()
    for r in rows:
        try:
            merge(cfg, _doc(r.config))
        except ConfigError as exc:
            raise ConfigError(
                [f"with {r.device}'s own settings: {p}" for p in exc.problems]
            ) from None
    upsert_site(engine, site=site, config=cfg.model_dump_json(exclude_none=True))
    return cfg


def set_device(engine: Engine, site: str, device: str, doc: dict[str, Any]) -> ConfigDoc:
    cfg = validate(doc)
    with engine.begin() as conn:
        s = conn.execute(select(sites.c.config).where(sites.c.site == site)).scalar()
        merge(_doc(s), cfg)
        n = conn.execute(
            update(devices)
            .where(devices.c.site == site, devices.c.device == device)
            .values(config=cfg.model_dump_json(exclude_none=True))
        ).rowcount
    if n == 0:
        raise ConfigError(
            [f"no device {site}/{device} in the registry; it registers on first contact"]
        )
    return cfg


def publish_site(engine: Engine, site: str, publish: Any) -> list[str]:
    """Publish (retained) every device of `site`'s effective config; returns the topics."""
    with engine.connect() as conn:
        names = [
            r.device for r in conn.execute(select(devices.c.device).where(devices.c.site == site))
        ]
    return [publish_device(engine, site, d, publish) for d in names]


def publish_device(engine: Engine, site: str, device: str, publish: Any) -> str:
    info = effective(engine, site, device)
    payload = info["payload"]
    if "rev" in payload:
        payload["rev"] = payload_rev(payload)
    topic = config_topic(site, device)
    publish(topic, json.dumps(payload, separators=(",", ":")), retain=True)
    return topic


def sites_in_quiet_hours(
    conn: Connection, site_ids: set[str], when: datetime | None = None
) -> set[str]:
    """Which of `site_ids` are in their quiet hours now: one query, in the caller's transaction
    (the ingest's, for a batch's alert-level cues)."""
    if not site_ids:
        return set()
    now = when or datetime.now()
    out = set()
    for site, text in conn.execute(
        select(sites.c.site, sites.c.config).where(sites.c.site.in_(sorted(site_ids)))
    ):
        doc = _doc(text)
        if doc and doc.quiet_hours and doc.quiet_hours.contains(now):
            out.add(site)
    return out
