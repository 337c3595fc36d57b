# Events as those who read them see them: decode a payload from the wire, name an event's
# topic. The Pi agent, the companion's tools and the fleet simulator use it; the headset never
# reads events and builds its topic prefix once (firmware/headset/net.py), so this module stays out of
# its image (firmware/tools/bundle.py NOT_ON_DEVICE): on the headset every function of a
# loaded module is heap. Portable all the same: MicroPython and CPython.
import json

from firmware.core.events import MAX_BYTES, TOPIC_ROOT, EventError, problems


def decode(data):
    """Parse and validate JSON bytes from the wire (the Pi agent, the companion's tests and
    tools: the headset never reads events). Raises EventError with the reason."""
    if len(data) > MAX_BYTES:
        raise EventError("payload is %d bytes, max %d" % (len(data), MAX_BYTES))
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
