"""Datasets and loaders: per-sample determinism, bad files skipped and counted, sampler."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vgg.data import (EpochSampler, ImageDataset, TrainTransform, collate, index_folder,
                      make_loader)
from vgg.errors import DataError


def _tree(root: Path, n_per_class: int = 6, classes: tuple[str, ...] = ("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            a = rng.integers(0, 256, (int(rng.integers(40, 60)), int(rng.integers(40, 60)), 3),
                             dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.jpg")
    return root


def _batches(loader) -> list[tuple[list[int], torch.Tensor]]:
    return [(b["indices"].tolist(), b["images"].clone()) for b in loader]


def test_same_seed_same_batches_whatever_the_workers(tmp_path: Path) -> None:
    ds = ImageDataset(index_folder(_tree(tmp_path)), TrainTransform(32, (36, 44)), seed=3)
    a = _batches(make_loader(ds, 5, shuffle=True, seed=1, workers=0))
    b = _batches(make_loader(ds, 5, shuffle=True, seed=1, workers=2))
    assert [i for i, _ in a] == [i for i, _ in b]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    c = _batches(make_loader(ds, 5, shuffle=True, seed=2, workers=0))
    assert [i for i, _ in a] != [i for i, _ in c]


def test_epochs_differ_and_persistent_workers_see_the_epoch(tmp_path: Path) -> None:
    ds = ImageDataset(index_folder(_tree(tmp_path)), TrainTransform(32, (36, 44)), seed=0)
    loader = make_loader(ds, 12, shuffle=False, seed=0, workers=1, persistent_workers=True)
    e0 = next(iter(loader))
    loader.sampler.set_epoch(1)
    e1 = next(iter(loader))
    assert e0["indices"].tolist() == e1["indices"].tolist()  # no shuffle: same order
    assert not torch.equal(e0["alphas"], e1["alphas"])      # but new augmentation
    direct = ds[(int(e1["indices"][0]), 1)]
    assert torch.equal(direct["image"], e1["images"][0])


def test_resume_inside_an_epoch(tmp_path: Path) -> None:
    ds = ImageDataset(index_folder(_tree(tmp_path)), TrainTransform(32, 40), seed=0)
    full = _batches(make_loader(ds, 4, shuffle=True, seed=5, epoch=2, workers=0))
    resumed = _batches(make_loader(ds, 4, shuffle=True, seed=5, epoch=2, start=4, workers=0))
    assert [i for i, _ in resumed] == [i for i, _ in full[1:]]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(resumed, full[1:]))


def test_bad_files_are_skipped_counted_and_named_by_the_consumer(tmp_path: Path,
                                                                 caplog) -> None:
    from vgg.data.loaders import BadImages

    root = _tree(tmp_path, 3)
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("hello")
    index = index_folder(root)
    ds = ImageDataset(index, TrainTransform(32, 40))
    bad = BadImages()
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        batches = list(make_loader(ds, 4, shuffle=False, seed=0, workers=0))
        assert not caplog.records  # the dataset and collate never log
        for b in batches + list(make_loader(ds, 4, shuffle=False, seed=0, workers=0)):
            bad.report(b)
    assert sum(b["n_bad"] for b in batches) == 2
    assert sorted(b["bad"] for b in batches if b["bad"]) == [
        [(str(root / "a" / "zero.jpg"), "empty file (0 bytes)")],
        [(str(root / "b" / "text.jpg"), "not an image Pillow can identify")]]
    assert sum(b["images"].shape[0] for b in batches) == 6
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and any("zero.jpg" in w and "empty file" in w for w in warned)
    assert len(bad) == 2 and bad.occurrences == 4 and str(root / "b" / "text.jpg") in bad
    i_bad = [p.name for p, _ in index.samples].index("zero.jpg")
    assert ds[i_bad] is None


def test_no_readable_image_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.jpg").write_text("nope")
    with pytest.raises(DataError, match="no readable image"):
        ImageDataset(index_folder(tmp_path), TrainTransform(32, 40))


def test_collate_all_bad_and_shapes() -> None:
    out = collate([None, {"bad": "x.jpg", "reason": "r", "index": 0}])
    assert out["images"].shape[0] == 0 and out["n_bad"] == 2 and out["bad"] == [("x.jpg", "r")]
    s = {"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "label": 1, "index": 7,
         "alpha": torch.ones(3)}
    out = collate([s, None, s])
    assert out["images"].shape == (2, 3, 4, 4) and out["labels"].tolist() == [1, 1]
    assert out["alphas"].shape == (2, 3) and out["n_bad"] == 1
    with pytest.raises(ValueError, match="different sizes"):
        collate([s, dict(s, image=torch.zeros(3, 5, 4, dtype=torch.uint8))])


@pytest.mark.parametrize("n,world", [(10, 3), (9, 3), (2, 4)])
def test_epoch_sampler_splits_like_distributed_sampler(n: int, world: int) -> None:
    from torch.utils.data import DistributedSampler

    for shuffle in (False, True):
        ranks = [list(EpochSampler(n, shuffle, 7, epoch=1, rank=r, world_size=world))
                 for r in range(world)]
        assert len({len(r) for r in ranks}) == 1
        flat = [i for r in ranks for i, e in r]
        assert set(flat) == set(range(n)) and all(e == 1 for r in ranks for _, e in r)
        if not shuffle:
            ref = [list(DistributedSampler(range(n), world, r, shuffle=False))
                   for r in range(world)]
            assert [[i for i, _ in r] for r in ranks] == ref


def test_epoch_sampler_orders_per_epoch_and_start() -> None:
    s = EpochSampler(20, True, 0)
    e0 = [i for i, _ in s]
    s.set_epoch(1)
    e1 = [i for i, _ in s]
    assert sorted(e0) == sorted(e1) == list(range(20)) and e0 != e1
    s.set_epoch(1, start=5)
    assert [i for i, _ in s] == e1[5:] and len(s) == 15
    with pytest.raises(ValueError):
        EpochSampler(5, False, 0, start=6)


def test_bad_image_warned_once_per_run_in_the_main_process(tmp_path: Path, caplog) -> None:
    from vgg.data.loaders import BadImages
    from vgg.data.stats import compute_stats

    root = _tree(tmp_path, 3)
    (root / "a" / "zero.jpg").write_bytes(b"")
    index = index_folder(root)
    bad = BadImages()
    with caplog.at_level(logging.WARNING, logger="vgg.data"):
        compute_stats(index, progress=False, bad_images=bad)   # the colour-stats pass
        ds = ImageDataset(index, TrainTransform(32, 40))
        loader = make_loader(ds, 4, shuffle=False, seed=0, workers=2)
        seen = 0
        for epoch in range(2):                                 # two epochs, two workers
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                seen += bad.report(batch)
    msgs = [r.getMessage() for r in caplog.records if "zero.jpg" in r.getMessage()]
    assert len(msgs) == 1 and "empty file" in msgs[0]
    assert seen == 2 and len(bad) == 1
    assert bad.reasons == {str(root / "a" / "zero.jpg"): "empty file (0 bytes)"}
