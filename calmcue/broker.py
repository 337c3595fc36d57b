"""The old import path of calmcue.shared.broker, kept for the tests; the project's own
packages import calmcue.shared.broker (tests/test_import_graph.py)."""

from calmcue.shared.broker import (
    MAX_QUEUED_MESSAGES,
    BrokerError,
    Credentials,
    Mosquitto,
    authenticated,
    durable_conf,
    free_port,
)

__all__ = [
    "MAX_QUEUED_MESSAGES", "BrokerError", "Credentials", "Mosquitto", "authenticated",
    "durable_conf", "free_port",
]
