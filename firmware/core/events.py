# Event schema v1: the only thing that leaves a device. Runs on MicroPython and CPython.
#
# The companion's pydantic model (companion/schema.py) validates the same JSON; the shared
# vectors in tests/data/event_vectors.json keep the two in step.
#
# Privacy: the schema is closed. Unknown keys are refused, so audio, transcripts, feature
# vectors or staff identity cannot ride along by accident.
import json

from firmware.core import cue_table

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SCHEMA_VERSION = const(1)
MAX_BYTES = const(512)
TOPIC_ROOT = "calmcue/v1"

_NUM_MAX = const(10000000000)
_TOO_BIG = const("%s is %d bytes, max %d")
_ID_CHARS = const("0123456789abcdefghijklmnopqrstuvwxyz_-")
_HEX_CHARS = const("0123456789abcdef")


class EventError(ValueError):
    pass


# fmt: off
def fields(etype):
    """The closed schema, as data: the fields of an event of type `etype` ("*": the fields every
    event has), one a line: name, required, kind, limits; None for a type there is none of.
    Kinds: "int" (a whole number; limits [lo, hi], None for >= 0), "num" (a finite number;
    limits [lo, hi], None for 0 to 1e10), "id" (1-32 of a-z 0-9 _ -, not starting with _ or
    -), "hex" (8-16 lowercase hex digits), "str" (one of the strings in limits). The cue names
    come from firmware/core/cue_table.py.

    Lists made on each call, not constant tuples: on the headset a tuple constant is a heap
    object for as long as the module is loaded, even with the code in flash (about 1.3 KB for
    these), and a list made here is garbage once the event is checked."""
    if etype == "*":
        return [
            "v",        True,  "int",  [1, 1],
            "type",     True,  "str",  ["cue", "conversation", "button"],
            "site",     True,  "id",   None,
            "device",   True,  "id",   None,
            "boot",     True,  "int",  None,
            "seq",      True,  "int",  None,
            "up_ms",    True,  "int",  None,
            "ts",       False, "num",  None,
        ]
    if etype == "cue":
        return [
            "conv",     True,  "hex",  None,
            "cue",      True,  "str",  cue_table.names(),
            "level",    True,  "int",  [1, cue_table.ALERT_LEVEL],
            "score",    True,  "num",  [0, 1],
            "conv_s",   True,  "num",  None,
            "stress_s", False, "num",  None,
            "ttd_s",    False, "num",  None,
            "reason",   False, "id",   None,
        ]
    if etype == "conversation":
        return [
            "conv",     True,  "hex",  None,
            "phase",    True,  "str",  ["start", "end"],
            "conv_s",   True,  "num",  None,
            "cues",     False, "int",  None,
            "peak",     False, "num",  None,
        ]
    if etype == "button":
        return [
            "action",   True,  "str",  ["ack", "mute", "unmute"],
        ]
    return None
# fmt: on


def must_be(kind, limits, value):
    """What `value` must be, as a field of `kind` with `limits`; None when it is that. (Each
    event is checked twice on its way to the queue: a valid one makes no text. The Pi agent's
    config and device provisioning check ids with it.)"""
    if kind == "str":
        return None if value in limits else "one of " + ", ".join(limits)
    if kind == "id" or kind == "hex":
        ident = kind == "id"
        n = len(value) if isinstance(value, str) else 0
        # strip() and startswith(), not a loop over the characters: indexing a str makes a
        # one-character qstr, interned for good (the heap would grow with each new one seen).
        if (
            (1 if ident else 8) <= n <= (32 if ident else 16)
            and not value.strip(_ID_CHARS if ident else _HEX_CHARS)
            and not value.startswith("_")
            and not value.startswith("-")
        ):
            return None
        if ident:
            return "1-32 chars of a-z, 0-9, _ or -, starting with a letter or digit"
        return "8-16 lowercase hex digits"
    num = kind == "num"
    lo, hi = limits if limits is not None else (0, _NUM_MAX)
    if (
        not isinstance(value, bool)  # JSON true/false are ints to Python
        and isinstance(value, (int, float) if num else int)
        and lo <= value
        and (value <= hi or not (limits or num))  # a plain int has no upper bound
    ):
        return None
    if lo == hi:
        return str(lo)
    return ("a number" if num else "an integer") + (
        " %d-%d" % (lo, hi) if limits or num else " >= 0"
    )


def problems(event):
    """Return a list of what is wrong with `event` (a dict); empty when it is valid."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    out = []
    t = event.get("type")
    own = (t != "*" and fields(t)) or ()
    common = fields("*")
    for schema in (common, own):
        for i in range(0, len(schema), 4):
            name = schema[i]
            value = event.get(name)
            if value is None:
                if schema[i + 1]:
                    out.append(name + " must be given")
                continue
            why = must_be(schema[i + 2], schema[i + 3], value)
            if why is not None:
                out.append(name + " must be " + why)
    for key in event:
        known = False
        for schema in (common, own):
            for i in range(0, len(schema), 4):
                if schema[i] == key:
                    known = True
        if not known:
            out.append("%s is not an allowed field" % key)
    return out


def encode(event, checked=False):
    """Validate and serialise an event dict to compact JSON bytes. Raises EventError.
    checked: Stamper.stamp() has just validated it, only its size is left to check (each
    check makes a few KB of short-lived garbage on the headset)."""
    errs = [] if checked else problems(event)
    if not errs:
        data = json.dumps(event).encode()
        if len(data) <= MAX_BYTES:
            return data
        errs.append(_TOO_BIG % ("event", len(data), MAX_BYTES))
    raise EventError("; ".join(errs))


class Stamper:
    """Adds the common fields to every event a device sends: schema version, site, device, the
    boot counter and a sequence number that counts up from 0 each boot (gaps and reboots show at
    the companion), milliseconds since boot and, once the clock is known, Unix time."""

    def __init__(self, site, device, boot):
        self.site = site
        self.device = device
        self.boot = boot
        self.seq = 0

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
    return "%08x" % int.from_bytes(rand_bytes(4), "big")
