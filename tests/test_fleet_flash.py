"""Flashing checks that need no board: port, image header (magic + chip id) and the chip that
answers. esptool's chip detection is the radio/hardware edge, replaced by a recording fake."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from firmware.tools import flash


def esp_image(path: Path, chip_id: int, offset: int) -> Path:
    header = bytes([0xE9, 3, 2, 0x4F]) + struct.pack("<I", 0x403C98D0)
    ext = bytes([0xEE, 0, 0, 0]) + struct.pack("<H", chip_id) + bytes(10)
    path.write_bytes(b"\xff" * offset + header + ext + bytes(1024))
    return path


@pytest.fixture
def port(tmp_path: Path) -> str:
    p = tmp_path / "ttyACM0"
    p.write_text("")
    return str(p)


class FakeEsptool:
    """esptool's command line as each major version parses it: 4.x knows only write_flash and
    erase_flash ('invalid choice' otherwise, exit 2); 5.x names them write-flash, erase-flash
    and still takes the old names. Records the runs."""

    def __init__(self, version: str):
        self.major = int(version.split(".")[0])
        self.ran: list[list[str]] = []

    def __call__(self, args: list[str]) -> None:
        known = {"write_flash", "erase_flash"} | (
            {"write-flash", "erase-flash"} if self.major >= 5 else set())
        cmd = next(a for a in args[6:] if not a.startswith("-"))
        if cmd not in known:
            raise SystemExit(f"esptool: error: argument command: invalid choice: '{cmd}'")
        self.ran.append(args)


@pytest.mark.parametrize("version", ["4.7.0", "4.8.1", "5.0.0", "5.6.0"])
def test_good_image_is_erased_and_written_with_each_esptool_allowed(tmp_path, port, version):
    """pyproject allows esptool >= 4.7; `write-flash` alone (before) failed on every 4.x."""
    image = esp_image(tmp_path / "ESP32_GENERIC_S3.bin", 9, 0)
    esptool = FakeEsptool(version)
    runs = flash.flash(port, "esp32s3", image, detect=lambda p: "ESP32-S3",
                       run_esptool=esptool, version=version, log=lambda m: None)
    assert esptool.ran == runs and len(runs) == 2
    for args in runs:
        assert args[:4] == ["--chip", "esp32s3", "--port", port]
    sep = "-" if version[0] == "5" else "_"
    assert runs[0][-1] == f"erase{sep}flash"  # erased first: nothing of an old firmware stays
    assert runs[1][-3:] == [f"write{sep}flash", "0x0", str(image)]


def test_installed_esptool_takes_the_commands(tmp_path):
    """The installed esptool's own parser accepts what flash() passes (no board needed: it
    fails later, opening the port, not on the command line)."""
    import subprocess
    import sys

    version = flash.esptool_version()
    for name in ("erase-flash", "write-flash"):
        cmd = flash.esptool_command(name, version)
        out = subprocess.run([sys.executable, "-m", "esptool", cmd, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_missing_port_says_what_to_do(tmp_path):
    image = esp_image(tmp_path / "s3.bin", 9, 0)
    with pytest.raises(flash.FlashError, match="does not exist; .*(serial ports|plug the board)"):
        flash.flash(str(tmp_path / "ttyUSB9"), "esp32s3", image, detect=lambda p: "ESP32-S3")


def test_wrong_chip_on_the_port_is_refused(tmp_path, port):
    image = esp_image(tmp_path / "s3.bin", 9, 0)
    ran = []
    with pytest.raises(flash.FlashError, match="the board on .* is an ESP32-C3, not an ESP32-S3"):
        flash.flash(port, "esp32s3", image, detect=lambda p: "ESP32-C3", run_esptool=ran.append)
    assert ran == []


@pytest.mark.parametrize(
    ("chip_id", "offset", "message"),
    [
        (0, 0x1000, "is an image for ESP32 \\(bootloader at 0x1000\\)"),
        (5, 0, "is built for ESP32-C3"),
        (None, 0, "is not an ESP firmware image"),
    ],
)
def test_image_that_does_not_match_the_board_is_refused(tmp_path, port, chip_id, offset, message):
    if chip_id is None:
        image = tmp_path / "firmware.uf2"
        image.write_bytes(b"UF2\n" + bytes(5000))
    else:
        image = esp_image(tmp_path / "other.bin", chip_id, offset)
    detected = []
    with pytest.raises(flash.FlashError, match=message):
        flash.flash(port, "esp32s3", image, detect=detected.append)
    assert detected == []  # refused before talking to the board


def test_no_chip_answering_is_explained(tmp_path, port, monkeypatch):
    import esptool.cmds

    def no_answer(p):
        raise OSError("Failed to connect to ESP32-S3: No serial data received.")

    monkeypatch.setattr(esptool.cmds, "detect_chip", no_answer)
    with pytest.raises(flash.FlashError, match="hold BOOT while pressing RESET"):
        flash.detect_chip(port)


def test_failure_while_writing_says_how_to_recover(tmp_path, port):
    image = esp_image(tmp_path / "s3.bin", 9, 0)

    def esptool_fails(args):
        raise OSError("Serial port closed unexpectedly")

    with pytest.raises(flash.FlashError, match="hold BOOT, press RESET, and run the same command"):
        flash.flash(port, "esp32s3", image, detect=lambda p: "ESP32-S3",
                    run_esptool=esptool_fails, log=lambda m: None)


def test_without_image_the_boards_image_is_found(tmp_path):
    folder = tmp_path / "var" / "firmware"
    folder.mkdir(parents=True)
    with pytest.raises(flash.FlashError, match="no --image given and no ESP32-S3 image"):
        flash.find_image("esp32s3", folder)
    esp_image(folder / "ESP32_GENERIC.bin", 0, 0x1000)  # another board's image is ignored
    s3 = esp_image(folder / "ESP32_GENERIC_S3-v1.26.bin", 9, 0)
    assert flash.find_image("esp32s3", folder) == s3
    esp_image(folder / "ESP32_GENERIC_S3-v1.27.bin", 9, 0)
    with pytest.raises(flash.FlashError, match="several ESP32-S3 images"):
        flash.find_image("esp32s3", folder)
