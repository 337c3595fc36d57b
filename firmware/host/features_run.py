# PCM-driven runner for the feature front end (MicroPython unix port or the device REPL).
#
# stdin: any number of clips, each b"PCM0" + uint32 LE sample count + int16 LE samples; a count of
# 0 ends the stream. Each clip is a fresh stream (reset()). Fed to the extractor in chunks of
# argv[1] samples (default 400). stdout: per window one line
#   W <clip> <t> <speech> <level_db> <f0_hz> <rate> <feature 0> ... <feature 16>
# then "E <clip> <live heap bytes after a collection>" per clip. Audio is never stored: it streams through RAM.
import gc
import sys

from firmware.core.features import Features


def _read_exact(stream, mv, n):
    got = 0
    while got < n:
        k = stream.readinto(mv[got:n])
        if not k:
            raise EOFError("stdin ended inside a clip")
        got += k
    return n


def main():
    chunk = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    stream = sys.stdin.buffer
    head = bytearray(8)
    hmv = memoryview(head)
    buf = bytearray(2 * chunk)
    mv = memoryview(buf)
    fx = Features()
    write = sys.stdout.write
    clip = 0
    while True:
        _read_exact(stream, hmv, 8)
        if head[:4] != b"PCM0":
            raise ValueError("bad clip header: expected b'PCM0' + uint32 sample count")
        n = head[4] | head[5] << 8 | head[6] << 16 | head[7] << 24
        if n == 0:
            break
        fx.reset()
        left = n
        while left:
            k = chunk if left > chunk else left
            _read_exact(stream, mv, 2 * k)
            for rec in fx.process(mv[: 2 * k]):
                f = rec["features"]
                vals = " ".join([repr(v) for v in f])
                write(
                    f"W {clip} {rec['t']!r} {rec['speech']!r} {rec['level_db']!r} "
                    f"{rec['f0_hz']!r} {rec['rate']!r} {vals}\n"
                )
            left -= k
        gc.collect()
        write(f"E {clip} {gc.mem_alloc()}\n")
        clip += 1


main()
