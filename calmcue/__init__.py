"""calmcue: on-device vocal-stress cues for front-line staff, and the companion service."""

__version__ = "0.1.0"
