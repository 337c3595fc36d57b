"""`make lint` step: type-check the headset's device modules against MicroPython for the ESP32
(PyPI `micropython-esp32-stubs` with its `micropython-stdlib-stubs`), not against CPython.

The stub packages install loose .pyi files into site-packages, which mypy will not take from
there; they are linked into a temporary folder used as MYPYPATH, and MicroPython's reduced stdlib
replaces CPython's typeshed (--custom-typeshed-dir). So `time.ticks_ms`, `machine.I2S`,
`micropython.const` or `ssl.SSLContext` are checked as the device has them.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from firmware.tools.bundle import device_sources

REPO = Path(__file__).resolve().parents[2]


# Device modules whose unannotated function bodies are checked too (MicroPython code is mostly
# unannotated, so without this mypy checks only calls into it). Other areas opt in by adding
# theirs once they pass.
STRICT = (
    "firmware.core.pipeline",
    "firmware.core.store",
    "firmware.headset.app",
    "firmware.headset.config",
    "firmware.headset.main",
    "firmware.headset.modelfile",
    "firmware.headset.net",
    "firmware.headset.outputs",
    "firmware.headset.version",
)


class LintError(RuntimeError):
    pass


def _stub_files(dist: str) -> list[Path]:
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise LintError(
            f"{dist} is not installed; install it with 'pip install -e .[lint]' (make lint does this)"
        ) from None
    return [Path(str(d.locate_file(f))) for f in d.files or [] if str(f).endswith(".pyi")]


def stub_tree(dest: Path) -> tuple[Path, Path]:
    """Link the ESP32 stubs into dest/path and MicroPython's stdlib into dest/shed; returns both."""
    path = dest / "path"
    shed = dest / "shed"
    site = None
    for f in _stub_files("micropython-esp32-stubs") + _stub_files("micropython-stdlib-stubs"):
        parts = f.parts
        idx = max(i for i, p in enumerate(parts) if p == "site-packages")
        site = Path(*parts[: idx + 1])
        rel = Path(*parts[idx + 1 :])
        target = (shed / rel) if rel.parts[0] == "stdlib" else (path / rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        if rel == Path("micropython.pyi"):
            # Portable modules fall back to `def const(x): return x` on CPython; typed as the
            # same signature here so mypy accepts both branches of that import.
            text = f.read_text().replace(
                "def const(expr: Const_T, /) -> Const_T:", "def const(x: Any) -> Any:"
            )
            target.write_text(
                text if "from typing import" in text else "from typing import Any\n" + text
            )
        else:
            os.symlink(f, target)
    if site is None:
        raise LintError("the MicroPython stub packages contain no .pyi files")
    # mypy needs mypy_extensions from its own typeshed whatever the stdlib is.
    import mypy

    ext = Path(mypy.__file__).parent / "typeshed" / "stubs" / "mypy-extensions"
    if not (shed / "stubs" / "mypy-extensions").exists():
        (shed / "stubs").mkdir(parents=True, exist_ok=True)
        os.symlink(ext, shed / "stubs" / "mypy-extensions")
    versions = site / "stdlib" / "VERSIONS"
    if versions.exists() and not (shed / "stdlib" / "VERSIONS").exists():
        os.symlink(versions, shed / "stdlib" / "VERSIONS")
    return path, shed


def device_modules() -> list[Path]:
    return [src for src, stem in device_sources() if stem.startswith("firmware/")]


def main(argv: list[str] | None = None) -> int:
    targets = [Path(a).resolve() for a in argv] if argv else device_modules()
    files = [str(p.relative_to(REPO)) for p in targets]
    with tempfile.TemporaryDirectory(prefix="calmcue-stubs-") as tmp:
        try:
            path, shed = stub_tree(Path(tmp))
        except LintError as exc:
            print(f"lint_device: {exc}", file=sys.stderr)
            return 1
        ini = Path(tmp) / "mypy.ini"
        # Errors inside the third-party stubs themselves are not ours to fix.
        stub_modules = sorted(
            {p.relative_to(path).parts[0].removesuffix(".pyi") for p in path.rglob("*.pyi")}
        )
        ini.write_text(
            "[mypy]\n\n"
            f"[mypy-{','.join(stub_modules)},_mpy_shed.*]\nignore_errors = True\n\n"
            # Bodies of unannotated functions are checked in the modules listed in STRICT.
            f"[mypy-{','.join(STRICT)}]\ncheck_untyped_defs = True\n\n"
            # nnrt's CPython fallback is a `class micropython` standing in for the module.
            "[mypy-firmware.core.nnrt]\ndisable_error_code = no-redef\n"
        )
        env = dict(os.environ, MYPYPATH=f"{path}{os.pathsep}{REPO}")
        cmd = [
            sys.executable,
            "-m",
            "mypy",
            "--custom-typeshed-dir",
            str(shed),
            "--no-site-packages",
            "--python-version",
            "3.11",
            "--follow-imports",
            "silent",
            "--ignore-missing-imports",
            "--no-warn-unused-ignores",
            "--disable-error-code",
            "import-untyped",
            "--config-file",
            str(ini),
            *files,
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=env)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
