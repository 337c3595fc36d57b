# Firmware version of the headset bundle; the bundle manifest and telemetry report it.
FIRMWARE = "0.1.0"
