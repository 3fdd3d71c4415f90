"""Appendix B: descriptors, SVMs, the VOC / Caltech / box protocols, `vgg features` and
`vgg transfer`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vgg
from vgg.cli import main
from vgg.data.decode import Region, decode_with_size, image_size
from vgg.data.folders import index_folder, index_voc
from vgg.errors import BadImageError, ConfigError, DataError
from vgg.eval import metrics
from vgg.transfer import features as F
from vgg.transfer import protocols as P
from vgg.transfer.svm import holdout_rows, train_svms

from _eval_util import CLASSES, make_images, save_net, tiny_net


# ------------------------------------------------------------------ descriptors

def _hand_descriptor(net: vgg.VGG, x: torch.Tensor) -> torch.Tensor:
    """relu7 of the dense net by hand: conv stack, FC1 as a k x k conv, FC2 as 1x1, ReLUs,
    spatial mean; mirror averaged (not normalised)."""
    def one(x: torch.Tensor) -> torch.Tensor:
        h = net.features(x)
        k = net.config.fc_kernel
        w1 = net.classifier[0].weight.view(net.config.fc_width, -1, k, k)
        h = torch.relu(torch.nn.functional.conv2d(h, w1, net.classifier[0].bias))
        w2 = net.classifier[3].weight[:, :, None, None]
        h = torch.relu(torch.nn.functional.conv2d(h, w2, net.classifier[3].bias))
        return h.mean(dim=(2, 3))
    return 0.5 * (one(x) + one(x.flip(3)))


def test_descriptor_equals_the_hand_computation(tmp_path: Path) -> None:
    net = tiny_net()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 80)
        got = F.dense_descriptor(net.to_fully_conv(), x)
        want = _hand_descriptor(net, x)
    assert got.shape == (2, net.config.fc_width)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # through files: rescale to Q, normalise, then average / stack and L2
    make_images(tmp_path / "d", sizes=[(40, 48)])
    index = index_folder(tmp_path / "d")
    # stride 32: the plain net by hand (the default stride: test_transfer_cache.py)
    avg = F.extract_features(net, index, scales=[32, 40], combine="average", workers=0,
                             progress=False, dense_stride=32, layer="relu7")
    stk = F.extract_features(net, index, scales=[32, 40], combine="stack", workers=0,
                             progress=False, dense_stride=32, layer="relu7")
    from vgg.data.transforms import RescaleTransform
    per_q = []
    for q in (32, 40):
        img = RescaleTransform(q)(index.samples[0][0])["image"][None]
        with torch.no_grad():
            per_q.append(_hand_descriptor(net, net.preprocess(img))[0].numpy())
    a = np.mean(per_q, 0)
    s = np.concatenate(per_q)
    np.testing.assert_allclose(avg.X[0], a / np.linalg.norm(a), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stk.X[0], s / np.linalg.norm(s), rtol=1e-4, atol=1e-6)
    assert avg.X.shape == (3, 32) and stk.X.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(stk.X, axis=1), 1.0, rtol=1e-5)


def test_two_nets_are_stacked_and_other_layers_pooled(tmp_path: Path) -> None:
    make_images(tmp_path / "d", sizes=[(40, 40), (48, 40)])
    index = index_folder(tmp_path / "d")
    a, b = tiny_net(seed=0), tiny_net(seed=1)
    fa = F.extract_features(a, index, [32], workers=0, progress=False)
    fb = F.extract_features(b, index, [32], workers=0, progress=False)
    fab = F.extract_features([a, b], index, [32], workers=0, progress=False)
    assert fab.dim == fa.dim + fb.dim and fab.meta["nets"] == ["net0 (A)", "net1 (A)"]
    np.testing.assert_allclose(fab.X, np.concatenate([fa.X, fb.X], 1) / np.sqrt(2),
                               rtol=1e-5, atol=1e-6)
    conv = F.extract_features(a, index, [32], layer="relu5_2", workers=0, progress=False)
    assert conv.dim == F.layer_dim(a, "relu5_2") == a.config.channels(512)
    with pytest.raises(ConfigError, match="unknown layer"):
        F.extract_features(a, index, [32], layer="relu9_9", workers=0, progress=False)
    with pytest.raises(ConfigError, match="too small for relu7"):
        F.extract_features(a, index, [24], layer="relu7", workers=0, progress=False)
    assert F.paper_scales("average", 224) == [256, 384, 512, 640, 768]
    assert F.paper_scales("stack", 32) == [37, 55, 73]


def test_regions_are_images_of_their_box(tmp_path: Path) -> None:
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[10:30, 20:50] = 200
    Image.fromarray(arr).save(tmp_path / "a.png")
    r = Region(tmp_path / "a.png", (20.0, 10.0, 50.0, 30.0))
    assert image_size(r) == (30, 20)
    img, w, h = decode_with_size(r)
    assert (w, h) == (30, 20) and np.asarray(img).min() == 200
    assert image_size(Region(tmp_path / "a.png", (-5, -5, 100, 100))) == (60, 40)  # clipped
    with pytest.raises(BadImageError, match="no pixel inside"):
        image_size(Region(tmp_path / "a.png", (70, 0, 90, 10)))


def test_bad_images_are_named_left_out_and_counted(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    make_images(tmp_path / "d", sizes=[(40, 40), (48, 40)])
    (tmp_path / "d" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    index = index_folder(tmp_path / "d")
    f = F.extract_features(tiny_net(), index, [32], workers=0, progress=False)
    assert len(f) == 6 and list(f.skipped) == ["cat/broken.jpg"]
    assert "broken.jpg" in caplog.text


def test_options_carry_the_same_settings_as_the_arguments(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """extract_with(ExtractOptions) is extract_features with the same settings; the
    protocols' cache reuses a file made with them and re-extracts for other settings."""
    make_images(tmp_path / "d", sizes=[(40, 40), (48, 40)])
    index = index_folder(tmp_path / "d")
    net = F.as_feature_net(tiny_net())
    ref = F.extract_features(net, index, [32, 40], "stack", "relu6", False, workers=0,
                             progress=False)
    opts = F.ExtractOptions(scales=[40, 32], combine="stack", layer="relu6", flip=False,
                            workers=0, progress=False, cache=tmp_path / "cache")
    got = F.extract_with(net, index, opts)
    np.testing.assert_array_equal(got.X, ref.X)
    assert got.meta == ref.meta and got.meta["scales"] == [32, 40]
    first = opts.extract([net], index, "t")
    assert (tmp_path / "cache" / "t.npz").is_file()
    np.testing.assert_array_equal(first.X, ref.X)
    real = F.extract_with
    calls: list[str] = []
    monkeypatch.setattr(F, "extract_with", lambda *a, **k: calls.append("run") or real(*a, **k))
    again = opts.extract([net], index, "t")  # read back, not recomputed
    np.testing.assert_array_equal(again.X, ref.X)
    assert calls == []
    other = dataclasses.replace(opts, combine="average").extract([net], index, "t")
    assert calls == ["run"] and other.meta["combine"] == "average"
    assert other.dim == ref.dim // 2
    with pytest.raises(ConfigError, match="combine"):
        F.extract_with(net, index, dataclasses.replace(opts, combine="max"))


def test_extraction_continues_after_an_interruption(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    make_images(tmp_path / "d", sizes=[(40, 40), (48, 40), (40, 56), (40, 40)])
    index = index_folder(tmp_path / "d")
    net = tiny_net()
    ref = F.extract_features(net, index, [32, 40], workers=0, progress=False, batch_size=2)
    out = tmp_path / "f.npz"
    monkeypatch.setattr(F, "SHARD_IMAGES", 2)
    import importlib
    E = importlib.import_module("vgg.data.rescaled")
    real = E.RescaledImages.batches
    seen = {"n": 0}

    def dying(self, q, desc, rows=None):  # noqa: ANN001, ANN202
        for b in real(self, q, desc, rows):
            seen["n"] += 1
            if seen["n"] == 5:
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(E.RescaledImages, "batches", dying)
    with pytest.raises(KeyboardInterrupt):
        F.extract_features(net, index, [32, 40], workers=0, progress=False, batch_size=2,
                           out=out)
    parts = Path(f"{out}.parts")
    assert not out.exists() and len(list(parts.glob("shard-*.npz"))) >= 2
    monkeypatch.setattr(E.RescaledImages, "batches", real)
    computed = []
    orig = F.dense_descriptor
    monkeypatch.setattr(F, "dense_descriptor",
                        lambda fcn, x, *a: (computed.append(len(x)), orig(fcn, x, *a))[1])
    with pytest.raises(ConfigError, match="other settings"):
        F.extract_features(net, index, [32, 48], workers=0, progress=False, out=out)
    got = F.extract_features(net, index, [32, 40], workers=0, progress=False, batch_size=2,
                             out=out)
    assert sum(computed) < 2 * len(index)  # only the rest was computed
    np.testing.assert_allclose(got.X, ref.X, rtol=1e-5, atol=1e-6)
    assert got.ids == ref.ids and not parts.exists()
    back = F.Features.load(out)
    np.testing.assert_array_equal(back.X, got.X)
    assert back.classes == CLASSES and back.meta["scales"] == [32, 40]


def test_features_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        F.Features.load(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="other.npz is not a vgg features file"):
        F.Features.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npz is not a features file"):
        F.Features.load(tmp_path / "junk.npz")


# ------------------------------------------------------------------ metrics

def test_average_precision_hand_worked_examples() -> None:
    # ranking: +, -, +, -, -  (2 positives): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 0], bool)
    # 11-point: t = 0..0.5 -> max precision 1 (6 points); t = 0.6..1 -> 2/3 (5 points)
    assert metrics.average_precision(s, y, kind="voc07_11point") == pytest.approx(
        (6 * 1 + 5 * 2 / 3) / 11)
    # area: recall 0 -> 0.5 at precision 1, 0.5 -> 1 at 2/3
    assert metrics.average_precision(s, y, kind="area") == pytest.approx(0.5 + 0.5 * 2 / 3)
    from sklearn.metrics import average_precision_score
    # here precision only falls with recall: area AP equals scikit-learn's
    assert metrics.average_precision(s, y, kind="area") == pytest.approx(
        average_precision_score(y, s))
    # + - - + : sklearn 0.5*1 + 0.5*0.5 = 0.75; interpolation cannot lower it
    s2, y2 = np.array([4, 3, 2, 1.0]), np.array([1, 0, 0, 1], bool)
    assert average_precision_score(y2, s2) == pytest.approx(0.75)
    assert metrics.average_precision(s2, y2, kind="area") == pytest.approx(0.75)
    # + - + - + with a rise of precision at the end: interpolation lifts the middle
    s3, y3 = np.arange(5, 0, -1.0), np.array([1, 0, 0, 1, 1], bool)
    sk = average_precision_score(y3, s3)   # 1/3*1 + 1/3*1/2 + 1/3*3/5
    assert sk == pytest.approx((1 + 0.5 + 0.6) / 3)
    assert metrics.average_precision(s3, y3, kind="area") == pytest.approx((1 + 0.6 + 0.6) / 3)
    # difficult images are left out; no positive -> NaN; a NaN score ranks last
    assert metrics.average_precision(s, y, np.array([0, 1, 0, 0, 0], bool), "area") == 1.0
    assert np.isnan(metrics.average_precision(s, np.zeros(5, bool)))
    assert metrics.average_precision(np.array([np.nan, 1.0]), np.array([1, 0], bool),
                                     kind="area") == 0.5
    with pytest.raises(ValueError, match="unknown AP kind"):
        metrics.average_precision(s, y, kind="voc12")


def test_mean_class_recall_weights_classes_alike() -> None:
    scores = np.eye(3)[[0, 0, 0, 1, 2, 1]]  # class 0: 3/3 right, 1: 1/1, 2: 1/2
    labels = np.array([0, 0, 0, 1, 2, 2])
    assert metrics.mean_class_recall(scores, labels) == pytest.approx((1 + 1 + 0.5) / 3)
    np.testing.assert_allclose(metrics.class_recalls(scores, labels), [1, 1, 0.5])


# ------------------------------------------------------------------ splits and SVMs

def test_caltech_splits_have_the_counts_and_follow_the_seed() -> None:
    labels = np.repeat(np.arange(4), [40, 35, 90, 31])
    a = P.class_splits(labels, 4, 30, 50, splits=3, seed=7)
    b = P.class_splits(labels, 4, 30, 50, splits=3, seed=7)
    c = P.class_splits(labels, 4, 30, 50, splits=3, seed=8)
    assert len(a) == 3
    for (tr, te), (tr2, te2) in zip(a, b):
        np.testing.assert_array_equal(tr, tr2)
        np.testing.assert_array_equal(te, te2)
        assert not set(tr) & set(te)
        np.testing.assert_array_equal(np.bincount(labels[tr]), [30, 30, 30, 30])
        np.testing.assert_array_equal(np.bincount(labels[te]), [10, 5, 50, 1])
    assert not np.array_equal(a[0][0], a[1][0])  # splits differ
    assert not np.array_equal(a[0][0], c[0][0])  # seeds differ
    with pytest.raises(DataError, match=r"fewer than 40 \+ 1 images \(train \+ at least one test\): a \(40\), b \(35\), d \(31\)"):
        P.class_splits(labels, 4, 40, 50, class_names=["a", "b", "c", "d"])


def test_svm_chooses_c_on_held_out_images_and_separates_classes() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    y = np.repeat(np.arange(3), 30)
    X = F.l2_normalise(centres[y] + 0.3 * rng.normal(size=(90, 16)))
    tr, va = holdout_rows(np.eye(3)[y], 0.2, seed=0)
    assert len(va) == 18 and np.bincount(y[va]).tolist() == [6, 6, 6]
    svm = train_svms(X, np.eye(3)[y].astype(np.uint8), C_grid=[0.01, 1.0], jobs=1)
    assert set(svm.selection) == {"0.01", "1"} and svm.C in (0.01, 1.0)
    assert metrics.mean_class_recall(svm.scores(X), y) > 0.95
    # a class that is only "difficult" everywhere is never trained against
    ign = np.zeros((90, 3), bool)
    ign[y == 2, 2] = True
    svm = train_svms(X, np.eye(3)[y].astype(np.uint8), ign, multi_label=True, C_grid=[1.0],
                     jobs=1)
    assert np.all(svm.W[2] == 0)


# ------------------------------------------------------------------ data: VOC layout

@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vgg.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("voc") / "VOC2007", classes=3,
                               train_per_class=10, val_per_class=5, min_side=40, max_side=56,
                               multi=True, workers=0, layout="voc")


def test_synth_voc_layout_is_a_devkit_tree(voc: Path) -> None:
    main_ = voc / "ImageSets" / "Main"
    trainval = main_.joinpath("trainval.txt").read_text().split()
    assert len(trainval) == 30 and len(main_.joinpath("test.txt").read_text().split()) == 15
    assert sorted(main_.joinpath("train.txt").read_text().split() +
                  main_.joinpath("val.txt").read_text().split()) == sorted(trainval)
    idx = index_voc(voc, "test")
    flags = dict(line.split() for line in
                 main_.joinpath(f"{idx.classes[0]}_test.txt").read_text().splitlines())
    for (path, _), pos, hard in zip(idx.samples, idx.multilabels, idx.difficult):
        f = int(flags[path.stem])
        assert (f == 1) == (0 in pos) and (f == 0) == (0 in hard)
    assert any(idx.difficult) and all((voc / "JPEGImages" / f"{i}.jpg").is_file()
                                      for i in trainval)


def test_features_and_transfer_from_saved_files(voc: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ck = save_net(tmp_path / "n.pt", classes=["x", "y", "z"])
    common = ["--workers", "0", "--no-progress", "--scales", "32,40"]
    for split in ("trainval", "test"):
        assert main(["features", str(ck), "--data", str(voc), "--split", split,
                     "--out", str(tmp_path / f"{split}.npz"), *common]) == 0
    assert "30 descriptors of 32 dimensions" in capsys.readouterr().out
    te = F.Features.load(tmp_path / "test.npz")
    assert te.ignore is not None and te.ignore.any() and te.multi_label
    assert main(["transfer", str(tmp_path / "trainval.npz"), "--test",
                 str(tmp_path / "test.npz"), "--json", str(tmp_path / "r.json"),
                 "--C", "0.1,10", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "mAP (VOC-2007 11-point)" in out and "mAP (VOC-2010+ area)" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert [x["metric"] for x in r["results"]] == list(P.AP_NAMES.values())
    assert set(r["results"][0]["per_class"]) <= set(te.classes)
    assert 0 <= r["results"][0]["value"] <= 1
    assert (tmp_path / "r-pr.png").stat().st_size > 1000
    # unhappy paths: one line, non-zero
    assert main(["features", str(ck), "--data", str(voc), "--out",
                 str(tmp_path / "x.npz")]) != 0
    assert "give --split" in capsys.readouterr().err
    assert main(["transfer", str(tmp_path / "trainval.npz"), "--C", "0,-1"]) != 0
    assert "--C values must be positive" in capsys.readouterr().err
    assert main(["transfer", str(ck)]) != 0
    assert "give --data" in capsys.readouterr().err
    assert main(["transfer", str(ck), "--data", str(voc), "--protocol", "caltech"]) != 0
    assert "is a VOC year folder: use --protocol voc" in capsys.readouterr().err
    assert main(["transfer", str(tmp_path / "trainval.npz"), "--train-per-class", "3"]) != 0
    assert "single-label" in capsys.readouterr().err


def test_caltech_and_box_protocols_end_to_end(voc: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    make_images(tmp_path / "cal", sizes=[(40, 40), (48, 40), (40, 56), (44, 40), (40, 40)])
    ck = save_net(tmp_path / "n.pt")
    common = ["--workers", "0", "--no-progress", "--jobs", "1", "--C", "1"]
    assert main(["transfer", str(ck), "--data", str(tmp_path / "cal"), "--protocol",
                 "classes", "--train-per-class", "3", "--test-per-class", "2", "--splits",
                 "2", "--scales", "32", "--json", str(tmp_path / "c.json"), *common]) == 0
    r = json.loads((tmp_path / "c.json").read_text())
    assert [x["label"] for x in r["results"]] == ["trained", "random init"]
    res = r["results"][0]
    assert res["metric"] == "mean class recall" and len(res["values"]) == 2
    assert res["combine"] == "stack" and res["splits"][0]["n_train"] == 9
    assert res["splits"][0]["n_test"] == 6
    assert "±" in capsys.readouterr().out
    assert main(["transfer", str(ck), "--data", str(tmp_path / "cal"), "--protocol",
                 "caltech", *common]) != 0
    assert "fewer than 30 + 1 images" in capsys.readouterr().err
    assert main(["transfer", str(ck), "--data", str(voc), "--protocol", "boxes",
                 "--no-baseline", "--scales", "32", "--json", str(tmp_path / "b.json"),
                 "--features-dir", str(tmp_path / "fd"), *common]) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert [x["label"] for x in r["results"]] == ["trained, image only"] * 2 + \
        ["trained, image + box"] * 2
    assert sorted(p.name for p in (tmp_path / "fd").glob("*.npz")) == [
        "trained-test-boxes.npz", "trained-test-images.npz", "trained-trainval-boxes.npz",
        "trained-trainval-images.npz"]
    boxes = F.Features.load(tmp_path / "fd" / "trained-test-boxes.npz")
    assert boxes.ids[0].endswith("#0") and not boxes.multi_label
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["transfer", str(ck), "--data", str(voc), "--protocol", "boxes",
                     "--no-baseline", "--scales", "32", "--json", str(tmp_path / "b2.json"),
                     "--features-dir", str(tmp_path / "fd"), *common]) == 0
    assert caplog.text.count("reusing the descriptors") == 4
    again = json.loads((tmp_path / "b2.json").read_text())["results"]
    assert [x["values"] for x in again] == [x["values"] for x in r["results"]]


@pytest.mark.slow
def test_trained_features_beat_the_random_net_on_voc_layout(tmp_path: Path) -> None:
    """A small net trained on the shapes, then the VOC protocol on a generated VOC-layout
    set of the same shapes: its mAP must beat the same pipeline on a random net."""
    from vgg.data.synthetic import make_shapes_dataset

    shapes = make_shapes_dataset(tmp_path / "shapes", classes=4, train_per_class=100,
                                 val_per_class=0, min_side=40, max_side=48, workers=0,
                                 object_size=(0.4, 0.9))
    idx = index_folder(shapes / "train")
    from vgg.data.transforms import CenterCropTransform
    t = CenterCropTransform(32, 32)
    X = torch.stack([t(p)["image"] for p, _ in idx.samples])
    y = torch.tensor(idx.labels)
    torch.manual_seed(0)
    net = vgg.build("A", width=1 / 16, fc_width=256, crop=32, classes=idx.classes,
                    init="kaiming", batch_norm=True)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for step in range(800):
        b = torch.randint(0, len(X), (32,))
        x = net.preprocess(X[b])
        loss = torch.nn.functional.cross_entropy(net(x.flip(3) if step % 2 else x), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    vgg.save_checkpoint(tmp_path / "net.pt", net)
    voc = make_shapes_dataset(tmp_path / "VOC2007", classes=4, train_per_class=30,
                              val_per_class=25, min_side=40, max_side=56, workers=0,
                              layout="voc", seed=1, object_size=(0.3, 0.9))
    assert main(["transfer", str(tmp_path / "net.pt"), "--data", str(voc), "--scales",
                 "32,40", "--workers", "0", "--no-progress", "--jobs", "1",
                 "--json", str(tmp_path / "v.json")]) == 0
    r = {(x["label"], x["metric"]): x["value"]
         for x in json.loads((tmp_path / "v.json").read_text())["results"]}
    m = P.AP_NAMES["voc07_11point"]
    # measured: 0.49 vs 0.36 (600 steps), 0.62 vs 0.36 (1500 steps)
    assert r[("trained", m)] > r[("random init", m)] + 0.05, r


def test_features_only_nets_pool_a_conv_layer(tmp_path: Path) -> None:
    """A converted Keras "_notop" file (no FC layers) describes images by a conv layer;
    asking it for relu7 is a clear error."""
    from _formats_util import keras_vgg16_layers, random_keras_vgg16, write_keras_h5

    path = write_keras_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                          random_keras_vgg16(np.random.default_rng(0), top=False),
                          keras_vgg16_layers(top=False))
    make_images(tmp_path / "d", sizes=[(64, 64), (72, 64)])
    index = index_folder(tmp_path / "d")
    f = F.extract_features(path, index, [64], layer="relu5_3", workers=0, progress=False)
    assert f.X.shape == (6, 32) and np.isfinite(f.X).all()
    with pytest.raises(ConfigError, match="no FC layers.*--layer relu5_3"):
        F.extract_features(path, index, [64], layer="relu7", workers=0, progress=False)
    auto = F.extract_features(path, index, [64], workers=0, progress=False)
    assert auto.meta["layer"] == "pool5"  # the default pools a conv layer of such a net


def test_split_class_folders_and_voc_devkit_roots(voc: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A class-folder set with train/ and val/ is scored train -> val (not as two classes
    "train" and "val"); VOCdevkit/ holding one year is read as that year."""
    make_images(tmp_path / "s" / "train", sizes=[(40, 40), (48, 40), (40, 56)])
    make_images(tmp_path / "s" / "val", sizes=[(40, 40), (44, 40)], seed=1)
    ck = save_net(tmp_path / "n.pt")
    common = ["--workers", "0", "--no-progress", "--jobs", "1", "--C", "1", "--scales", "32",
              "--no-baseline"]
    assert main(["transfer", str(ck), "--data", str(tmp_path / "s"), "--protocol", "classes",
                 "--json", str(tmp_path / "s.json"), *common]) == 0
    r = json.loads((tmp_path / "s.json").read_text())
    assert r["results"][0]["splits"][0]["n_train"] == 9
    assert r["results"][0]["splits"][0]["n_test"] == 6
    assert set(r["results"][0]["per_class"]) <= set(CLASSES)
    assert main(["transfer", str(ck), "--data", str(tmp_path / "s"), "--protocol", "classes",
                 "--train-per-class", "2", "--splits", "2", "--test-per-class", "1",
                 "--json", str(tmp_path / "s2.json"), *common]) == 0
    r = json.loads((tmp_path / "s2.json").read_text())
    assert [(d["n_train"], d["n_test"]) for d in r["results"][0]["splits"]] == [(6, 3)] * 2
    devkit = tmp_path / "VOCdevkit"
    devkit.mkdir()
    (devkit / "VOC2007").symlink_to(voc)
    assert main(["transfer", str(ck), "--data", str(devkit), "--json",
                 str(tmp_path / "v.json"), *common]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["protocol"] == "voc"


def test_two_extractions_on_one_out_the_second_refuses(tmp_path: Path) -> None:
    from vgg.train.checkpoint import RunLock

    make_images(tmp_path / "d", sizes=[(40, 40)])
    out = tmp_path / "f.npz"
    with RunLock(Path(f"{out}.parts")):  # another run holds it
        with pytest.raises(ConfigError, match="in use by another vgg run"):
            F.extract_features(tiny_net(), index_folder(tmp_path / "d"), [32], workers=0,
                               progress=False, out=out)
    assert not out.exists()


def test_auto_layer_is_relu7_at_the_papers_fc_width_else_pool5(tmp_path: Path) -> None:
    """Issue 24 item 23: the default layer follows the measurement (docs/transfer.md):
    the paper's relu7 for nets with 4096-wide FC layers, pool5 for narrower ones."""
    from types import SimpleNamespace

    def fake(fc: int) -> Any:
        return SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(fc_width=fc)),
                               features_only=False)

    assert F.resolve_layer("auto", [fake(4096)]) == F.resolve_layer(None, [fake(4096)]) == "relu7"
    assert F.resolve_layer("auto", [fake(1024)]) == "pool5"
    assert F.resolve_layer("auto", [fake(4096), fake(512)]) == "pool5"
    assert F.resolve_layer("relu6", [fake(1024)]) == "relu6"
    make_images(tmp_path / "d", sizes=[(40, 40)])
    index = index_folder(tmp_path / "d")
    net = tiny_net()  # FC narrower than 4096: pool5, and the file says so
    got = F.extract_features(net, index, [32], workers=0, progress=False)
    assert got.meta["layer"] == "pool5" and got.dim == F.layer_dim(net, "pool5")
