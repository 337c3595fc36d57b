# The cues, one row each: what the policy sends (name, level), what the wearer sees and feels
# (LED colour and blinks, motor buzzes), and what the dashboard calls it (label). Everything
# that knows about cues reads this table: the policy (level), the event schema (the names),
# the headset (firmware/outputs.py) and the Pi agent (firmware/pi/outputs.py) play the
# patterns, the companion checks, counts and alerts on the names (companion/schema.py,
# stats.py, alerts.py) and serves the table to the dashboard (GET /api/cues). Adding a cue:
# docs/policy.md, "Adding a cue". Portable: MicroPython and CPython.
#
# A pattern is `times` blinks (or buzzes) of `on` ms at `pct` % followed by `off` ms dark, the
# LED and the motor each with their own (times 0: none). repeat_ms > 0: the pattern starts
# again every repeat_ms until the wearer acknowledges it (a lesser cue does not replace it).
# Colours are 0xRRGGBB. A row is flat (no tuple per pattern): on the headset every tuple is a
# heap object even with the code in flash, and names for the columns would be qstrs for good;
# read a row by unpacking it.

# Cue levels run from 1 to ALERT_LEVEL, the top one, which opens a manager alert at the
# companion.
ALERT_LEVEL = 3

# fmt: off
CUES = (  # type: tuple[tuple, ...]
    #                       LED: colour  pct   on  off times  motor: pct  on  off times  repeat_ms  label
    ("slow_down",    1,      0xFF8000,   100, 700, 700, 2,          100, 600,   0, 1,        0, "Slow down"),
    ("empathize",    2,      0x0000FF,   100, 150, 150, 2,          100, 150, 150, 2,        0, "Empathize"),
    ("call_manager", 3,      0xFF0000,   100, 300, 300, 3,          100, 120, 120, 3,     4000, "Manager needed"),
    ("settled",      1,      0x00C828,    50, 500,   0, 1,            0,   0,   0, 0,        0, "Settled"),
)

# What both devices show that is not a cue (level 0: no event, no alert): the button's
# feedback. The Pi agent adds its own (the microphone fault, the enrolment) in the same shape.
SIGNALS = (  # type: tuple[tuple, ...]
    ("ack",          0,      0xFFFFFF,    80, 120,   0, 1,            0,   0,   0, 0,        0, "Acknowledged"),
    ("mute",         0,      0xFFFFFF,    50, 600,   0, 1,            0,   0,   0, 0,        0, "Muted"),
    ("unmute",       0,      0xFFFFFF,    50, 150, 150, 2,            0,   0,   0, 0,        0, "Unmuted"),
)
# fmt: on
NAMES = tuple(row[0] for row in CUES)


def find(name):
    """The row of a cue or a signal; ValueError for a name that is neither."""
    for rows in (CUES, SIGNALS):
        for row in rows:
            if row[0] == name:
                return row
    raise ValueError("no pattern for %r" % (name,))


def level(name):
    """A cue's level (1 to ALERT_LEVEL); 0 for a name that is not a cue."""
    for row in CUES:
        if row[0] == name:
            return row[1]
    return 0
