"""The rescaled-image batches every evaluator reads (Sect. 3.2): images of one rescaled
size per batch, each readable image once per pass, unreadable ones reported once and left
out; uint8 on the way in, the net's preprocessing on the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vgg.eval
from vgg.data import index_folder
from vgg.data.rescaled import RescaledImages, normalise, size_buckets

from _eval_util import make_images, tiny_net


def test_size_buckets() -> None:
    sizes = [(32, 40), (40, 32), (32, 40), (32, 40), (40, 32)]
    b = size_buckets(sizes, 2)
    assert sorted(i for bb in b for i in bb) == list(range(5))
    for bb in b:
        assert len(bb) <= 2 and len({sizes[i] for i in bb}) == 1
    assert b == [[0, 2], [3], [1, 4]]
    with pytest.raises(ValueError):
        size_buckets(sizes, 0)


def test_batches_of_one_rescaled_size_and_each_bad_image_named_once(tmp_path: Path) -> None:
    root = make_images(tmp_path / "d", sizes=[(40, 40), (48, 40), (40, 56), (40, 40)])
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    index = index_folder(root)
    broken = index.paths.index(root / "dog" / "broken.png")
    told: list[str] = []
    data = RescaledImages(index, 3, 0, torch.device("cpu"), False,
                          on_bad=lambda path, why: told.append(path))
    assert broken in data.bad and broken not in data.ok_rows
    for q in (32, 40):
        seen = []
        for rows, x8 in data.batches(q, "test"):
            assert x8.dtype == torch.uint8 and x8.shape[0] == len(rows) <= 3
            assert min(x8.shape[2:]) == q
            seen += rows.tolist()
        assert sorted(seen) == [i for i in range(len(index)) if i != broken]
    assert told == [str(root / "dog" / "broken.png")]  # once, not once per pass
    rest = list(data.batches(32, "test", rows=[0, 5]))
    assert sorted(r for rows, _ in rest for r in rows.tolist()) == [0, 5]


def test_normalise_uses_the_nets_own_preprocessing() -> None:
    net = tiny_net()
    x8 = torch.randint(0, 256, (2, 3, 40, 36), dtype=torch.uint8)
    torch.testing.assert_close(normalise(net, x8), net.preprocess(x8))


def test_vgg_eval_re_exports_size_buckets() -> None:
    assert vgg.eval.size_buckets is size_buckets
