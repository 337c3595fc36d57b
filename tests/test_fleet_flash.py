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


def test_good_image_is_written_to_the_right_chip(tmp_path, port):
    image = esp_image(tmp_path / "ESP32_GENERIC_S3.bin", 9, 0)
    ran = []
    args = flash.flash(port, "esp32s3", image, detect=lambda p: "ESP32-S3",
                       run_esptool=ran.append, log=lambda m: None)
    assert ran == [args]
    assert args[:4] == ["--chip", "esp32s3", "--port", port]
    assert args[-3:] == ["write-flash", "0x0", str(image)]


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
