# Store-and-forward queue on flash: events wait here until the broker has acknowledged them.
#
# Layout under `path` (a folder on the device's flash):
#   00000001, 00000002, ...  segments: one encoded event per line, appended, never rewritten
#   head                     "<segment> <byte offset>" of the oldest undelivered event
# The head is replaced atomically (write head.tmp, then rename), so a reboot at any moment
# leaves either the old or the new position: nothing queued is lost. Rename over an existing
# file is atomic on LittleFS (the ESP32 default) and on POSIX (the unix port).
#
# Bounded: past `max_events` the oldest event is dropped and counted (the companion also sees the
# gap in sequence numbers). Only a few hundred bytes of RAM are used whatever the queue length.
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_SEGMENT_EVENTS = const(32)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _mkdirs(path):
    part = ""
    for name in path.split("/"):
        if not name:
            part += "/"
            continue
        part += name
        if not _exists(part):
            os.mkdir(part)
        part += "/"


class Queue:
    def __init__(self, path, max_events=500):
        self.path = path.rstrip("/")
        self.max_events = max_events
        self.dropped = 0  # dropped since boot because the queue was full
        self.damaged = 0  # half-written lines skipped (power cut during an append)
        _mkdirs(self.path)
        segs = self._segments()
        self._head_seg, self._head_off = self._read_head(segs)
        self._tail_seg = max(segs[-1], self._head_seg) if segs else self._head_seg
        self._tail_lines = 0
        self._peeked = 0
        self.count = 0
        for seg in segs:
            if seg < self._head_seg:
                os.remove(self._name(seg))  # delivered, deletion was cut short
                continue
            n, partial = self._scan(seg, self._head_off if seg == self._head_seg else 0)
            self.count += n
            if seg == self._tail_seg:
                self._tail_lines = n
                if partial:
                    # Never append after a torn line: a new segment starts clean.
                    self._tail_seg += 1
                    self._tail_lines = 0

    def _name(self, seg):
        return "%s/%08d" % (self.path, seg)

    def _segments(self):
        out = []
        for name in os.listdir(self.path):
            if len(name) == 8 and name.isdigit():
                out.append(int(name))
        out.sort()
        return out

    def _read_head(self, segs):
        try:
            with open(self.path + "/head") as f:
                seg, off = f.read().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            # No head yet (new queue) or unreadable: start at the oldest segment. At worst an
            # event is sent twice; the companion drops duplicates by (device, boot, seq).
            return (segs[0] if segs else 1), 0

    def _scan(self, seg, off):
        n = 0
        partial = False
        with open(self._name(seg), "rb") as f:
            f.seek(off)
            while True:
                line = f.readline()
                if not line:
                    break
                if line[-1:] == b"\n":
                    n += 1
                else:
                    partial = True
                    n += 1  # counted so that peek() reaches and skips it
        return n, partial

    def _write_head(self):
        tmp = self.path + "/head.tmp"
        with open(tmp, "w") as f:
            f.write("%d %d" % (self._head_seg, self._head_off))
        os.rename(tmp, self.path + "/head")

    def __len__(self):
        return self.count

    def put(self, data):
        """Append one encoded event (bytes without newline). Survives a reboot once it returns."""
        if self.count >= self.max_events:
            self.peek()
            self.pop()
            self.dropped += 1
        if self._tail_lines >= _SEGMENT_EVENTS:
            self._tail_seg += 1
            self._tail_lines = 0
        with open(self._name(self._tail_seg), "ab") as f:
            f.write(data)
            f.write(b"\n")
        self._tail_lines += 1
        self.count += 1

    def peek(self):
        """The oldest undelivered event (bytes) or None. Torn lines are skipped and counted."""
        while self.count:
            try:
                f = open(self._name(self._head_seg), "rb")
            except OSError:
                # Missing segment: move on to the next one that exists.
                self._head_seg += 1
                self._head_off = 0
                if self._head_seg > self._tail_seg:
                    self._tail_seg = self._head_seg
                    self._tail_lines = 0
                    self.count = 0
                    return None
                continue
            with f:
                f.seek(self._head_off)
                line = f.readline()
            if not line:
                self._next_segment()
                continue
            self._peeked = len(line)
            if line[-1:] != b"\n":
                self.damaged += 1
                self.pop()
                continue
            return line[:-1]
        return None

    def pop(self):
        """Mark the event returned by peek() as delivered."""
        if not self.count:
            return
        if not self._peeked:
            self.peek()
        self._head_off += self._peeked
        self._peeked = 0
        self.count -= 1
        if self._head_seg < self._tail_seg:
            size = os.stat(self._name(self._head_seg))[6]
            if self._head_off >= size:
                self._next_segment()
                return
        self._write_head()

    def _next_segment(self):
        old = self._head_seg
        self._head_seg += 1
        self._head_off = 0
        self._write_head()
        try:
            os.remove(self._name(old))
        except OSError:
            pass
