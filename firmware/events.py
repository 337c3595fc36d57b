# Event schema v1: the only thing that leaves a device. Runs on MicroPython and CPython.
#
# The companion's pydantic model (companion/schema.py) validates the same JSON; the shared
# vectors in tests/data/event_vectors.json keep the two in step.
#
# Privacy: the schema is closed. Unknown keys are refused, so audio, transcripts, feature
# vectors or staff identity cannot ride along by accident.
import json

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SCHEMA_VERSION = const(1)
MAX_BYTES = const(512)
TOPIC_ROOT = "calmcue/v1"

EVENT_TYPES = ("cue", "conversation", "button")
CUES = ("slow_down", "empathize", "call_manager", "settled")
PHASES = ("start", "end")
ACTIONS = ("ack", "mute", "unmute")

# key -> (kind, required). kind: "int", "num", "str", "id", "hex", or a tuple of allowed strings.
_COMMON = {
    "v": ("int", True),
    "type": (EVENT_TYPES, True),
    "site": ("id", True),
    "device": ("id", True),
    "boot": ("int", True),
    "seq": ("int", True),
    "up_ms": ("int", True),
    "ts": ("num", False),
}
_BY_TYPE = {
    "cue": {
        "conv": ("hex", True),
        "cue": (CUES, True),
        "level": ("int", True),
        "score": ("num", True),
        "conv_s": ("num", True),
        "stress_s": ("num", False),
        "ttd_s": ("num", False),
        "reason": ("id", False),
    },
    "conversation": {
        "conv": ("hex", True),
        "phase": (PHASES, True),
        "conv_s": ("num", True),
        "cues": ("int", False),
        "peak": ("num", False),
    },
    "button": {
        "action": (ACTIONS, True),
    },
}

_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
_HEX_CHARS = "0123456789abcdef"


class EventError(ValueError):
    pass


def _check_chars(s, allowed, lo, hi):
    if not (lo <= len(s) <= hi):
        return False
    for c in s:
        if c not in allowed:
            return False
    return True


def _check(key, kind, value):
    if isinstance(kind, tuple):
        if value not in kind:
            return "%s must be one of %s" % (key, ", ".join(kind))
        return None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "%s must be a non-negative integer" % key
        return None
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "%s must be a number" % key
        if value != value or value < 0 or value > 1e10:
            return "%s must be a finite non-negative number" % key
        return None
    if not isinstance(value, str):
        return "%s must be a string" % key
    if kind == "id":
        if not _check_chars(value, _ID_CHARS, 1, 32) or value[0] in "_-":
            return "%s must be 1-32 chars of a-z, 0-9, '_' or '-', starting with a letter or digit" % key
        return None
    if kind == "hex":
        if not _check_chars(value, _HEX_CHARS, 8, 16):
            return "%s must be 8-16 lowercase hex digits" % key
        return None
    return "%s has an unknown kind" % key


def problems(event):
    """Return a list of what is wrong with `event` (a dict); empty when it is valid."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    out = []
    etype = event.get("type")
    # The two tables are walked in turn, not merged: a dict built per event would be garbage
    # (and a growing block to find) for every event on a device with a small heap.
    extra = _BY_TYPE[etype] if etype in _BY_TYPE else {}
    for spec in (_COMMON, extra):
        for key in spec:
            kind, required = spec[key]
            if key not in event or event[key] is None:
                if required:
                    out.append("%s is required" % key)
                continue
            msg = _check(key, kind, event[key])
            if msg:
                out.append(msg)
    for key in event:
        if key not in _COMMON and key not in extra:
            out.append("%s is not an allowed field" % key)
    v = event.get("v")
    if isinstance(v, int) and v != SCHEMA_VERSION:
        out.append("v must be %d (this is schema version %d)" % (SCHEMA_VERSION, v))
    if etype == "cue":
        level = event.get("level")
        if isinstance(level, int) and not 1 <= level <= 3:
            out.append("level must be 1, 2 or 3")
        score = event.get("score")
        if isinstance(score, (int, float)) and score > 1:
            out.append("score must be between 0 and 1")
    return out


def encode(event):
    """Validate and serialise an event dict to compact JSON bytes. Raises EventError."""
    errs = problems(event)
    if errs:
        raise EventError("; ".join(errs))
    data = json.dumps(event).encode()
    if len(data) > MAX_BYTES:
        raise EventError("event is %d bytes, over the %d byte limit" % (len(data), MAX_BYTES))
    return data


def decode(data):
    """Parse and validate JSON bytes from the wire. Raises EventError with the reason."""
    if len(data) > MAX_BYTES:
        raise EventError("payload is %d bytes, over the %d byte limit" % (len(data), MAX_BYTES))
    try:
        event = json.loads(data)
    except ValueError:
        raise EventError("payload is not valid JSON")
    errs = problems(event)
    if errs:
        raise EventError("; ".join(errs))
    return event


def topic(site, device, leaf):
    """`calmcue/v1/<site>/<device>/<leaf>`, e.g. leaf 'evt/cue', 'status', 'tele'."""
    return "%s/%s/%s/%s" % (TOPIC_ROOT, site, device, leaf)


def event_topic(event):
    return topic(event["site"], event["device"], "evt/" + event["type"])


class Stamper:
    """Adds the common fields to every event a device sends: schema version, site, device, the
    boot counter and a sequence number that counts up from 0 each boot (gaps and reboots show at
    the companion), milliseconds since boot and, once the clock is known, Unix time."""

    def __init__(self, site, device, boot, seq=0):
        self.site = site
        self.device = device
        self.boot = boot
        self.seq = seq

    def stamp(self, etype, fields, up_ms, ts=None):
        event = {
            "v": SCHEMA_VERSION,
            "type": etype,
            "site": self.site,
            "device": self.device,
            "boot": self.boot,
            "seq": self.seq,
            "up_ms": up_ms,
        }
        if ts is not None:
            event["ts"] = ts
        for k in fields:
            event[k] = fields[k]
        errs = problems(event)
        if errs:
            raise EventError("; ".join(errs))
        self.seq += 1
        return event


def new_conversation_id(rand_bytes):
    """A random 8-hex-digit id, short-lived: a new one every conversation. `rand_bytes` is
    os.urandom (CPython, MicroPython unix) or the device's equivalent, passed in."""
    return "".join("%02x" % b for b in rand_bytes(4))
