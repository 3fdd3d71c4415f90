"""The embedded shapes dataset, colour stats and the `vgg data` CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg.cli import main
from vgg.data import ColourStats, index_split
from vgg.data.stats import compute_stats
from vgg.data.synthetic import SHAPE_NAMES, make_shapes_dataset
from vgg.errors import ConfigError, DataError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_shapes_dataset_layout_boxes_and_determinism(tmp_path: Path) -> None:
    a = make_shapes_dataset(tmp_path / "a", classes=4, train_per_class=5, val_per_class=2,
                            seed=3, min_side=48, max_side=96, workers=0)
    b = make_shapes_dataset(tmp_path / "b", classes=4, train_per_class=5, val_per_class=2,
                            seed=3, min_side=48, max_side=96, workers=2)
    assert _digest(a) == _digest(b)  # byte-identical, whatever the worker count
    c = make_shapes_dataset(tmp_path / "c", classes=4, train_per_class=5, val_per_class=2,
                            seed=4, min_side=48, max_side=96, workers=0)
    assert _digest(a) != _digest(c)
    tr, va = index_split(a, "train"), index_split(a, "val")
    assert tr.classes == sorted(SHAPE_NAMES[:4]) and len(tr) == 20 and len(va) == 8
    sizes, fracs = set(), []
    for p, c in tr.samples:
        w, h = Image.open(p).size
        sizes.add((w, h))
        assert 48 <= w <= 96 and 48 <= h <= 96
        (box,) = tr.boxes[p]
        assert box.name == tr.classes[c]
        assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
        fracs.append(max(box.x1 - box.x0, box.y1 - box.y0) / min(w, h))
    assert len(sizes) > 10
    assert 0.05 < min(fracs) and max(fracs) <= 0.95
    assert json.loads((a / "synth.json").read_text())["seed"] == 3


def test_multi_label_shapes(tmp_path: Path) -> None:
    out = make_shapes_dataset(tmp_path, classes=5, train_per_class=4, val_per_class=0,
                              multi=True, workers=0)
    idx = index_split(out, "train")
    assert not (out / "val").exists()
    n_labels = [len(m) for m in idx.multilabels]
    assert min(n_labels) >= 2 and max(n_labels) <= 4
    for (p, c), m in zip(idx.samples, idx.multilabels):
        assert c in m and idx.boxes[p][0].name == idx.classes[c]
    assert idx.label_matrix().sum(1).min() >= 2


def test_shapes_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        make_shapes_dataset("/nonexistent", classes=len(SHAPE_NAMES) + 1)
    with pytest.raises(ConfigError):
        make_shapes_dataset("/nonexistent", min_side=100, max_side=50)
    with pytest.raises(ConfigError):
        make_shapes_dataset("/nonexistent", object_size=(0.5, 0.3))


def test_object_size_range(tmp_path: Path) -> None:
    out = make_shapes_dataset(tmp_path, classes=3, train_per_class=6, val_per_class=0,
                              object_size=(0.6, 0.8), workers=0)
    idx = index_split(out, "train")
    for p, _ in idx.samples:
        w, h = Image.open(p).size
        (b,) = idx.boxes[p]
        assert 0.5 <= max(b.x1 - b.x0, b.y1 - b.y0) / min(w, h) <= 0.85


def test_compute_stats_matches_numpy_and_is_deterministic(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = []
    for i in range(4):
        a = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
        a[..., 1] = a[..., 0] // 2 + 60  # correlated channels
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray(a).save(tmp_path / "c" / f"{i}.png")
        arrays.append(a.reshape(-1, 3) / 255.0)
    (tmp_path / "c" / "bad.png").write_bytes(b"")
    px = np.concatenate(arrays)
    s = compute_stats(tmp_path, progress=False)
    assert np.allclose(s.mean_rgb, px.mean(0) * 255)
    cov = np.cov(px.T, bias=True)
    ev = np.array(s.eigvec)
    assert np.allclose(ev @ np.diag(s.eigval) @ ev.T, cov, atol=1e-9)
    assert s.eigval[0] >= s.eigval[1] >= s.eigval[2] and s.n_images == 4
    assert compute_stats(tmp_path, progress=False) == s
    sub = compute_stats(tmp_path, limit=2, progress=False)
    assert sub.n_images <= 2 and sub == compute_stats(tmp_path, limit=2, progress=False)


def test_compute_stats_no_readable_image(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.jpg").write_text("no")
    with pytest.raises(DataError):
        compute_stats(tmp_path, progress=False)


def test_cli_synth_and_stats(tmp_path: Path, capsys) -> None:
    assert main(["data", "synth", str(tmp_path / "s"), "--classes", "3",
                 "--train-per-class", "3", "--val-per-class", "1", "--seed", "1",
                 "--workers", "0"]) == 0
    assert len(list((tmp_path / "s" / "train").rglob("*.jpg"))) == 9
    assert main(["data", "stats", str(tmp_path / "s"), "--out", str(tmp_path / "st.json"),
                 "--limit", "5"]) == 0
    st = ColourStats.load(tmp_path / "st.json")
    assert st.n_images == 5 and all(0 < v < 255 for v in st.mean_rgb)
    assert main(["data", "stats", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "missing" in capsys.readouterr().err


def test_clutter_adds_decoys_and_leaves_default_data_unchanged(tmp_path: Path) -> None:
    kw = dict(classes=3, train_per_class=3, val_per_class=1, seed=5, min_side=48,
              max_side=64, workers=0)
    plain = make_shapes_dataset(tmp_path / "plain", **kw)
    zero = make_shapes_dataset(tmp_path / "zero", clutter=0.0, **kw)
    busy = make_shapes_dataset(tmp_path / "busy", clutter=4.0, **kw)
    assert _digest(plain) == _digest(zero)  # no extra random draws without clutter
    assert "clutter" not in json.loads((plain / "synth.json").read_text())
    assert json.loads((busy / "synth.json").read_text())["clutter"] == 4.0
    changed = 0
    for p in sorted((plain / "train").rglob("*.jpg")):
        q = busy / p.relative_to(plain)
        with Image.open(p) as a, Image.open(q) as b:
            assert a.size == b.size  # the same image sizes: only the drawing differs
            changed += not np.array_equal(np.asarray(a), np.asarray(b))
    assert changed >= 7  # of 9: Poisson(4) draws no decoy for only ~2% of the images
    with pytest.raises(ConfigError, match="clutter"):
        make_shapes_dataset(tmp_path / "bad", clutter=-1.0, **kw)


def test_ensure_shapes_dataset_reuses_or_refuses(tmp_path: Path) -> None:
    from vgg.data.synthetic import ensure_shapes_dataset

    kw = dict(train_per_class=2, val_per_class=1, min_side=40, max_side=48, workers=0)
    root, made = ensure_shapes_dataset(tmp_path / "d", 3, seed=1, clutter=1.5, **kw)
    assert made and (root / "val").is_dir()
    assert ensure_shapes_dataset(root, 3, seed=1, clutter=1.5, **kw) == (root, False)
    with pytest.raises(ConfigError, match="other settings"):
        ensure_shapes_dataset(root, 3, seed=1, clutter=2.0, **kw)
    with pytest.raises(ConfigError, match="other settings"):
        ensure_shapes_dataset(root, 4, seed=1, clutter=1.5, **kw)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a shapes dataset"):
        ensure_shapes_dataset(tmp_path / "junk", 3, **kw)
