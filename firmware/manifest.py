# ruff: noqa: F821  (include/package are given by MicroPython's manifest evaluator)
# Freeze manifest (micropython-lib style) of a custom ESP32-S3 MicroPython image with the headset's
# modules frozen into the firmware itself, built from MicroPython's source tree:
#
#     make -C ports/esp32 BOARD=ESP32_GENERIC_S3 FROZEN_MANIFEST=$CALMCUE/firmware/manifest.py
#
# The same modules as the bundle and its ROMFS image (firmware/tools/bundle.py device_sources):
# tests/test_fw_manifest.py evaluates this file and fails when a headset module is missing here,
# or named here but not on the device. Frozen code, like the image's, runs in place from flash.
# Over-the-air updates still work on such an image: the loader (/boot.py) puts the active slot's
# image (/rom) and folder before ".frozen" on sys.path, so an update's modules shadow the frozen
# ones. main.py stays a file (MicroPython runs /main.py from the filesystem), as do boot.py (the
# A/B loader) and the model file.
include("$(PORT_DIR)/boards/manifest.py")  # the port's own: _boot, inisetup, asyncio, ...
package(
    "firmware",
    files=(  # the portable core (firmware/core) and the headset app (firmware/headset)
        "__init__.py",
        "core/__init__.py",
        "core/attribution.py",
        "core/attribution_modes.py",
        "core/cue_settings.py",
        "core/cue_table.py",
        "core/events.py",
        "core/features.py",
        "core/nnrt.py",
        "core/pipeline.py",
        "core/placeholder.py",
        "core/policy.py",
        "core/store.py",
        "headset/__init__.py",
        "headset/app.py",
        "headset/config.py",
        "headset/main.py",
        "headset/modelfile.py",
        "headset/net.py",
        "headset/ota.py",
        "headset/ota_image.py",
        "headset/outputs.py",
        "headset/tls.py",
        "headset/version.py",
    ),
    base_path="..",
)
