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

# The closed schema as text, read on use: on the headset a table of dicts and tuples would sit
# in the heap for good. One line per event type ("*": the fields every event has), each field
# name[?]:kind ("?" = optional). Kinds: i (integer >= 0), n (number 0 to 1e10, finite), i:lo-hi
# and n:lo-hi (own bounds), id (1-32 of a-z 0-9 _ -, not starting with _ or -), hex (8-16
# lowercase hex digits), or the allowed strings joined by "|".
_SCHEMA = const(
    "* v:i:1-1 type:cue|conversation|button site:id device:id boot:i seq:i up_ms:i ts?:n\n"
    "cue conv:hex cue:slow_down|empathize|call_manager|settled level:i:1-3 score:n:0-1 "
    "conv_s:n stress_s?:n ttd_s?:n reason?:id\n"
    "conversation conv:hex phase:start|end conv_s:n cues?:i peak?:n\n"
    "button action:ack|mute|unmute"
)
_TOO_BIG = const("%s is %d bytes, max %d")
_CHARS = const("0123456789abcdefghijklmnopqrstuvwxyz_-")  # hex digits, then the rest of an id's


class EventError(ValueError):
    pass


def problems(event, schema=_SCHEMA):
    """Return a list of what is wrong with `event` (a dict); empty when it is valid."""
    if not isinstance(event, dict):
        return ["event must be a JSON object"]
    out = []
    known = []
    for line in schema.split("\n"):
        head = line[: line.find(" ")]  # a slice that is a qstr already costs no heap
        if head != "*" and head != event.get("type"):
            continue
        for f in line.split()[1:]:
            key, kind = f.split(":", 1)
            name = key.rstrip("?")
            known.append(name)
            value = event.get(name)
            if value is None:
                if name == key:
                    out.append(name + " must be " + "given")  # short texts are qstrs
                continue
            # why: what the value must be, made only when it is not (each event is checked
            # twice on its way to the queue, so a valid one makes as little garbage as it can)
            if "|" in kind:
                ok = value in kind.split("|")
                why = ok or "one of " + kind.replace("|", ", ")
            elif kind == "id" or kind == "hex":
                ident = kind == "id"
                n = len(value) if isinstance(value, str) else 0
                ok = (1 if ident else 8) <= n <= (32 if ident else 16)
                # Hex digits come first in _CHARS, "_" "-" last. strip() and slices, not a loop
                # over the characters: indexing a str makes a one-character qstr, interned for
                # good, so each new character seen would grow the heap for the rest of the run.
                ok = ok and not value.strip(_CHARS[: 38 if ident else 16])
                ok = ok and _CHARS.find(value[:1]) < 36
                why = (
                    ok
                    or (  # one text for both: one heap object fewer
                        "1-32 chars of a-z, 0-9, _ or -, starting with a letter or digit|"
                        "8-16 lowercase hex digits"
                    ).split("|")[0 if ident else 1]
                )
            else:
                num = kind[:1] == "n"
                bounds = kind[2:]
                lo, hi = map(int, bounds.split("-")) if bounds else (0, 10000000000)
                ok = (
                    not isinstance(value, bool)  # JSON true/false are ints to Python
                    and isinstance(value, (int, float) if num else int)
                    and lo <= value
                    and (value <= hi or not (bounds or num))  # a plain int has no upper bound
                )
                why = ok or (
                    str(lo)
                    if lo == hi
                    else ("a number" if num else "an integer")
                    + (" %d-%d" % (lo, hi) if bounds or num else " >= 0")
                )
            if not ok:
                out.append(name + " must be " + why)
    for key in event:
        if key not in known:
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


try:
    from micropython import const
except ImportError:  # CPython: the Pi agent, the companion's tests and tools. The headset
    # neither decodes events nor names their topics (firmware/net.py builds its topic prefix
    # once), and its heap has no room for code it never runs.

    def decode(data):
        """Parse and validate JSON bytes from the wire. Raises EventError with the reason."""
        if len(data) > MAX_BYTES:
            raise EventError(_TOO_BIG % ("payload", len(data), MAX_BYTES))
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

    def fields(etype):
        """[(key, kind, required)] of an event of type `etype`: the common fields, then its own."""
        out = []
        for line in _SCHEMA.split("\n"):
            spec = line.split()
            if spec[0] == "*" or spec[0] == etype:
                for f in spec[1:]:
                    key, kind = f.split(":", 1)
                    out.append((key.rstrip("?"), kind, key[-1] != "?"))
        return out

    def _check(key, kind, value):
        """Why `value` is not a valid `kind` (see _SCHEMA) for field `key`; None when it is.
        (The Pi agent's config and device provisioning check ids with it.)"""
        return (problems({key: value}, "* %s:%s" % (key, kind)) or [None])[0]
