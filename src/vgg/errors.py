"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations


class VggError(Exception):
    """An error caused by the user's input (a file, a flag, a checkpoint), with a message
    that names the culprit. Anything else reaching the CLI is a bug and keeps its traceback."""

    exit_code = 2


class ConfigError(VggError):
    """A flag or config value out of range, or an inconsistent combination."""


class CheckpointError(VggError):
    """A checkpoint that cannot be read, is unsafe, or belongs to another net."""


class DataError(VggError):
    """A dataset that cannot be indexed or holds no readable image."""


class BadImageError(VggError):
    """One image file that cannot be decoded (truncated, empty, not an image, too large)."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class InputRangeError(VggError, ValueError):
    """A tensor given to the Python API whose values cannot be what the net expects (RGB
    in 0..255): 0..1 images, already-normalised images, 16-bit values, NaN or inf."""
