"""A simulated board for the bench: the real MicroPython unix port on a pseudo-terminal.

The interpreter runs with its console on one pty (as on a UART), and a relay copies bytes to a
second pty whose path (`.port`, e.g. /dev/pts/7) is what the IT tools open with pyserial, exactly
as they open /dev/ttyACM0. Its flash is a folder (the interpreter's working directory). When the
interpreter exits (`machine.reset()`), the relay starts it again on the same port, like a board
rebooting while the USB cable stays in, so a tool can reconnect.

Used by the tests and by `calmcue device sim`.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
import tty
from pathlib import Path

from calmcue.shared.mpy import interpreter
from calmcue.shared.romport import partition_interpreter

REPO = Path(__file__).resolve().parents[2]
HOST_FAKES = REPO / "firmware" / "host"
SIM_FAKES = Path(__file__).resolve().parent / "sim"

# Run on every (re)start before the REPL, as the board runs boot.py: the A/B loader chooses the
# bundle slot and may roll back. A broken boot.py must not brick the console.
_STARTUP = (
    "import os, sys, binascii, machine\n"
    # this board's chip id, and a reset that really restarts (the relay boots it again)
    "machine.unique_id = lambda: binascii.unhexlify(os.getenv('CALMCUE_SIM_UID'))\n"
    "def _sim_reset():\n"
    "    sys.exit(0)\n"
    "machine.reset = _sim_reset\n"
    "try:\n"
    "    os.stat('boot.py')\n"
    "    exec(open('boot.py').read())\n"
    "except OSError:\n"
    "    pass\n"
    "except Exception as e:\n"
    "    print('boot.py failed:', repr(e))\n"
)


def fakes_path() -> Path:
    """Folder with the fake `machine`: the firmware's host fakes when they exist, else ours."""
    if (HOST_FAKES / "machine.py").exists():
        return HOST_FAKES
    return SIM_FAKES


class SimulatedBoard:
    def __init__(self, flash: Path, unique_id: str = "a0b1c2d3e4f5", heapsize: str = "256K",
                 romfs: int = 0):
        """`romfs`: the size of the board's romfs flash partition (0: none, as on a partition
        table without one); kept beside the flash folder, outside its filesystem."""
        self.flash = Path(flash)
        self.romfs = romfs
        self.partition = self.flash.with_name(self.flash.name + ".romfs-partition")
        self.flash.mkdir(parents=True, exist_ok=True)
        self.unique_id = unique_id
        self.heapsize = heapsize
        self.boots = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dev_master, self._dev_slave = os.openpty()
        self._host_master, self._host_slave = os.openpty()
        tty.setraw(self._host_slave)
        self.port = os.ttyname(self._host_slave)

    def _spawn(self) -> None:
        tty.setraw(self._dev_slave)
        # MICROPYPATH replaces the default sys.path: the flash folder first, then the frozen
        # modules (as on the board: `ssl` is one), then the fake hardware.
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join(["", ".frozen", str(fakes_path())])
        env["CALMCUE_SIM_UID"] = self.unique_id
        startup = self.flash / ".sim_startup.py"
        startup.write_text(_STARTUP)
        start = partition_interpreter(self.partition, self.romfs) if self.romfs else interpreter()
        self._proc = subprocess.Popen(
            [*start, "-X", f"heapsize={self.heapsize}", "-i", str(startup)],
            stdin=self._dev_slave,
            stdout=self._dev_slave,
            stderr=self._dev_slave,
            cwd=self.flash,
            env=env,
            start_new_session=True,
        )
        self.boots += 1

    def start(self) -> SimulatedBoard:
        self._spawn()
        self._thread = threading.Thread(target=self._relay, name="sim-board-relay", daemon=True)
        self._thread.start()
        return self

    def _relay(self) -> None:
        fds = [self._dev_master, self._host_master]
        while not self._stop.is_set():
            if self._proc is not None and self._proc.poll() is not None:
                self._spawn()  # the board rebooted
            try:
                ready, _, _ = select.select(fds, [], [], 0.02)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                other = self._host_master if fd == self._dev_master else self._dev_master
                try:
                    os.write(other, data)
                except OSError:
                    pass

    def kill(self) -> None:
        """Cut the power: the interpreter dies mid-whatever; the relay boots it again."""
        if self._proc is not None:
            self._proc.kill()

    def wait_boots(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.boots < n and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.boots < n:
            raise TimeoutError(f"simulated board booted {self.boots} times, expected {n}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        for fd in (self._dev_master, self._dev_slave, self._host_master, self._host_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> SimulatedBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
