"""Fleet figures (`make bench`): provisioning the real firmware bundle onto a simulated board
over a pty (first run, and a re-run with nothing to change), and the device's update-signature
check on the MicroPython unix port."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from calmcue.shared import mpy
from companion import fleet
from firmware.tools import bundle, provision
from firmware.tools.fleet_client import DbFleet
from firmware.tools.simdevice import SimulatedBoard


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="calmcue-bench-fleet-") as tmp:
        root = Path(tmp)
        bundle.build(root / "fw", march="x64")
        fw = provision.load_bundle(root / "fw")
        size = sum(len(d) for d in fw.files.values())
        store = DbFleet(f"sqlite:///{root / 'fleet.db'}", key_path=root / "key.pem")
        ident = provision.Identity(
            site="bench", name="counter-1", label="BENCH-1", profile="esp32s3-headset",
            mqtt_url="mqtt://192.168.1.10:1883", wifi_ssid="bench",
            ota_url="http://192.168.1.10:8000")
        with SimulatedBoard(root / "flash", heapsize="96K") as board:
            t0 = time.perf_counter()
            provision.provision_esp32(board.port, ident, fw, store, log=lambda m: None)
            first = time.perf_counter() - t0
            board.wait_boots(2)
            t0 = time.perf_counter()
            again = provision.provision_esp32(board.port, ident, fw, store, reboot=False,
                                              log=lambda m: None)
            rerun = time.perf_counter() - t0

        key = fleet.load_or_create_key(root / "key.pem")
        pub = fleet.public_key_json(key)
        manifest = json.dumps({"files": {p: {"sha256": "0" * 64} for p in fw.files}}).encode()
        sig = fleet.sign(key, manifest)
        (root / "m.bin").write_bytes(manifest)
        code = (
            "import time, binascii\nfrom firmware.headset import ota\n"
            f"key = (int({pub['n']!r}, 16), {pub['e']})\n"
            f"msg = open({str(root / 'm.bin')!r}, 'rb').read()\n"
            f"sig = binascii.unhexlify({sig!r})\n"
            "t = time.ticks_us()\n"
            "for i in range(20):\n    assert ota.verify(msg, sig, key)\n"
            "print(time.ticks_diff(time.ticks_us(), t) / 20000)\n")
        verify_ms = float(mpy.run(code, heapsize="96K").stdout.strip())
    out = {
        "bundle_files": len(fw.files),
        "bundle_kb": round(size / 1024, 1),
        "provision_first_s": round(first, 2),
        "provision_kb_per_s": round(size / 1024 / first, 1),
        "provision_rerun_s": round(rerun, 2),
        "provision_rerun_files_written": again.changed,
        "ota_verify_rsa2048_ms_unix_port": round(verify_ms, 2),
        "manifest_bytes": len(manifest),
    }
    for k, v in out.items():
        print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    main()
