# Device configuration: validated, applied live, persisted atomically, last good copy kept.
#
# Files on flash (see docs/firmware.md):
#   config.json   the configuration in force, written as config.tmp then renamed over
#   config.good   a copy of the last configuration that loaded and validated
# A corrupt or half-written config.json (power cut under an older writer, flash damage, a bad
# provisioning copy) never stops the device: it boots with config.good (or the defaults) and
# reports why in telemetry. The companion's retained config then heals config.json.
import json
import os

DEFAULTS = {
    "rev": 0,  # revision number set by the companion; echoed in telemetry
    "brightness": 0.3,  # LED brightness 0..1
    "haptic": 0.7,  # vibration strength 0..1
    "tele_s": 60,  # telemetry period, seconds
    "long_press_ms": 1500,  # button: held this long = mute/unmute, shorter = acknowledge
    "eu_mode": False,  # EU AI Act mode: nothing inferred about the staff voice beyond pace/level
    "muted": False,  # start muted (the button toggles it at run time)
    "policy": {},  # cue policy settings, checked by the policy module
}

# key -> (kind, low, high)
_SPEC = {
    "rev": ("int", 0, 2147483647),
    "brightness": ("num", 0, 1),
    "haptic": ("num", 0, 1),
    "tele_s": ("int", 10, 3600),
    "long_press_ms": ("int", 500, 5000),
    "eu_mode": ("bool", 0, 0),
    "muted": ("bool", 0, 0),
    "policy": ("dict", 0, 0),
}

CURRENT = "config.json"
GOOD = "config.good"


def problems(cfg, policy_check=None):
    """What is wrong with a configuration dict (a partial one is fine), as fix-it messages."""
    if not isinstance(cfg, dict):
        return ["config must be a JSON object, e.g. {\"brightness\": 0.3}"]
    out = []
    for key in cfg:
        if key not in _SPEC:
            out.append("%s is not a config key; known keys: %s" % (key, ", ".join(sorted(_SPEC))))
            continue
        kind, lo, hi = _SPEC[key]
        v = cfg[key]
        if kind == "bool":
            if not isinstance(v, bool):
                out.append("%s must be true or false" % key)
        elif kind == "dict":
            if not isinstance(v, dict):
                out.append("%s must be a JSON object" % key)
            elif policy_check:
                out.extend(policy_check(v))
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or (
            kind == "int" and not isinstance(v, int)
        ):
            out.append("%s must be %s between %s and %s" % (key, "an integer" if kind == "int" else "a number", lo, hi))
        elif not lo <= v <= hi:
            out.append("%s is %s; choose a value between %s and %s" % (key, v, lo, hi))
    return out


def merged(cfg):
    out = {}
    for k in DEFAULTS:
        out[k] = cfg[k] if k in cfg else DEFAULTS[k]
    return out


def _read(path, policy_check):
    """(config, None) or (None, reason)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None, "missing"
    try:
        cfg = json.loads(text)
    except ValueError:
        return None, "not valid JSON (%d bytes, half-written?)" % len(text)
    errs = problems(cfg, policy_check)
    if errs:
        return None, errs[0]
    return merged(cfg), None


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def load(root="", policy_check=None):
    """Returns (config, status): status None when config.json was good, else what went wrong and
    what the device fell back to. Never raises for bad files."""
    cfg, why = _read(root + CURRENT, policy_check)
    if cfg is not None:
        try:
            with open(root + GOOD) as f:
                same = f.read() == json.dumps(cfg)
        except OSError:
            same = False
        if not same:
            _write(root + GOOD, json.dumps(cfg))
        return cfg, None
    if why == "missing":
        good, _ = _read(root + GOOD, policy_check)
        return (good or merged({})), None
    good, why_good = _read(root + GOOD, policy_check)
    if good is not None:
        return good, "config.json %s; using last good config (rev %d)" % (why, good["rev"])
    return merged({}), "config.json %s; config.good %s; using defaults" % (why, why_good)


def save(cfg, root=""):
    """Persist a validated, merged config: config.json first, then the last-good copy."""
    text = json.dumps(cfg)
    _write(root + CURRENT, text)
    _write(root + GOOD, text)
