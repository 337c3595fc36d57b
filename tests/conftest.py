"""Shared fixtures: real peers, started privately per test run.

- `mosquitto`: a private Mosquitto on a free port; `.stop()`, `.start()`, `.restart()`.
- `mpy`: run code under the real MicroPython unix port, `mpy(code, heapsize="64K")`.
- `pg_url`: a private PostgreSQL server (session-scoped), SQLAlchemy URL.
- `ravdess`: the shared RAVDESS folder; tests that need it skip with the reason when absent.
- `host_build`, `headset_wav`: the headset firmware built for the unix port, and its demo audio;
  `host_rom`: that build as a ROMFS image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from calmcue import mpy as mpy_runner
from calmcue.broker import Mosquitto

REPO = Path(__file__).resolve().parent.parent
RAVDESS = Path(os.environ.get("CALMCUE_RAVDESS", REPO.parent / "shared" / "data" / "ravdess"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(workdir=tmp_path / "mqtt")
    broker.workdir.mkdir()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def host_build(tmp_path_factory) -> Path:
    """The headset firmware compiled for the unix port, as the device loads it (compiled, not
    source)."""
    from firmware.tools import bundle

    return bundle.compile_host(tmp_path_factory.mktemp("fw-host-build"))


@pytest.fixture(scope="session")
def host_rom(host_build, tmp_path_factory) -> Path:
    """host_build as a ROMFS image (firmware, host fakes, model; not main.py), as `make firmware`
    makes the device's: run it with fw_harness's rom= (mapped outside the counted heap)."""
    from firmware.tools import bundle

    return bundle.build_romfs(host_build, tmp_path_factory.mktemp("fw-host-rom") / "host.romfs")


@pytest.fixture(scope="session")
def headset_wav(tmp_path_factory) -> Path:
    """The demo conversation as a headset hears it (customer 25 dB below the wearer)."""
    from firmware.tools.bench_headset import headset_rendition

    return headset_rendition(tmp_path_factory.mktemp("fw-audio") / "headset_demo.wav")


@pytest.fixture
def mpy():
    """Call as mpy(code, heapsize="64K", ...) -> CompletedProcess; see calmcue.mpy.run."""
    return mpy_runner.run


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("CALMCUE_TEST_PG_URL")
    if url:
        yield url
        return
    from harness_pg import PrivatePostgres

    server = PrivatePostgres().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ravdess() -> Path:
    manifest = RAVDESS / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"RAVDESS not found at {RAVDESS} (set CALMCUE_RAVDESS); it is read, never copied")
    return RAVDESS


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, with the flags the screenshots use
    (companion/screens.py); one per test module."""
    from playwright.sync_api import sync_playwright

    from companion.screens import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (make test does this)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()
