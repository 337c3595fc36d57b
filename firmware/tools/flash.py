"""`calmcue device flash`: write the MicroPython firmware image to a board with esptool.

Everything that can be checked without the board is checked first: the port exists, and the
image is an ESP image for this board's chip, read from its own header (magic 0xE9 at the
bootloader offset, chip id in the extended header). Then esptool reports which chip answers on
the port; only when it is the board's chip is the image written.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.tools.devicelink import DeviceError, check_port

ESP_IMAGE_MAGIC = 0xE9


@dataclass(frozen=True)
class Board:
    chip: str  # esptool's chip argument
    name: str  # as esptool names the chip it finds
    image_chip_id: int  # esp_image_header_t.chip_id
    bootloader_offset: int  # where the combined image's bootloader sits
    download: str  # where IT gets the right MicroPython image


BOARDS = {
    "esp32s3": Board("esp32s3", "ESP32-S3", 9, 0x0,
                     "https://micropython.org/download/ESP32_GENERIC_S3/"),
    "esp32": Board("esp32", "ESP32", 0, 0x1000, "https://micropython.org/download/ESP32_GENERIC/"),
}
# chip ids of other ESP chips, to name what an image was built for
_CHIP_BY_ID = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2",
               13: "ESP32-C6", 16: "ESP32-H2", 18: "ESP32-P4"}


class FlashError(DeviceError):
    pass


def _chip_id_at(data: bytes, offset: int) -> int | None:
    """chip_id of an ESP image header at `offset`, or None when there is no image there."""
    if len(data) < offset + 24 or data[offset] != ESP_IMAGE_MAGIC:
        return None
    return int(struct.unpack_from("<H", data, offset + 12)[0])


def check_image(image: Path, board_key: str) -> None:
    """Refuse an image that is not a full MicroPython image for this board, saying why."""
    board = BOARDS[board_key]
    if not image.is_file():
        raise FlashError(f"image {image} not found; download the .bin from {board.download}")
    data = image.read_bytes()[: 0x1000 + 64]
    here = _chip_id_at(data, board.bootloader_offset)
    if here == board.image_chip_id:
        return
    for other in BOARDS.values():
        found = _chip_id_at(data, other.bootloader_offset)
        if found is not None and other is not board:
            built_for = _CHIP_BY_ID.get(found, f"chip id {found}")
            raise FlashError(
                f"{image.name} is an image for {built_for} (bootloader at "
                f"{other.bootloader_offset:#x}), but --board {board_key} is an {board.name}; "
                f"download the right one from {board.download}")
    if here is not None:
        built_for = _CHIP_BY_ID.get(here, f"chip id {here}")
        raise FlashError(
            f"{image.name} is built for {built_for}, but --board {board_key} is an {board.name}; "
            f"download the right one from {board.download}")
    raise FlashError(
        f"{image.name} is not an ESP firmware image (no 0xE9 header at {board.bootloader_offset:#x}); "
        f"use the full .bin from {board.download}, not an .elf, .uf2 or app-only file")


IMAGE_DIR = Path("var/firmware")


def find_image(board_key: str, folder: Path = IMAGE_DIR) -> Path:
    """Without --image: the one image in var/firmware/ whose header is for this board."""
    board = BOARDS[board_key]
    found = []
    for f in sorted(folder.glob("*.bin")) if folder.is_dir() else []:
        try:
            check_image(f, board_key)
        except FlashError:
            continue
        found.append(f)
    if len(found) == 1:
        return found[0]
    if not found:
        raise FlashError(
            f"no --image given and no {board.name} image in {folder}/; download the .bin from "
            f"{board.download} into {folder}/ or pass --image FILE")
    raise FlashError(
        f"several {board.name} images in {folder}/ ({', '.join(f.name for f in found)}); "
        "choose one with --image FILE")


def detect_chip(port: str) -> str:
    """The chip name esptool reads from the board on `port`, e.g. 'ESP32-S3'."""
    from esptool.cmds import detect_chip as esptool_detect

    try:
        loader = esptool_detect(port)
    except Exception as e:  # noqa: BLE001 - esptool raises several types; all mean "no answer"
        raise FlashError(
            f"no ESP chip answered on {port} ({e}); hold BOOT while pressing RESET to enter the "
            "download mode, or check the cable") from None
    try:
        name = str(loader.CHIP_NAME)
    finally:
        try:
            loader._port.close()
        except Exception:  # noqa: BLE001
            pass
    return name


def esptool_version() -> str:
    import esptool

    return str(esptool.__version__)


def esptool_command(name: str, version: str) -> str:
    """esptool's spelling of a command: esptool 5 names them write-flash, erase-flash (the old
    names still work there, deprecated); esptool 4 (pyproject allows >= 4.7) knows only
    write_flash, erase_flash and stops with 'invalid choice' on the new ones."""
    major = int(version.split(".")[0])
    return name.replace("_", "-") if major >= 5 else name.replace("-", "_")


def flash(port: str, board_key: str, image: Path | None, *, baud: int = 460800,
          detect: Callable[[str], str] = detect_chip,
          run_esptool: Callable[[list[str]], Any] | None = None,
          version: str | None = None,
          log: Callable[[str], None] = print) -> list[list[str]]:
    """Check, then erase the whole flash and write `image`; returns the esptool runs (argument
    lists). Erasing first: a filesystem or an OTA slot left by an earlier firmware must not
    survive into a fresh one (MicroPython's own instructions erase first too)."""
    if board_key not in BOARDS:
        raise FlashError(f"unknown --board {board_key}; choose one of {', '.join(BOARDS)}")
    board = BOARDS[board_key]
    try:
        check_port(port)
    except DeviceError as e:
        raise FlashError(str(e)) from None
    image = image or find_image(board_key)
    check_image(image, board_key)
    found = detect(port)
    if found.split(" ")[0].upper() != board.name.upper():
        raise FlashError(
            f"the board on {port} is an {found}, not an {board.name}: check --board (or the port, "
            "if more than one board is plugged in)")
    version = version or esptool_version()
    common = ["--chip", board.chip, "--port", port, "--baud", str(baud)]
    runs = [common + [esptool_command("erase-flash", version)],
            common + [esptool_command("write-flash", version), hex(board.bootloader_offset),
                      str(image)]]
    log(f"erasing the {found} on {port}, then writing {image.name}")
    if run_esptool is None:
        import esptool

        def run_esptool(a: list[str]) -> Any:
            return esptool.main(a)

    for args in runs:
        try:
            run_esptool(args)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - esptool raises FatalError, OSError, exits
            raise FlashError(
                f"esptool failed while writing ({e}); the board is not usable until a flash "
                "completes: hold BOOT, press RESET, and run the same command again") from None
    return runs
