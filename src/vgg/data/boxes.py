"""What a box annotation is, and what loading the boxes of a dataset found.

Coordinates: every source stores VOC numbers, 1-based inclusive pixel indices (ImageNet's
LOC CSV holds the values of its XML files, and a detection CSV made by ``xml_to_csv.py``
those of its XML files). ``Box`` holds 0-based pixel-EDGE coordinates, x1 and y1
exclusive: ``x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax``; a box covering a whole
W x H image is ``(0, 0, W, H)`` (``Box.from_voc``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

MAX_NAMED = 20      # warnings per kind of problem; further ones are logged at debug level
MAX_EXAMPLES = 10   # messages per kind kept in BoxReport.examples

KINDS = ("missing", "malformed", "wrong_size", "clipped", "degenerate", "unknown_class",
         "no_usable_box", "missing_image")


class Box(NamedTuple):
    """One object: class name and 0-based pixel-edge coordinates (x1, y1 exclusive)."""
    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)

    @classmethod
    def from_voc(cls, name: str, coords: tuple[float, float, float, float]) -> Box:
        """VOC numbers ``(xmin, ymin, xmax, ymax)``, 1-based inclusive -> pixel edges."""
        xmin, ymin, xmax, ymax = coords
        return cls(name, xmin - 1.0, ymin - 1.0, xmax, ymax)


@dataclass
class BoxReport:
    """What loading the boxes of an index found. ``images`` = ``with_boxes`` + ``missing``
    (no annotation) + ``no_usable_box`` (an annotation, but no box survived). Box counts:
    ``boxes`` kept, ``clipped`` (kept, cut to the image), ``degenerate`` / ``unknown_class``
    (dropped); ``malformed``: unreadable files, rows or objects; ``wrong_size``:
    annotations stating an image size other than the image's (their boxes are scaled from
    the stated size to the real one, see ``annotations``); ``missing_image``:
    annotations naming an image file that does not exist (indexers only); ``unmatched``:
    entries of the source naming no image of this index (not a problem: a CSV of all
    splits)."""

    source: str = ""
    images: int = 0
    with_boxes: int = 0
    boxes: int = 0
    missing: int = 0
    malformed: int = 0
    wrong_size: int = 0
    clipped: int = 0
    degenerate: int = 0
    unknown_class: int = 0
    no_usable_box: int = 0
    missing_image: int = 0
    unmatched: int = 0
    unknown_names: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        return sum(getattr(self, k) for k in KINDS)

    def summary(self) -> str:
        s = (f"boxes from {self.source}: {self.with_boxes} of {self.images} images have "
             f"boxes ({_n(self.boxes, 'box', 'boxes')})")
        parts = [_n(n, one, many) for n, one, many in (
            (self.missing, "image without annotation", "images without annotation"),
            (self.no_usable_box, "image with no usable box", "images with no usable box"),
            (self.malformed, "malformed entry", "malformed entries"),
            (self.wrong_size, "annotation stating another image size (boxes scaled)",
             "annotations stating another image size (boxes scaled)"),
            (self.clipped, "box clipped to the image", "boxes clipped to the image"),
            (self.degenerate, "box without area dropped", "boxes without area dropped"),
            (self.unknown_class, "box of an unknown class dropped",
             "boxes of unknown classes dropped"),
            (self.missing_image, "annotated image file missing",
             "annotated image files missing")) if n]
        if self.unknown_names:
            top = sorted(self.unknown_names.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            parts.append("unknown classes: " + ", ".join(f"{k} ({v})" for k, v in top))
        if self.unmatched:
            parts.append(_n(self.unmatched, "entry", "entries")
                         + " of the source for images not in this set")
        return s + ("; " + "; ".join(parts) if parts else "; no problems")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _n(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"

