"""A serial link to a MicroPython board's raw REPL (Ctrl-A raw mode, Ctrl-D execute), built on
mpremote's transport. Everything the IT tools do on a device goes through here: run code, write
a file so that it lands whole (written as `<path>.part`, hashed ON the device, renamed only when
the SHA-256 matches), hash many files in one round trip, read the chip id, reset."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

# Defined once per connection in the board's REPL globals; small and allocation-light.
_HELPERS = """
import os, hashlib, binascii, json
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256(); b = bytearray(1024); m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _md(p):
    c = ''
    for s in p.split('/')[:-1]:
        c = s if not c else c + '/' + s
        try:
            os.mkdir(c)
        except OSError:
            pass
def _hs(ps):
    print(json.dumps([_h(p) for p in ps]))
def _fin(p, want):
    got = _h(p + '.part')
    if got == want:
        os.rename(p + '.part', p)
        print('ok')
    else:
        try:
            os.remove(p + '.part')
        except OSError:
            pass
        print('bad ' + str(got))
"""


class DeviceError(RuntimeError):
    """Something went wrong talking to the board; the message says what to check."""


def available_ports() -> list[str]:
    try:
        from serial.tools import list_ports

        return sorted(p.device for p in list_ports.comports())
    except Exception:  # noqa: BLE001 - listing is only a hint in an error message
        return []


def check_port(port: str) -> None:
    if not port:
        raise DeviceError("no --port given; " + _port_hint())
    if "://" not in port and not os.path.exists(port):
        raise DeviceError(f"serial port {port} does not exist; " + _port_hint())


def _port_hint() -> str:
    ports = available_ports()
    if ports:
        return "serial ports on this machine: " + ", ".join(ports)
    return (
        "no serial ports found: plug the board in with a data (not charge-only) USB cable; on "
        "Linux the user needs the 'dialout' group"
    )


class DeviceLink:
    def __init__(self, port: str, baudrate: int = 115200, wake_s: float = 10.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        check_port(port)
        self.port = port
        self._TransportError = TransportError
        try:
            # a read timeout, or mpremote blocks forever on a pty that stays silent
            self.t = SerialTransport(port, baudrate=baudrate, timeout=1)
        except (TransportError, OSError) as e:
            raise DeviceError(
                f"cannot open {port}: {e}; is another program (a serial monitor, mpremote) "
                "using it?"
            ) from None
        try:
            self._wake(wake_s)
            self.t.enter_raw_repl(soft_reset=False)
            self.platform = bytes(self.t.exec("import sys\nprint(sys.platform)")).decode().strip()
            if self.platform != "linux":
                # A board: soft reset from the raw REPL frees what an interrupted main.py still
                # holds and does not start main.py again (mpremote's default). The unix port has
                # no soft reset: Ctrl-D there ends the interpreter.
                self.t.enter_raw_repl(soft_reset=True)
            self.t.exec(_HELPERS)
        except TransportError as e:
            self.close()
            raise DeviceError(
                f"{port} does not answer as a MicroPython raw REPL ({e}); flash MicroPython "
                "first with `calmcue device flash`, or press reset and try again"
            ) from None

    def _wake(self, wake_s: float) -> None:
        """Interrupt whatever runs (main.py) until the REPL prompt answers. A board that is
        still booting discards input when its console starts, so ask again until it replies."""
        ser = self.t.serial
        deadline = time.monotonic() + wake_s
        while time.monotonic() < deadline:
            ser.write(b"\r\x03\x02")  # interrupt, then leave a raw REPL left by a tool
            end = time.monotonic() + 0.3
            seen = b""
            while time.monotonic() < end:
                n = ser.in_waiting
                if n:
                    seen += ser.read(n)
                    if seen.endswith((b">>> ", b">")):
                        return
                else:
                    time.sleep(0.01)
        raise self._TransportError(f"no REPL prompt; last output {seen[-200:]!r}")

    def exec(self, code: str) -> str:
        try:
            return bytes(self.t.exec(code)).decode()
        except self._TransportError as e:
            raise DeviceError(f"the board failed running tool code: {e}") from None

    def eval_json(self, expr: str) -> Any:
        return json.loads(self.exec(f"print(json.dumps({expr}))").strip())

    def unique_id(self) -> str:
        return str(self.eval_json("binascii.hexlify(__import__('machine').unique_id()).decode()"))

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for i in range(0, len(paths), 40):  # keep each reply short for small boards
            part = paths[i : i + 40]
            got = json.loads(self.exec(f"_hs({json.dumps(part)})").strip())
            out.update(zip(part, got, strict=True))
        return out

    def write_file(self, path: str, data: bytes, chunk: int = 1024) -> None:
        """Write `data` to `path` whole or not at all, checked by SHA-256 on the device."""
        want = hashlib.sha256(data).hexdigest()
        self.exec(f"_md({path!r})")
        self._send(path + ".part", data, chunk)
        reply = self.exec(f"_fin({path!r}, {want!r})").strip()
        if reply != "ok":
            raise DeviceError(
                f"{path}: the device computed SHA-256 {reply[4:]} but {want} was sent; the data "
                "was damaged on the way. Check the cable and port, then run the command again"
            )

    def _send(self, path: str, data: bytes, chunk: int) -> None:
        # base64 costs 4/3 of the bytes on the wire; repr() of compiled .mpy data costs ~3x
        self.exec(f"f=open({path!r},'wb')\nw=f.write\na2b=binascii.a2b_base64")
        for i in range(0, len(data), chunk):
            self.exec(f"w(a2b({base64.b64encode(data[i : i + chunk])!r}))")
        self.exec("f.close()")

    def read_file(self, path: str) -> bytes | None:
        try:
            return bytes(self.t.fs_readfile(path))
        except (OSError, self._TransportError):
            return None

    def remove(self, path: str) -> None:
        self.exec(f"try:\n os.remove({path!r})\nexcept OSError:\n pass")

    def reset(self) -> None:
        try:
            self.t.exec_raw_no_follow("import machine\nmachine.reset()")
        except self._TransportError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.t.close()
        except Exception:  # noqa: BLE001 - closing a port that went away is fine
            pass

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def put_tree(link: DeviceLink, files: dict[str, bytes], log: Any = None) -> dict[str, str]:
    """Bring `files` (device path -> content) onto the board, writing only what differs.

    Returns path -> what happened: "same", "written", or "rewritten (changed on the device)".
    """
    want = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
    have = link.hashes(list(files))
    result = {}
    for path, data in files.items():
        if have[path] == want[path]:
            result[path] = "same"
            continue
        link.write_file(path, data)
        result[path] = "written" if have[path] is None else "rewritten (changed on the device)"
        if log:
            log(f"  {path}: {result[path]}")
    return result


def verify_tree(link: DeviceLink, files: dict[str, bytes]) -> list[str]:
    """Problems (one line per file) where the board's copy differs from `files`."""
    have = link.hashes(list(files))
    out = []
    for path, data in files.items():
        want = hashlib.sha256(data).hexdigest()
        if have[path] is None:
            out.append(f"{path}: missing on the device")
        elif have[path] != want:
            out.append(f"{path}: SHA-256 on the device is {have[path]}, expected {want}")
    return out


def read_local(path: Path) -> bytes:
    return path.read_bytes()
