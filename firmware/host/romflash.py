# The ESP32's romfs flash partition on the unix port: what vfs.rom_ioctl(2, 0) returns on a board
# (ports/esp32/esp32_partition.c: an esp32.Partition whose buffer is the memory-mapped flash), over
# a file calmcue.shared.romport mapped read-only and shared ($CALMCUE_ROMFS_PART="addr,size,path").
# Only the hardware is fake, and as strict as the flash: 4096-byte erase blocks, an erase of whole
# aligned blocks only, a write clears bits and never sets them (NOR flash: what was not erased
# reads back as old AND new), nothing past the end, and the mapped buffer is read-only (a write
# through it faults). Every erase and write is a step: $CALMCUE_POWER_CUT=n cuts the power in the
# middle of step n (half of it done, then the process is killed), and `step` is there for the
# tests to count the filesystem's writes on the same clock (tests/test_fw_romfs_update.py).
import os

import uctypes

_BLOCK = 4096
_EINVAL = 22
_env = os.getenv("CALMCUE_ROMFS_PART")
_cut = int(os.getenv("CALMCUE_POWER_CUT") or 0)
steps = 0
seg = None


def step(half_done):
    """One write to flash is about to happen; on the cut step, do half of it and lose power."""
    global steps
    steps += 1
    if steps == _cut:
        half_done()
        os.system("kill -9 $PPID")  # the interpreter's process: nothing after this line runs
        while True:
            pass


def _put(at, data):
    with open(_env.split(",")[2], "r+b") as f:
        f.seek(at)
        f.write(data)


class Partition(uctypes.struct):
    def _span(self, at, n):
        if at < 0 or n < 0 or at + n > len(memoryview(self)):
            raise OSError(_EINVAL)  # ESP_ERR_INVALID_SIZE: past the end of the partition

    def _erase(self, at, n):
        if at % _BLOCK or n % _BLOCK:
            raise OSError(_EINVAL)  # esp_partition_erase_range: whole erase blocks only
        self._span(at, n)
        step(lambda: _put(at, b"\xff" * (n // 2)))
        _put(at, b"\xff" * n)

    def readblocks(self, block, buf, offset=0):
        at = block * _BLOCK + offset
        self._span(at, len(buf))
        buf[:] = memoryview(self)[at:at + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        at = block * _BLOCK
        if offset is None:  # a simple write erases first (block size 4096: whole blocks)
            self._erase(at, len(buf))
        else:
            at += offset
        n = len(buf)
        self._span(at, n)
        old = memoryview(self)[at:at + n]
        new = bytes(old[i] & buf[i] for i in range(n))
        step(lambda: _put(at, new[:n // 2]))
        _put(at, new)

    def ioctl(self, cmd, arg):
        if cmd == 4:  # block count
            return len(memoryview(self)) // _BLOCK
        if cmd == 5:  # block size
            return _BLOCK
        if cmd == 6:  # erase one block
            self._erase(arg * _BLOCK, _BLOCK)
            return 0
        return 0 if cmd in (1, 2, 3) else None  # init, deinit, sync


def rom_ioctl(cmd, *args):
    """vfs.rom_ioctl as the ESP32 port answers it: one segment, the romfs partition, when the
    partition table has one; -EINVAL for everything else (writes go through the Partition)."""
    global seg
    if _env is None:
        return 0 if cmd == 1 else -_EINVAL
    if cmd == 1:
        return 1
    if cmd == 2 and args[0] == 0:
        if seg is None:
            a, n = [int(x) for x in _env.split(",")[:2]]
            seg = Partition(a, {"flash": (uctypes.ARRAY | 0, uctypes.UINT8 | n)})
        return seg
    return -_EINVAL
