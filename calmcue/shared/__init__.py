"""What every calmcue package may use and that imports none of them back: the version, the
MicroPython runner (`mpy`), the Mosquitto runner (`broker`) and the broker's accounts and
access rules (`broker_access`). tests/test_import_graph.py keeps it at the bottom."""

__version__ = "0.1.0"
