"""The Raspberry Pi install (`pip install 'calmcue[pi]'`, what firmware/pi/install.sh runs) holds
what the agent needs and nothing of the companion's stack (issue 16 item 12).

One real install into a fresh venv from a copy of the project's tracked files (pip's cache and
the package registry, as install.sh would; ~30 s here), then from that venv: the resolved
closure has no web server, database or signing distribution, docs/agent.md lists exactly that
closure, the agent scores a recording and reports to a real Mosquitto without importing any
companion code, and a companion command says which extra to install instead of a traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from agent_support import Subscriber, agent_config, wait_until

REPO = Path(__file__).resolve().parent.parent
ENROLMENT = REPO / "calmcue" / "data" / "demo_staff_enrolment.wav"  # 10 s, 16 kHz

# Distributions the Pi must never pull in (the companion's server, database and web stack).
FORBIDDEN = {
    "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "jinja2", "pydantic",
    "pydantic-settings", "python-multipart", "argon2-cffi", "itsdangerous", "httpx",
    "swagger-ui-bundle-v2", "cryptography", "scipy", "psycopg", "scikit-learn", "onnx",
}  # fmt: skip
NEEDED = {"calmcue", "numpy", "onnxruntime", "paho-mqtt", "gpiozero", "sounddevice", "soundfile"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(venv: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def documented_closure() -> set[str]:
    """The distributions docs/agent.md lists between its pi-closure markers."""
    text = (REPO / "docs" / "agent.md").read_text()
    block = text.split("<!-- pi-closure -->")[1].split("<!-- /pi-closure -->")[0]
    rows = [line.split("|")[1].strip(" `") for line in block.splitlines()
            if line.startswith("| ") and not line.startswith("| distribution")]
    return {norm(r) for r in rows if r and not r.startswith("-")}


def test_pi_install_has_the_agent_and_no_companion_stack(tmp_path, mosquitto):
    t0 = time.monotonic()
    # The project as a release or a checkout gives it to install.sh: its tracked files only
    # (an install from the worktree itself would leave build/ and *.egg-info in it).
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    report = tmp_path / "report.json"
    inst = pip(venv, "install", "--quiet", "--report", str(report), f"{src}[pi]", timeout=240)
    assert inst.returncode == 0, inst.stderr[-3000:]
    closure = {norm(i["metadata"]["name"]): i["metadata"]["version"]
               for i in json.loads(report.read_text())["install"]}  # fmt: skip
    installed = {norm(d["name"]) for d in json.loads(pip(venv, "list", "--format=json").stdout)}
    print(f"Pi closure ({len(closure)} distributions, installed in "
          f"{time.monotonic() - t0:.0f} s):", dict(sorted(closure.items())))
    assert NEEDED <= set(closure), NEEDED - set(closure)
    assert not FORBIDDEN & set(closure), FORBIDDEN & set(closure)
    assert not FORBIDDEN & installed, FORBIDDEN & installed
    # What the venv holds after the install, less pip (setuptools came with the venv and is
    # colorzero's dependency, so pip did not need to fetch it)
    assert documented_closure() == installed - {"pip"}, (
        "docs/agent.md's closure list differs from what the install holds: "
        f"{sorted((installed - {'pip'}) ^ documented_closure())}")

    calmcue = str(venv / "bin" / "calmcue")
    helped = subprocess.run([calmcue, "agent", "--help"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)  # fmt: skip
    assert helped.returncode == 0 and "--config" in helped.stdout, helped.stderr

    # The agent for real from that venv: a recording scored by the shipped ONNX model, status
    # and telemetry to a real broker; the process imports no companion module beyond the
    # argparse-only `companion.cli` that registers the `calmcue companion` subcommands.
    cfg = agent_config(tmp_path, mosquitto.port)
    (tmp_path / "agent.json").write_text(json.dumps(cfg))
    sub = Subscriber(mosquitto.port)
    try:
        code = (
            "import sys; from calmcue.cli import main; rc = main(sys.argv[1:]); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('companion', 'fastapi', 'sqlalchemy', 'pydantic', 'scipy', 'httpx') "
            "and m not in ('companion', 'companion.cli')); "
            "print('IMPORTED', bad); sys.exit(rc)"
        )
        run = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code, "agent", "--config",
             str(tmp_path / "agent.json"), "--source", f"file:{ENROLMENT}", "--fast"],
            capture_output=True, text=True, timeout=90, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        assert "IMPORTED []" in run.stdout, run.stdout[-2000:]
        assert wait_until(lambda: sub.on("/status"), 5), "no status from the agent"
        tele = wait_until(lambda: sub.on("/tele"), 5)
        assert tele, "no telemetry from the agent"
        assert json.loads(tele[-1])["model"], tele[-1]
    finally:
        sub.close()

    # A companion command without its extra: the extra to install, no traceback.
    for argv, extra in ((["companion", "serve"], "companion"), (["run"], "companion")):
        out = subprocess.run([calmcue, *argv], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)  # fmt: skip
        assert out.returncode == 2, out
        assert f"pip install 'calmcue[{extra}]'" in out.stderr and "Traceback" not in out.stderr
    elapsed = time.monotonic() - t0
    print(f"whole test: {elapsed:.0f} s")
    assert elapsed < 150, "the Pi install check is meant to stay well under a minute or two"


def test_a_command_names_the_extra_it_needs():
    from calmcue.cli import missing_extra

    def msg(module: str, command: str) -> str | None:
        return missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module),
                             command)  # fmt: skip

    assert "pip install 'calmcue[device]'" in str(msg("httpx", "device"))  # --companion URL
    assert "pip install 'calmcue[companion]'" in str(msg("sqlalchemy", "device"))  # --db URL
    assert "pip install 'calmcue[companion]'" in str(msg("uvicorn.config", "run"))
    assert "pip install 'calmcue[model]'" in str(msg("sklearn", "model"))
    assert "pip install 'calmcue[pi]'" in str(msg("gpiozero", "agent"))
    assert msg("firmware.nosuch", "agent") is None  # our own module missing: a bug, raised
