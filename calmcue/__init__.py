"""calmcue: on-device vocal-stress cues for front-line staff, and the companion service."""

from calmcue.shared import __version__

__all__ = ["__version__"]
