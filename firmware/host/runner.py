# WAV-driven host runner for the headset firmware on the MicroPython unix port; usage and output
# in firmware/host/hostrun.py. Kept tiny: this script is compiled in the device's heap and stays
# there for the run, the rest is imported (compiled ahead of time with --build). Names that are
# already qstrs (argv, path), so the script adds as few as it can.
import sys

argv = sys.argv
# The fakes (machine, ...) come first: they shadow the unix port's built-in machine.
if "--rom" in argv:
    # The build as a ROMFS image outside the heap (python -m calmcue.shared.romport IMAGE ...; address
    # and size in $CALMCUE_ROM): mounted at /rom, imports run its bytecode in place.
    import os

    import uctypes
    import vfs

    path = [int(x) for x in os.getenv("CALMCUE_ROM").split(",")]
    vfs.mount(vfs.VfsRom(uctypes.bytearray_at(path[0], path[1])), "/rom")
    sys.path[:0] = ["/rom/host", "/rom"]
elif "--build" in argv:
    path = argv[argv.index("--build") + 1]
    sys.path[:0] = [path + "/host", path]
else:
    path = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path[:0] = [path, path + "/../.."]

import hostrun  # noqa: E402

hostrun.main(argv[1:])
