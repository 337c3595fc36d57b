# A tiny stand-in for the `machine` module on the MicroPython unix port, used by the bench
# simulator (firmware/tools/simdevice.py) until/unless firmware/host provides its own.
# unique_id comes from the environment so each simulated board has its own chip id.
import os
import sys

_UID = os.getenv("CALMCUE_SIM_UID") or "a0b1c2d3e4f5"


def unique_id():
    return bytes(int(_UID[i : i + 2], 16) for i in range(0, len(_UID), 2))


def reset():
    # The simulator restarts the interpreter when it exits, like a board rebooting.
    sys.exit(0)


def soft_reset():
    sys.exit(0)
