"""Image folders: class folders (ImageFolder, ``root/<class>/**/<image>``, with VOC XML
beside the images or in a parallel tree) and ILSVRC-2012's flat val folder labelled by
``LOC_val_solution.csv`` (which also gives boxes) or by the devkit's ground truth +
``meta.mat``. Folders are walked as ``scan`` says.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import DataError
from .annotations import attach_boxes
from .box_sources import CsvSource, XmlTree
from .class_names import find_class_names
from .decode import IMAGE_EXTENSIONS
from .index import ImageIndex
from .scan import is_image_file, name_paths, scan_images, subfolders, warn_scan

log = logging.getLogger(__name__)

__all__ = ["index_folder", "index_imagenet_val"]



def index_folder(root: str | Path, classes: list[str] | None = None,
                 annotations: str | Path | None = None) -> ImageIndex:
    """ImageFolder layout ``root/<class>/**/<image>``; classes sorted (or given: then every
    folder must be one of them). Boxes from VOC XML beside the images or in the parallel
    tree ``annotations``. Raises DataError naming ``root`` when missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    dirs = subfolders(root)
    if not dirs:
        raise DataError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    if classes is None:
        classes = dirs
    else:
        unknown = sorted(set(dirs) - set(classes))
        if unknown:
            raise DataError(f"{root} has class folders not among the {len(classes)} known "
                            f"classes: {', '.join(unknown[:5])}")
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    if loose:
        log.warning("%s: %d image%s directly in the folder belong%s to no class folder: "
                    "ignored (%s)", root, len(loose), "s" if len(loose) > 1 else "",
                    "" if len(loose) > 1 else "s", name_paths(sorted(loose), root))
    scan = scan_images([root / d for d in dirs])
    warn_scan(scan, root)
    pos = {c: i for i, c in enumerate(classes)}
    samples = [(p, pos[d]) for d, imgs in zip(dirs, scan.images) for p in imgs]
    if not samples:
        other = (f"; {len(scan.not_images)} other files, e.g. "
                 f"{name_paths(scan.not_images, root, 3)}" if scan.not_images else "")
        raise DataError(f"no image files under {root} (extensions: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}, or image content{other})")
    index = ImageIndex(samples, list(classes), root,
                       find_class_names(root, root.parent), meta={"layout": "folders"})
    if annotations is not None or scan.sidecar_xml:
        attach_boxes(index, XmlTree(None if annotations is None else Path(annotations),
                                    root, "", beside=True))
    return index


def _read_meta_mat(path: Path) -> dict[int, tuple[str, str]]:
    """devkit meta.mat -> {ILSVRC2012_ID: (wnid, words)} for the leaf synsets."""
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a test dependency
        raise DataError(f"reading {path} needs scipy (pip install scipy)") from None
    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read devkit meta {path}: {e}") from None
    out = {}
    for s in np.atleast_1d(synsets):
        if int(s["num_children"]) == 0:
            out[int(s["ILSVRC2012_ID"])] = (str(s["WNID"]), str(s["words"]))
    return out


def index_imagenet_val(val_dir: str | Path, *, classes: list[str] | None = None,
                       solution_csv: str | Path | None = None,
                       ground_truth: str | Path | None = None, meta: str | Path | None = None,
                       class_names: dict[str, str] | None = None) -> ImageIndex:
    """ILSVRC-2012 flat val (``ILSVRC2012_val_*.JPEG``) labelled by ``LOC_val_solution.csv``
    (its first wnid per image; its boxes become ``boxes``) or by the devkit ground truth
    (1-based ILSVRC2012_IDs in file order) + ``meta.mat``. ``classes`` (the training wnids,
    sorted) fix the label numbering; without them the wnids found are sorted."""
    val_dir = Path(val_dir)
    scan = scan_images([val_dir], recursive=False)
    warn_scan(scan, val_dir)
    files = scan.images[0]
    if not files:
        raise DataError(f"no images in {val_dir}")
    source = None
    if solution_csv is not None:
        source = CsvSource(solution_csv, "loc")
        wnid = {k: a.objects[0].name for k, a in source.entries.items()
                if a.objects and a.objects[0].name}
        missing = [p.name for p in files if p.stem not in wnid]
        if missing:
            raise DataError(f"{solution_csv} has no label for {len(missing)} images "
                            f"of {val_dir}, e.g. {missing[0]}")
        wnids = [wnid[p.stem] for p in files]
        label_file = str(solution_csv)
    elif ground_truth is not None:
        if meta is None:
            raise DataError(f"{ground_truth} needs the devkit's meta.mat (ILSVRC2012_ID -> "
                            "wnid)")
        id_map = _read_meta_mat(Path(meta))
        ids = [int(t) for t in Path(ground_truth).read_text().split()]
        if len(ids) != len(files):
            raise DataError(f"{ground_truth} has {len(ids)} labels but {val_dir} has "
                            f"{len(files)} images")
        try:
            wnids = [id_map[i][0] for i in ids]
        except KeyError as e:
            raise DataError(f"{ground_truth}: ILSVRC2012_ID {e} not in {meta}") from None
        if class_names is None:
            class_names = {w: words.split(",")[0].strip() for w, words in id_map.values()}
        label_file = str(ground_truth)
    else:
        raise DataError(f"{val_dir} is a flat folder of images but no labels were found "
                        "(LOC_val_solution.csv, or the devkit's "
                        "ILSVRC2012_validation_ground_truth.txt + meta.mat)")
    if classes is None:
        classes = sorted(set(wnids))
    pos = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(wnids) - set(pos))
    if unknown:
        raise DataError(f"{label_file} names classes not in the training set: {unknown[:5]}")
    samples = [(p, pos[w]) for p, w in zip(files, wnids)]
    index = ImageIndex(samples, list(classes), val_dir, class_names,
                       meta={"layout": "imagenet-flat-val", "labels": label_file})
    if source is not None:
        attach_boxes(index, source)
    return index
