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


class Queue:
    def __init__(self, path, max_events=500):
        self.path = path = path.rstrip("/")
        self.max_events = max_events
        self.dropped = 0  # dropped since boot because the queue was full
        self.damaged = 0  # half-written lines skipped (power cut during an append)
        part = ""
        for name in path.split("/"):  # make the folder and its parents
            part += name
            if name:
                try:
                    os.mkdir(part)
                except OSError:
                    pass  # there already
            part += "/"
        segs = []
        for name in os.listdir(path):
            if len(name) == 8 and name.isdigit():
                segs.append(int(name))
        segs.sort()
        try:
            with open(path + "/head") as f:
                seg, off = f.read().split()
            seg, off = int(seg), int(off)
        except (OSError, ValueError):
            # No head yet (new queue) or unreadable: start at the oldest segment. At worst an
            # event is sent twice; the companion drops duplicates by (device, boot, seq).
            seg, off = (segs[0] if segs else 1), 0
        self._head_seg, self._head_off = seg, off
        self._tail_seg = max(segs[-1], seg) if segs else seg
        self._tail_lines = 0
        self._peeked = 0
        self.count = 0
        for s in segs:
            if s < seg:
                os.remove("%s/%08d" % (path, s))  # delivered, deletion was cut short
                continue
            n = 0
            line = b"\n"
            with open("%s/%08d" % (path, s), "rb") as f:
                f.seek(off if s == seg else 0)
                for line in f:  # noqa: B007 (the last one is looked at below)
                    n += 1  # a torn last line too, so that peek() reaches and skips it
            self.count += n
            if s == self._tail_seg:
                self._tail_lines = n
                if line[-1:] != b"\n":
                    # Never append after a torn line: a new segment starts clean.
                    self._tail_seg += 1
                    self._tail_lines = 0

    def __len__(self):
        return self.count

    def put(self, data):
        """Append one encoded event (bytes without newline). Survives a reboot once it returns."""
        if self.count >= self.max_events:
            self.pop()
            self.dropped += 1
        if self._tail_lines >= _SEGMENT_EVENTS:
            self._tail_seg += 1
            self._tail_lines = 0
        with open("%s/%08d" % (self.path, self._tail_seg), "ab") as f:
            f.write(data)
            f.write(b"\n")
        self._tail_lines += 1
        self.count += 1

    def peek(self):
        """The oldest undelivered event (bytes) or None. Torn lines are skipped and counted."""
        while self.count:
            line = b""
            try:
                with open("%s/%08d" % (self.path, self._head_seg), "rb") as f:
                    f.seek(self._head_off)
                    line = f.readline()
            except OSError:
                # Missing segment: move on to the next one that exists.
                if self._head_seg >= self._tail_seg:
                    self._tail_seg = self._head_seg + 1
                    self._tail_lines = 0
                    self.count = 0
            if not line:
                self._move(self._head_seg + 1, 0)
                continue
            self._peeked = len(line)
            if line[-1:] == b"\n":
                return line[:-1]
            self.damaged += 1
            self.pop()
        return None

    def pop(self):
        """Mark the event returned by peek() as delivered."""
        if not self.count:
            return
        if not self._peeked:
            self.peek()
            if not self.count:  # only torn lines were left, and peek() skipped them
                return
        seg = self._head_seg
        off = self._head_off + self._peeked
        self._peeked = 0
        self.count -= 1
        if seg < self._tail_seg and off >= os.stat("%s/%08d" % (self.path, seg))[6]:
            seg += 1
            off = 0
        self._move(seg, off)

    def _move(self, seg, off):
        """The head to (seg, off), on flash first; a segment left behind is deleted."""
        tmp = self.path + "/head.tmp"
        with open(tmp, "w") as f:
            f.write("%d %d" % (seg, off))
        os.rename(tmp, self.path + "/head")
        old = self._head_seg
        self._head_seg = seg
        self._head_off = off
        if seg != old:
            try:
                os.remove("%s/%08d" % (self.path, old))
            except OSError:
                pass
