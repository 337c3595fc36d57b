"""One record per device, for the IT screens, the dashboard and `calmcue device list` alike.

Three tables know about devices, filled by different paths: the fleet inventory
(`fleet_inventory`, written by provisioning: factory label, profile, target, version), the
registry (`devices`, written by the MQTT ingest when a device first reports: status, last seen)
and the last telemetry (`devices.tele`: battery, signal, queue, heap, config revision). A device
seen over MQTT but never provisioned is only in the registry; a provisioned device that never
reported is only in the inventory. `device_records` joins them on (site, device) -- the device
id is the MQTT topic's `<device>` and the inventory key (docs/fleet.md) -- so every reader sees
the same list, and flags what IT should look at with the thresholds below (docs/fleet.md, "Fleet
screens").
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine, inspect, select

# What the fleet screen flags (docs/fleet.md, "Fleet screens"): a device at or past one of these
# needs a look. The silent threshold is the companion's own `silent_device_s` (300 s by default),
# the age at which it also raises a silent-device alert.
BATTERY_LOW_PCT = 15  # a LiPo at 15 % has well under an hour of a shift left
SIGNAL_WEAK_DBM = -80  # Wi-Fi at -80 dBm and below drops packets; MQTT reconnects follow
QUEUE_HIGH = 10  # events waiting on the device: it sends each at once when its link is up
HEAP_LOW_KB = 20  # ESP32 free heap: a 3 KB TLS buffer failed at 25 KB free (docs/firmware.md)

_INVENTORY_KEYS = ("name", "label", "profile", "target", "version", "provisioned_at")


def _tele(text: str | None) -> dict[str, Any]:
    try:
        t = json.loads(text or "{}")
    except ValueError:
        return {}
    return t if isinstance(t, dict) else {}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def health_of(tele: dict[str, Any]) -> dict[str, Any]:
    """The telemetry fields the screens show, in one unit each (kB for memory, dBm, %)."""
    heap = _num(tele.get("heap_free"))
    return {
        "kind": "pi" if "agent" in tele else ("esp32" if "fw" in tele else None),
        "battery_pct": _num(tele.get("batt_pct")),
        "rssi_dbm": _num(tele.get("rssi")),
        "queue": _num(tele.get("queue")),
        "heap_free_kb": round(heap / 1024, 1) if heap is not None else None,  # ESP32: bytes
        "mem_kb": _num(tele.get("mem_kb")),  # Pi agent: resident memory, kB
        "cpu_pct": _num(tele.get("cpu_pct")),
        "mic_ok": tele.get("mic_ok"),
        "muted": tele.get("muted"),
        "model_hash": tele.get("model_hash"),
        "config_rev": tele.get("config_rev"),
        "config_error": tele.get("config_error"),
        "uptime_s": _num(tele.get("up_s", tele.get("uptime_s"))),
    }


def flags_of(rec: dict[str, Any], now: float, silent_after_s: float) -> list[dict[str, str]]:
    """What needs a look, each as {key, text}; thresholds at the top of this module."""
    out: list[dict[str, str]] = []

    def flag(key: str, text: str) -> None:
        out.append({"key": key, "text": text})

    if not rec["in_registry"]:
        flag("never_seen", "provisioned, never reported")
    elif rec["status"] == "offline":
        flag("offline", "offline")
    if rec["last_seen"] is not None and now - rec["last_seen"] >= silent_after_s:
        flag("last_seen", f"silent for {int((now - rec['last_seen']) // 60)} min")
    b = rec["battery_pct"]
    if b is not None and b <= BATTERY_LOW_PCT:
        flag("battery", f"battery {b:g} % (<= {BATTERY_LOW_PCT} %)")
    s = rec["rssi_dbm"]
    if s is not None and s <= SIGNAL_WEAK_DBM:
        flag("signal", f"signal {s:g} dBm (<= {SIGNAL_WEAK_DBM} dBm)")
    q = rec["queue"]
    if q is not None and q >= QUEUE_HIGH:
        flag("queue", f"{q:g} events queued (>= {QUEUE_HIGH})")
    h = rec["heap_free_kb"]
    if h is not None and h < HEAP_LOW_KB:
        flag("heap", f"free heap {h:g} kB (< {HEAP_LOW_KB} kB)")
    if rec["mic_ok"] is False:
        flag("mic", "microphone not working")
    if rec["config_error"]:
        flag("config", f"config: {rec['config_error']}")
    if rec.get("config_state") == "refused":
        flag("config_refused", f"refused its config: {rec.get('config_detail') or 'no reason'}")
    return out


def _registry_rows(engine: Engine) -> list[dict[str, Any]]:
    from companion.db import devices

    if not inspect(engine).has_table(devices.name):  # a bare fleet database at a bench
        return []
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(devices))]


def _inventory_rows(engine: Engine) -> list[dict[str, Any]]:
    from companion.fleet_tables import inventory

    if not inspect(engine).has_table(inventory.name):
        return []
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(inventory))]


def expected_revs(engine: Engine) -> dict[tuple[str, str], int | None]:
    """(site, device) -> the config revision a headset must report to run the configuration the
    companion publishes for it (None: nothing published, or a Pi, which reports no revision)."""
    from companion import device_config
    from companion.db import devices, sites

    if not inspect(engine).has_table(sites.name):
        return {}
    with engine.connect() as conn:
        site_docs = {r.site: r.config for r in conn.execute(select(sites.c.site, sites.c.config))}
        rows = conn.execute(select(devices.c.site, devices.c.device, devices.c.config,
                                   devices.c.tele)).all()
    out: dict[tuple[str, str], int | None] = {}
    for r in rows:
        if not site_docs.get(r.site) and not r.config:
            out[(r.site, r.device)] = None
            continue
        try:
            cfg = device_config.merge(device_config._doc(site_docs.get(r.site)),
                                      device_config._doc(r.config))
        except (device_config.ConfigError, ValueError):
            out[(r.site, r.device)] = None
            continue
        kind = device_config.device_kind(r.tele)
        payload = device_config.render(cfg, kind, 0)
        out[(r.site, r.device)] = device_config.payload_rev(payload) if kind == "esp32" else None
    return out


RESULT_TOPIC_FILTER = "calmcue/v1/+/+/state/result"


class ConfigResults:
    """What devices answered to their config (`state/result` with `cmd: "config"`), and when the
    companion last sent each device one. Kept in this companion's memory: a Pi agent reports no
    revision, so its answer after the last send is how it confirms; a headset's refusal turns
    "waiting" into "refused" with its reason. With several replicas each knows the answers it
    received (a shared subscription gives each message to one), so a Pi's state may show
    "not reported" on another replica; the headset's revision check does not depend on this."""

    def __init__(self) -> None:
        self._sent: dict[tuple[str, str], float] = {}
        self._answers: dict[tuple[str, str], dict[str, Any]] = {}

    def sent(self, site: str, device: str) -> None:
        self._sent[(site, device)] = time.time()

    def sent_topics(self, topics: list[str]) -> None:
        for t in topics:  # calmcue/v1/<site>/<device>/config
            parts = t.split("/")
            self.sent(parts[2], parts[3])

    def on_mqtt(self, topic: str, payload: bytes) -> str | None:
        parts = topic.split("/")
        try:
            body = json.loads(payload)
        except ValueError:
            return "state/result is not JSON"
        if not isinstance(body, dict) or len(parts) != 6:
            return "state/result is not a JSON object"
        if body.get("cmd") == "config":
            errors = body.get("errors")
            detail = body.get("detail") or ("; ".join(map(str, errors)) if errors else "")
            self._answers[(parts[2], parts[3])] = {
                "ok": bool(body.get("ok")), "detail": str(detail)[:300], "at": time.time()}
        return None

    def state(self, key: tuple[str, str], by_rev: str, kind: str | None) -> tuple[str, str]:
        """(state, detail): the revision check's state, refined by the device's answer."""
        answer, sent = self._answers.get(key), self._sent.get(key, 0.0)
        fresh = answer is not None and answer["at"] >= sent
        if kind == "pi":
            if fresh and answer is not None:
                return ("confirmed" if answer["ok"] else "refused"), answer["detail"]
            return ("pending" if sent else "unknown"), ""
        if by_rev == "pending" and fresh and answer is not None and not answer["ok"]:
            return "refused", answer["detail"]
        return by_rev, ""


def config_state(expected: int | None, reported: Any, kind: str | None) -> str:
    """From the revisions alone: confirmed | pending | defaults | unknown (a Pi reports no
    revision; ConfigResults.state refines it with the device's answer)."""
    if kind == "pi":
        return "unknown"
    if expected is None:
        return "defaults" if reported in (None, 0) else "unknown"
    return "confirmed" if reported == expected else "pending"


def device_records(
    engine: Engine,
    *,
    sites: frozenset[str] | None = None,
    site: str | None = None,
    silent_after_s: float = 300.0,
    now: float | None = None,
    results: ConfigResults | None = None,
) -> list[dict[str, Any]]:
    """Every device the companion knows of, once: inventory and registry joined on (site,
    device), telemetry read into one unit per figure, flags from the thresholds above. Sorted
    by site, then name (the inventory's) or device id. `sites`: what the caller may see."""
    now = time.time() if now is None else now
    inv = {(r["site"], r["device"]): r for r in _inventory_rows(engine)}
    reg = {(r["site"], r["device"]): r for r in _registry_rows(engine)}
    revs = expected_revs(engine) if reg else {}
    out = []
    for key in set(inv) | set(reg):
        if (sites is not None and key[0] not in sites) or (site and key[0] != site):
            continue
        i, g = inv.get(key), reg.get(key)
        tele = _tele(g["tele"]) if g else {}
        h = health_of(tele)
        rec: dict[str, Any] = {"site": key[0], "device": key[1]}
        rec.update({k: (i or {}).get(k) for k in _INVENTORY_KEYS})
        rec.update({
            "in_inventory": i is not None,
            "in_registry": g is not None,
            "status": g["status"] if g else "never seen",  # online/offline/unknown (LWT)
            "first_seen": g["first_seen"] if g else None,
            "last_seen": g["last_seen"] if g else None,
            "status_at": g["status_at"] if g else None,
            "tele_at": g["tele_at"] if g else None,
            "tele": g["tele"] if g else None,
            "config": g["config"] if g else None,
            "silent": bool(g["silent"]) if g else False,
            "firmware": (g["firmware"] if g else None) or tele.get("agent") or None,
            "model": g["model"] if g else None,
            # what the companion's registry said before the lists were one (kept for callers)
            "health": {k: g[k] for k in ("site", "device", "status", "last_seen", "firmware",
                                        "model", "silent")}
            if g else None,
            **h,
        })
        if rec["kind"] is None and i is not None:
            rec["kind"] = i["target"]
        rec["config_expected_rev"] = revs.get(key)
        rec["config_state"] = config_state(rec["config_expected_rev"], h["config_rev"],
                                           rec["kind"])
        rec["config_detail"] = ""
        if results is not None:
            rec["config_state"], rec["config_detail"] = results.state(
                key, rec["config_state"], rec["kind"])
        rec["flags"] = flags_of(rec, now, silent_after_s)
        out.append(rec)
    out.sort(key=lambda r: (r["site"], r["name"] or r["device"], r["device"]))
    return out


THRESHOLDS = {
    "battery_low_pct": BATTERY_LOW_PCT,
    "signal_weak_dbm": SIGNAL_WEAK_DBM,
    "queue_high": QUEUE_HIGH,
    "heap_low_kb": HEAP_LOW_KB,
}
