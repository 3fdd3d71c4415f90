"""Human-readable class names for ids such as wnids, from ``LOC_synset_mapping.txt`` /
``synset_words.txt`` / ``class_names.txt`` ("n01440764 tench, Tinca tinca") found next to
the data."""

from __future__ import annotations

from pathlib import Path

NAME_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "class_names.txt")


def read_class_names(path: str | Path) -> dict[str, str]:
    """``wnid name, synonyms`` per line -> {wnid: name} (the first synonym)."""
    names = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].split(",")[0].strip()
    return names


def find_class_names(*dirs: Path) -> dict[str, str] | None:
    """The names of the first name file in ``dirs`` (in order), or None."""
    for d in dirs:
        for n in NAME_FILES:
            if (d / n).is_file():
                return read_class_names(d / n)
    return None
