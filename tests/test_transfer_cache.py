"""Appendix B descriptors at the dense output stride of SPEC 6b (issue 19), and the one key
(``descriptor_key``) that decides both whether a cached features file is reused and
whether interrupted shards are continued (issue 24 item 2: every setting that changes a
descriptor is in it; the nets by content, not by path)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vgg
from vgg.cli import main
from vgg.data.folders import index_folder
from vgg.data.transforms import RescaleTransform
from vgg.errors import ConfigError
from vgg.transfer import features as F

from _eval_util import make_images, save_net, tiny_net

KW = dict(workers=0, progress=False)


@pytest.fixture
def index(tmp_path: Path):
    return index_folder(make_images(tmp_path / "d", sizes=[(56, 40), (40, 40)]))


def test_descriptors_pool_the_map_at_the_crops_stride(index) -> None:
    net = tiny_net()  # crop 32: default stride 4
    auto = F.extract_features(net, index, [40], layer="relu7", **KW)
    s32 = F.extract_features(net, index, [40], dense_stride=32, layer="relu7", **KW)
    assert auto.meta["dense_stride"] == 4 and s32.meta["dense_stride"] == 32
    fcn = net.to_fully_conv(4)
    x = net.preprocess(RescaleTransform(40)(index.samples[0][0])["image"][None])
    with torch.no_grad():
        relu7 = fcn.extract(x, ["relu7"])["relu7"]
        mirror = fcn.extract(x.flip(3), ["relu7"])["relu7"]
    assert relu7.shape[-2:] == (3, 7)  # 40 x 56 at stride 4; one position at stride 32
    d = (0.5 * (relu7.mean((2, 3)) + mirror.mean((2, 3))))[0].numpy()
    np.testing.assert_allclose(auto.X[0], d / np.linalg.norm(d), rtol=1e-4, atol=1e-6)
    assert np.abs(auto.X - s32.X).max() > 1e-3


def _reused(opts: F.ExtractOptions, nets: list[F.FeatureNet], index,
            monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether ``opts.extract`` reads the cached file back instead of extracting."""
    calls: list[int] = []
    real = F.extract_with
    monkeypatch.setattr(F, "extract_with", lambda *a, **k: calls.append(1) or real(*a, **k))
    opts.extract(nets, index, "t")
    monkeypatch.setattr(F, "extract_with", real)
    return not calls


@pytest.mark.parametrize("change", [
    {"flip": False},            # --no-flip features are not a flip run's
    {"scales": None},           # the default scales are not --scales 40
    {"dense_stride": 32},       # stride 32 is not the crop's default 4
    {"dense_stride": 8},
    {"layer": "relu6"},
    {"precision": "bf16"},
])
def test_cache_is_reused_only_with_every_setting_equal(index, tmp_path, monkeypatch,
                                                       change) -> None:
    net = F.as_feature_net(tiny_net())
    # stack: the default scales are Caltech's three (37, 55, 73 at crop 32)
    opts = F.ExtractOptions(scales=[40], combine="stack", cache=tmp_path / "cache", **KW)
    first = opts.extract([net], index, "t")
    assert _reused(opts, [net], index, monkeypatch)
    other = dataclasses.replace(opts, **change)
    assert not _reused(other, [net], index, monkeypatch)
    again = F.Features.load(tmp_path / "cache" / "t.npz")  # rewritten with the new settings
    assert again.meta["key"] != first.meta["key"]
    assert _reused(other, [net], index, monkeypatch)


def test_retrained_checkpoint_at_the_same_path_is_not_reused(index, tmp_path,
                                                             monkeypatch) -> None:
    ck = save_net(tmp_path / "net.pt", seed=0)
    opts = F.ExtractOptions(scales=[40], cache=tmp_path / "cache", **KW)
    a = opts.extract([F.as_feature_net(ck)], index, "t")
    assert _reused(opts, [F.as_feature_net(ck)], index, monkeypatch)
    save_net(ck, seed=1)  # "retrained" into the same file
    assert not _reused(opts, [F.as_feature_net(ck)], index, monkeypatch)
    b = F.Features.load(tmp_path / "cache" / "t.npz")
    assert np.abs(a.X - b.X).max() > 1e-3
    # the same weights in memory and in another file are the same net for the key
    net = tiny_net(seed=3)
    assert F.weights_identity(net) == F.weights_identity(tiny_net(seed=3))
    assert F.weights_identity(net) != F.weights_identity(tiny_net(seed=4))
    assert F.as_feature_net(save_net(tmp_path / "x.pt", seed=3)).key() == \
        F.as_feature_net(vgg.save_checkpoint(tmp_path / "y.pt", tiny_net(seed=3))).key()


def test_interrupted_shards_are_continued_only_at_the_same_stride(index, tmp_path,
                                                                  monkeypatch) -> None:
    out = tmp_path / "f.npz"
    real = F.ShardStore.write

    def dying(self, *a):  # noqa: ANN001, ANN002, ANN202
        real(self, *a)
        raise KeyboardInterrupt

    monkeypatch.setattr(F, "SHARD_IMAGES", 1)
    monkeypatch.setattr(F.ShardStore, "write", dying)
    net = tiny_net()
    with pytest.raises(KeyboardInterrupt):
        F.extract_features(net, index, [40], batch_size=1, out=out, **KW)
    monkeypatch.setattr(F.ShardStore, "write", real)
    manifest = json.loads((Path(f"{out}.parts") / "manifest.json").read_text())
    assert manifest["key"]["dense_stride"] == [4]
    with pytest.raises(ConfigError, match="different dense_stride"):
        F.extract_features(net, index, [40], dense_stride=8, out=out, **KW)
    with pytest.raises(ConfigError, match="different flip"):
        F.extract_features(net, index, [40], flip=False, out=out, **KW)
    got = F.extract_features(net, index, [40], out=out, **KW)
    assert got.meta["settings"] == manifest["key"]  # one key for resume and reuse
    ref = F.extract_features(net, index, [40], **KW)
    np.testing.assert_allclose(got.X, ref.X, rtol=1e-5, atol=1e-6)


def test_cli_features_and_transfer_take_the_stride(index, tmp_path, capsys) -> None:
    ck = save_net(tmp_path / "n.pt")
    assert main(["features", str(ck), "--data", str(tmp_path / "d"), "--scales", "40",
                 "--dense-stride", "16", "--out", str(tmp_path / "f.npz"), "--workers", "0",
                 "--no-progress"]) == 0
    assert "stride 16" in capsys.readouterr().out
    assert F.Features.load(tmp_path / "f.npz").meta["dense_stride"] == 16
    with pytest.raises(SystemExit) as e:
        main(["features", str(ck), "--data", str(tmp_path / "d"), "--dense-stride", "5",
              "--out", str(tmp_path / "g.npz")])
    assert e.value.code == 2 and "--dense-stride" in capsys.readouterr().err
