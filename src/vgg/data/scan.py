"""Finding image files. Every real folder is walked once. A symbolic link to a folder is
followed unless it points at a folder already walked or at one of its own ancestors (a
cycle): that link is skipped with one warning naming it. Symbolic links to files are
images like any other. Files are images by their extension (``IMAGE_EXTENSIONS``) or, with
any other extension, by their first bytes; hidden files and folders are ignored; the other
files are named in one summary warning per dataset (XML files beside images with the same
stem are annotations, not reported).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .decode import has_image_extension, sniff_image_format

log = logging.getLogger(__name__)

__all__ = ["FileScan", "is_image_file", "list_images", "name_paths", "scan_images",
           "subfolders", "warn_scan"]


def is_image_file(path: Path) -> bool:
    """By the name alone: a known image extension and not hidden."""
    return has_image_extension(path) and not path.name.startswith(".")


@dataclass
class FileScan:
    """What ``scan_images`` found: ``images[k]`` under ``tops[k]`` (walk order), files that
    are not images, and ``skipped`` (path, why) for symbolic links not followed, broken
    links and unreadable folders; ``sidecar_xml`` counts XML files beside an image of the
    same stem."""

    images: list[list[Path]]
    not_images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    sidecar_xml: int = 0


def _dir_key(d: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(d)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def scan_images(tops: Sequence[Path], recursive: bool = True) -> FileScan:
    """Image files under each folder of ``tops``: sorted, a folder's files before its
    sub-folders'; each real folder walked once over all ``tops`` (symbolic links to
    folders are followed after the real folders, unless they lead to a folder already
    walked or to an ancestor); hidden entries ignored; files with an unknown extension
    sniffed. Logs nothing: callers report ``not_images`` and ``skipped``."""
    scan = FileScan([[] for _ in tops])
    visited: dict[tuple[int, int], Path] = {}
    deferred: list[tuple[int, Path, tuple[tuple[int, int], ...]]] = []

    def key_of(p: Path) -> tuple[int, int] | None:
        try:
            st = os.stat(p)
        except OSError as e:
            scan.skipped.append((p, f"cannot read ({e.strerror or e})"))
            return None
        return st.st_dev, st.st_ino

    def walk(k: int, d: Path, chain: tuple[tuple[int, int], ...]) -> None:
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            scan.skipped.append((d, f"cannot read folder ({e.strerror or e})"))
            return
        files: list[Path] = []
        dirs: list[os.DirEntry] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    if not recursive:
                        continue
                    if e.is_symlink():
                        deferred.append((k, Path(e.path), chain))
                    else:
                        dirs.append(e)
                elif e.is_file():
                    files.append(Path(e.path))
                elif e.is_symlink():
                    scan.skipped.append((Path(e.path), "broken symbolic link"))
            except OSError as err:
                scan.skipped.append((Path(e.path), f"cannot read ({err.strerror or err})"))
        images, xmls = [], []
        for f in files:
            if has_image_extension(f):
                images.append(f)
            elif f.suffix.lower() == ".xml":
                xmls.append(f)
            elif sniff_image_format(f) is not None:
                images.append(f)
            else:
                scan.not_images.append(f)
        stems = {f.stem for f in images}
        for x in xmls:
            if x.stem in stems:
                scan.sidecar_xml += 1
            else:
                scan.not_images.append(x)
        scan.images[k].extend(images)
        for e in dirs:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as err:
                scan.skipped.append((Path(e.path), f"cannot read ({err.strerror or err})"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:  # a bind mount or a hard-linked folder
                scan.skipped.append((Path(e.path), f"the same folder as {visited[key]}, "
                                                   "already walked: not followed"))
                continue
            visited[key] = Path(e.path)
            walk(k, Path(e.path), chain + (key,))

    for k, top in enumerate(tops):
        key = key_of(top)
        if key is None:
            continue
        if key in visited:
            scan.skipped.append((top, f"the same folder as {visited[key]}, already walked: "
                                      "not followed"))
            continue
        visited[key] = top
        # The top's ancestors count as its chain: a link back to any of them is a cycle.
        above = tuple(k2 for k2 in (_dir_key(d) for d in Path(os.path.realpath(top)).parents)
                      if k2 is not None)
        walk(k, top, above + (key,))
    while deferred:
        k, link, chain = deferred.pop(0)
        key = key_of(link)
        if key is None:
            continue
        target = os.path.realpath(link)
        if key in chain:
            scan.skipped.append((link, f"symbolic link to {target}, a folder that contains "
                                       "it (a cycle): not followed"))
        elif key in visited:
            scan.skipped.append((link, f"symbolic link to {target}, already walked as "
                                       f"{visited[key]}: not followed"))
        else:
            visited[key] = link
            walk(k, link, chain + (key,))
    return scan


def name_paths(paths: Sequence[Path], root: Path, n: int = 5) -> str:
    """``a.jpg, b/c.png and 3 more``: the first ``n`` paths, relative to ``root``."""
    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(root))
        except ValueError:
            return str(p)
    more = f" and {len(paths) - n} more" if len(paths) > n else ""
    return ", ".join(rel(p) for p in paths[:n]) + more


def warn_scan(scan: FileScan, root: Path) -> None:
    """One warning per symbolic link not followed; one summary per kind of skipped file."""
    for p, why in scan.skipped:
        if why.startswith(("symbolic link", "the same folder")):
            log.warning("%s: skipping %s: %s", root, p, why)
    other = [(p, why) for p, why in scan.skipped
             if not why.startswith(("symbolic link", "the same folder"))]
    if scan.not_images:
        n = len(scan.not_images)
        log.warning("%s: skipped %d file%s that %s not images: %s", root, n,
                    "s" if n > 1 else "", "are" if n > 1 else "is",
                    name_paths(scan.not_images, root))
    if other:
        log.warning("%s: skipped %d unreadable entr%s: %s", root, len(other),
                    "ies" if len(other) > 1 else "y",
                    "; ".join(f"{name_paths([p], root)} ({why})" for p, why in other[:5])
                    + (f" and {len(other) - 5} more" if len(other) > 5 else ""))


def list_images(paths: Iterable[str | os.PathLike[str]]
                ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The images among files and folders given by a user: files in the order given,
    folders expanded recursively (as ``scan_images``: sorted, symbolic-link cycles cut,
    hidden entries ignored). Returns ``(images, skipped)`` where ``skipped`` holds
    ``(path, why)``: not found, broken link, not an image, symbolic link not followed,
    unreadable. A file with an image extension is listed without being opened (a broken
    one fails when decoded)."""
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            scan = scan_images([p])
            images.extend(scan.images[0])
            skipped.extend((f, "not an image (unknown extension, no image signature)")
                           for f in scan.not_images)
            skipped.extend(scan.skipped)
        elif p.is_file():
            if has_image_extension(p) or sniff_image_format(p) is not None:
                images.append(p)
            else:
                skipped.append((p, "not an image (unknown extension, no image signature)"))
        elif p.is_symlink():
            skipped.append((p, "broken symbolic link"))
        else:
            skipped.append((p, "not found"))
    return images, skipped


def subfolders(d: Path) -> list[str]:
    """The names of the folders in ``d``, sorted, hidden ones left out."""
    return sorted(e.name for e in d.iterdir() if e.is_dir() and not e.name.startswith("."))
