"""The rows of the configuration form: every setting IT may change, with its default, limits
and unit, read from the tables that define them.

`policy_rows()` is the only place that reads firmware/core/cue_settings.py's table, so a change of
how that module exposes its rows touches this one function. `device_rows()` are the top-level
device settings of companion/device_config.py's `ConfigDoc` (brightness, haptic, telemetry
period, EU mode), with the limits the device checks (firmware/headset/config.py).
"""

from __future__ import annotations

from typing import Any

from firmware.core import cue_settings


def policy_rows() -> list[dict[str, Any]]:
    """Cue-policy settings as rows: key, kind (num/int/choice/bool), default, lo, hi, options,
    unit. Adapter over cue_settings.rows(), whose rows are (name, type, default, min, max, unit,
    help): type num, int or duration (seconds: a number here), bool, or a choice's options."""
    out = []
    for key, kind, default, lo, hi, unit, _help in cue_settings.rows():
        row: dict[str, Any] = {"key": key, "group": "policy", "default": default, "unit": unit,
                               "lo": None, "hi": None, "options": None}
        if isinstance(kind, tuple):
            row["kind"], row["options"] = "choice", list(kind)
        elif kind == "bool":
            row["kind"] = "bool"
        else:
            row["kind"] = "int" if kind == "int" else "num"
            row["lo"], row["hi"] = lo, hi
        out.append(row)
    return out


def device_rows() -> list[dict[str, Any]]:
    """The device-level settings (ConfigDoc's own fields), defaults from firmware/headset/config.py."""
    from firmware.headset import config as device_config  # the headset's own defaults and limits

    units = {"brightness": "0 off .. 1 full", "haptic": "0 off .. 1 full", "tele_s": "s"}
    out = []
    for key in ("brightness", "haptic", "tele_s", "eu_mode"):
        default = device_config.DEFAULTS[key]
        lo, hi = device_config._LIMITS.get(key, (None, None))
        kind = "bool" if isinstance(default, bool) else "int" if isinstance(default, int) else "num"
        out.append({"key": key, "group": "device", "kind": kind, "default": default, "lo": lo,
                    "hi": hi, "unit": units.get(key, ""), "options": None})
    return out


def rows() -> list[dict[str, Any]]:
    """Device settings, then the policy's; eu_mode once, at the top level, where the companion
    takes it (device_config puts it into the policy for the devices)."""
    top = device_rows()
    names = {r["key"] for r in top}
    return top + [r for r in policy_rows() if r["key"] not in names]


def form(info: dict[str, Any], confirmed: str) -> list[dict[str, Any]]:
    """The rows for one device's form: each with the site's value, the device's own value, the
    effective value (what the companion publishes, else the default) and whether the device
    confirmed running it. `info` is device_config.effective(); `confirmed` its config state."""
    out = []
    for r in rows():
        def pick(doc: dict[str, Any], key: str = r["key"], group: str = r["group"]) -> Any:
            return (doc.get("policy") or {}).get(key) if group == "policy" else doc.get(key)

        eff = pick(info["effective"])
        out.append({
            **r,
            "site_value": pick(info["site_config"]),
            "device_value": pick(info["device_config"]),
            "effective": r["default"] if eff is None else eff,
            "set": eff is not None,
            "confirmed": confirmed,
        })
    return out
