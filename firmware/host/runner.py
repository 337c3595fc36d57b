# WAV-driven host runner for the headset firmware on the MicroPython unix port; usage and output
# in firmware/host/hostrun.py. Kept tiny: this script is compiled in the device's heap, the rest
# is imported (compiled ahead of time with --build).
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_build = sys.argv[sys.argv.index("--build") + 1] if "--build" in sys.argv else None
# The fakes (machine, network, ...) come first: they shadow the unix port's built-in machine.
for _p in (_build, _build + "/host") if _build else (_here + "/../../var/mpy-lib", _here + "/../..", _here):
    sys.path.insert(0, _p)

import hostrun  # noqa: E402

hostrun.main(sys.argv[1:])
