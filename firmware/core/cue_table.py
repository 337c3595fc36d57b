# The cues, one row each: what the policy sends (name, level), what the wearer sees and feels
# (LED colour and blinks, motor buzzes), and what the dashboard calls it (label). Everything
# that knows about cues reads this table: the policy (level), the event schema (the names),
# the headset (firmware/headset/outputs.py) and the Pi agent (firmware/pi/outputs.py) play the
# patterns, the companion checks, counts and alerts on the names (companion/schema.py,
# stats.py, alerts.py) and serves the table to the dashboard (GET /api/cues). Adding a cue:
# docs/policy.md, "Adding a cue". Portable: MicroPython and CPython.
#
# A pattern is `times` blinks (or buzzes) of `on` ms at `pct` % followed by `off` ms dark, the
# LED and the motor each with their own (times 0: none). repeat_ms > 0: the pattern starts
# again every repeat_ms until the wearer acknowledges it (a lesser cue does not replace it).
# Colours are RRGGBB in hex.
#
# The table is one text constant, a row a line, parsed when it is looked up (find(), rows(),
# like the settings in cue_settings.py): on the headset a table of tuples is heap for as long
# as the module is loaded, even with the code in flash (a tuple, each str constant's object),
# where the text of one constant stays in flash. A parsed row is a tuple: (name, level, colour,
# LED pct, on, off, times, motor pct, on, off, times, repeat_ms, label); read it by unpacking.

# Cue levels run from 1 to ALERT_LEVEL, the top one, which opens a manager alert at the
# companion.
ALERT_LEVEL = 3

# The cues (level 1 and up), then what both devices show that is not a cue (level 0: no event,
# no alert), the button's feedback; the Pi agent adds its own signals (the microphone fault,
# the enrolment) in the same shape. Columns:
#   name         level colour  LED: pct  on off times  motor: pct  on off times  repeat_ms  label
_TABLE = """
slow_down      1  FF8000      100 700 700  2          100 600   0  1          0  Slow down
empathize      2  0000FF      100 150 150  2          100 150 150  2          0  Empathize
call_manager   3  FF0000      100 300 300  3          100 120 120  3       4000  Manager needed
settled        1  00C828       50 500   0  1            0   0   0  0          0  Settled
ack            0  FFFFFF       80 120   0  1            0   0   0  0          0  Acknowledged
mute           0  FFFFFF       50 600   0  1            0   0   0  0          0  Muted
unmute         0  FFFFFF       50 150 150  2            0   0   0  0          0  Unmuted
"""


# Four functions and no comprehensions: on the headset each function (a comprehension is one)
# is a few hundred bytes of heap once the module is loaded, even from the image.


def find(name):
    """The row of a cue or a signal (a new tuple); None for a name that is neither."""
    start = _TABLE.find("\n%s " % name) + 1 if isinstance(name, str) and name else 0
    if not start:
        return None
    name, level, colour, *numbers, label = _TABLE[start : _TABLE.find("\n", start)].split(None, 12)
    row = [name, int(level), int(colour, 16)]
    for x in numbers:
        row.append(int(x))
    row.append(label)
    return tuple(row)


def level(name):
    """A cue's level (1 to ALERT_LEVEL); 0 for a name that is not a cue."""
    row = find(name)
    return row[1] if row else 0


def names(signals=False):
    """The cues' names in table order (a new list each call); signals=True: the signals'."""
    out = []
    # line by line, each sliced out on its own: a copy of the whole text (strip(), split())
    # would need one free block of ~640 B, which the 64K headset does not always have
    start = 1  # after the table's first newline
    while start < len(_TABLE):
        end = _TABLE.find("\n", start)
        name, level, _ = _TABLE[start:end].split(None, 2)
        if (level == "0") == signals:
            out.append(name)
        start = end + 1
    return out


def rows(signals=False):
    """The cues' rows in table order; signals=True: the signals' (level 0)."""
    out = []
    for name in names(signals):
        out.append(find(name))
    return out
