"""The one reader of the ``.npz`` files vgg takes in (saved posteriors, saved boxes,
features): every way such a file can be wrong is one :class:`~vgg.errors.DataError`
naming the file and the problem, never a traceback, and nothing in it is unpickled.

A spec names the arrays a kind of file must (or may) hold, each with its dtype kinds and
its shape; a shape is a tuple of ``int`` (that size), ``None`` (any size) or a letter,
whose size must be the same wherever it appears (``"N"``: one row per image)::

    read_npz(path, {"X": Array("f", ("N", "D")), "ids": Array("U", ("N",)),
                    "meta": Array("U", ()), "ignore": Array("b", ("N", "K"), False)},
             "features")
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

# numpy dtype kinds, as the messages name them
_KINDS = {"f": "float", "i": "integer", "u": "unsigned integer", "b": "boolean",
          "U": "text", "S": "bytes"}


@dataclass(frozen=True)
class Array:
    """One array of a spec: dtype kinds it may have (``"f"``, ``"iu"``, ``"U"``, ``"b"``...),
    its shape (see the module doc) and whether the file must hold it."""

    kinds: str
    shape: tuple[int | str | None, ...]
    required: bool = True

    def describe(self) -> str:
        kinds = " or ".join(_KINDS.get(k, k) for k in self.kinds)
        if not self.shape:
            return f"a {kinds} scalar"
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"a {len(self.shape)}-D {kinds} array ({dims})"


def _short(e: BaseException) -> str:
    """An exception's message on one line, at most 160 characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= 160 else text[:157] + "..."


def _dims(a: np.ndarray) -> str:
    return f"{a.ndim}-D {a.dtype} array of shape {a.shape}" if a.ndim else f"{a.dtype} scalar"


def read_npz(path: str | os.PathLike[str], spec: dict[str, Array], what: str
             ) -> dict[str, np.ndarray]:
    """Every array of ``path`` (a ``.npz`` written by ``np.savez``), checked against
    ``spec``. ``what`` names the kind of file in the messages ("posteriors", "boxes",
    "features"). Arrays the spec does not name are returned unchecked."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a {what} file (.npz)")
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise DataError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    if size == 0:
        raise DataError(f"{what} file {path} is empty (0 bytes)")
    if magic != b"PK\x03\x04":  # an .npz is a zip archive
        raise DataError(f"{path} is not a {what} file: not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(f"{path} holds Python objects (pickled), which vgg does not "
                            f"load; it is not a {what} file") from None
        raise DataError(f"{what} file {path} is corrupt ({_short(e)})") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, KeyError) as e:
        raise DataError(f"{what} file {path} is truncated or corrupt "
                        f"({type(e).__name__}: {_short(e)})") from None
    except Exception as e:  # noqa: BLE001 - numpy parses a damaged .npy header with
        # ast/tokenize (SyntaxError, TokenError, ...): whatever it raises, the file is bad
        raise DataError(f"{what} file {path} is corrupt ({type(e).__name__}: "
                        f"{_short(e)})") from None
    check_arrays(arrays, spec, path, what)
    return arrays


def check_arrays(arrays: dict[str, np.ndarray], spec: dict[str, Array], path: object,
                 what: str) -> None:
    """Check arrays against a spec (see :func:`read_npz`); messages name ``path``."""
    missing = [k for k, s in spec.items() if s.required and k not in arrays]
    if missing:
        raise DataError(f"{path} is not a vgg {what} file (no "
                        f"{', '.join(repr(k) for k in missing)} array"
                        f"{'s' if len(missing) > 1 else ''})")
    name = f"{what} file {path}"
    sizes: dict[str, tuple[str, int]] = {}
    for key, s in spec.items():
        if key not in arrays:
            continue
        a = arrays[key]
        if a.dtype.kind not in s.kinds or a.ndim != len(s.shape):
            raise DataError(f"{name}: {key!r} is a {_dims(a)}, expected {s.describe()}")
        for axis, (want, got) in enumerate(zip(s.shape, a.shape)):
            if isinstance(want, int) and got != want:
                raise DataError(f"{name}: {key!r} has shape {a.shape}, expected size {want} "
                                f"on axis {axis}")
            if isinstance(want, str):
                first = sizes.setdefault(want, (key, got))
                if first[1] != got:
                    raise DataError(f"{name}: {key!r} has {got} along {want} (shape "
                                    f"{a.shape}) but {first[0]!r} has {first[1]}; the "
                                    f"arrays do not fit together")


def json_meta(arrays: dict[str, np.ndarray], name: object, key: str = "meta"
              ) -> dict[str, Any]:
    """The JSON object stored as a text scalar under ``key`` ({} when absent)."""
    if key not in arrays:
        return {}
    try:
        meta = json.loads(str(arrays[key]))
    except ValueError as e:
        raise DataError(f"{name}: {key!r} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{name}: {key!r} is not a JSON object")
    return meta
