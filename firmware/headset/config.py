# Device configuration: validated, applied live, persisted atomically, last good copy kept.
#
# Files on flash (see docs/firmware.md):
#   config.json   the configuration in force, written as config.tmp then renamed over
#   config.good   a copy of the last configuration that loaded and validated
# A corrupt or half-written config.json (power cut under an older writer, flash damage, a bad
# provisioning copy) never stops the device: it boots with config.good (or the defaults) and
# reports why in telemetry. The companion's retained config then heals config.json.
#
# Plain values in and out: the headset's Device (firmware/headset/app.py) applies what these
# functions return; the companion's config editor checks with the same problems().
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

# The numbers' limits; a key's kind is its default's type (bool, dict, int, or a float).
_LIMITS = {
    "rev": (0, 2147483647),
    "brightness": (0, 1),
    "haptic": (0, 1),
    "tele_s": (10, 3600),
    "long_press_ms": (500, 5000),
}

CURRENT = "config.json"
GOOD = "config.good"


def problems(cfg, policy_check=None):
    """What is wrong with a configuration dict (a partial one is fine), as fix-it messages."""
    if not isinstance(cfg, dict):
        return ['config must be a JSON object, e.g. {"brightness": 0.3}']
    out = []
    unknown = []
    for key in cfg:
        if key not in DEFAULTS:
            unknown.append(key)
            continue
        d = DEFAULTS[key]
        v = cfg[key]
        if isinstance(d, bool):
            if not isinstance(v, bool):
                out.append("%s must be true or false" % key)
        elif isinstance(d, dict):
            if not isinstance(v, dict):
                out.append("%s must be a JSON object" % key)
            elif policy_check:
                # Checked as the device applies it: a top-level eu_mode switches EU mode on
                # for the policy too (firmware/core/pipeline.py policy_settings), so its rules count.
                out.extend(policy_check(dict(v, eu_mode=True) if cfg.get("eu_mode") is True else v))
        else:
            lo, hi = _LIMITS[key]
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or (isinstance(d, int) and not isinstance(v, int))
            ):
                kind = "an integer" if isinstance(d, int) else "a number"
                out.append("%s must be %s between %s and %s" % (key, kind, lo, hi))
            elif not lo <= v <= hi:
                out.append("%s is %s; choose a value between %s and %s" % (key, v, lo, hi))
    if unknown:
        out.insert(0, _unknown(unknown))
    return out


def _unknown(keys):
    # One message for all unknown keys (a payload of many would make a reply of KBs). A function
    # of its own: each function's code is one block of the heap, and on the headset this module
    # is loaded again and again into a heap of small holes.
    n = len(keys)
    return "%s %s; known keys: %s" % (
        ", ".join(keys[:5]) + (" and %d more" % (n - 5) if n > 5 else ""),
        "is not a config key" if n == 1 else "are not config keys",
        ", ".join(sorted(DEFAULTS)),
    )


def merged(cfg):
    out = {}
    for k in DEFAULTS:
        out[k] = cfg[k] if k in cfg else DEFAULTS[k]
    return out


def _write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def load(root="", policy_check=None):
    """Returns (config, status): status None when config.json was good, else what went wrong and
    what the device fell back to. Never raises for bad files."""
    why = []  # for config.json, then config.good: "missing" or what is wrong with it
    for name in (CURRENT, GOOD):
        try:
            with open(root + name) as f:
                text = f.read()
        except OSError:
            why.append("missing")
            continue
        try:
            cfg = json.loads(text)
        except ValueError:
            why.append("not valid JSON (%d bytes, half-written?)" % len(text))
            continue
        errs = problems(cfg, policy_check)
        if errs:
            why.append(errs[0])
            continue
        cfg = merged(cfg)
        if name == GOOD:
            if why[0] == "missing":
                return cfg, None
            return cfg, "config.json %s; using last good config (rev %d)" % (why[0], cfg["rev"])
        text = json.dumps(cfg)
        try:
            with open(root + GOOD) as f:
                same = f.read() == text
        except OSError:
            same = False
        if not same:
            _write(root + GOOD, text)
        return cfg, None
    if why[0] == "missing":
        return merged({}), None
    return merged({}), "config.json %s; config.good %s; using defaults" % (why[0], why[1])


def save(cfg, root=""):
    """Persist a validated, merged config: config.json first, then the last-good copy."""
    text = json.dumps(cfg)
    _write(root + CURRENT, text)
    _write(root + GOOD, text)


def parse(payload, policy_check=None):
    """(config dict, problems) of a config message; `policy_check(settings)` names the problems
    of its cue-policy settings, after the config's own."""
    try:
        new = json.loads(payload)
    except ValueError:
        return None, ["config is not valid JSON"]
    errs = problems(new)
    p = new.get("policy") if isinstance(new, dict) else None
    if policy_check and isinstance(p, dict) and p:  # a top-level eu_mode counts for the policy
        errs += policy_check(dict(p, eu_mode=True) if new.get("eu_mode") is True else p)
    return new, errs
