"""The full localisation protocol (Appendix A, SPEC 5) at the paper's dense geometry (SPEC
6b, issue 19): boxes decoded at each window's true offset at a finer stride, stride 32
with the image-level classes as before, OverFeat's per-scale classes, the classifier's
own test scales, the settings recorded; and the fusion and training defects of issue 24
(items 3, 4, 8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_localize import make_boxes_dataset, rect_image
from torch import nn

import vgg
from vgg.cli import main
from vgg.data.annotations import Box, write_voc_xml
from vgg.data.index import image_ids
from vgg.data.rescaled import RescaledImages, normalise
from vgg.data.transforms import rescale_size
from vgg.errors import ConfigError
from vgg.eval import evaluate
from vgg.eval.metrics import top_classes
from vgg.localize.boxes import decode, hflip_boxes, scale_boxes
from vgg.localize.data import box_index
from vgg.localize.evaluate import full_protocol, scale_classes
from vgg.localize.fusion import fuse_results, merge_guesses
from vgg.localize.merge import greedy_merge_reference
from vgg.localize.result import LocResult, load_saved

CLASSES = ["bar", "dot"]
SEVEN = [f"c{i}" for i in range(7)]
KW = {"workers": 0, "progress": False}


def net(head: str = "classes", seed: int = 0, classes: list[str] | None = None) -> vgg.VGG:
    g = torch.Generator().manual_seed(seed)
    return vgg.build("A", width=1 / 16, fc_width=32, crop=32, classes=classes or CLASSES,
                     head=head, init="kaiming", generator=g).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_boxes_dataset(tmp_path_factory.mktemp("boxes"))


@pytest.fixture(scope="module")
def seven(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three val images of 7 classes (landscape, 40-56 pixels), one rectangle each."""
    root = tmp_path_factory.mktemp("seven")
    for i, (w, h) in enumerate([(56, 40), (50, 44), (60, 42)]):
        p = root / "val" / SEVEN[i] / f"{i}.png"
        rect_image(p, (w, h), (4, 6, w - 8, h - 5))
        write_voc_xml(p.with_suffix(".xml"), p.name, (w, h), [Box(SEVEN[i], 4, 6, w - 8, h - 5)])
    for c in SEVEN[3:]:
        (root / "val" / c).mkdir(parents=True)
    return root


def by_scale(raw: dict[str, np.ndarray], image: int, q: int) -> set[int]:
    sel = (raw["image"] == image) & (raw["scale"] == q)
    return set(raw["class"][sel].tolist())


# ------------------------------------------------------------------ geometry

@pytest.mark.parametrize("stride", [8, 4])
def test_boxes_at_a_finer_stride_are_decoded_at_each_windows_offset(data: Path,
                                                                    stride: int) -> None:
    """An SCR net that predicts its whole window: at stride s every position's box is the
    crop x crop window at (s j, s i) of the rescaled image (and, for the mirror, that
    window mirrored back), in image pixels, one box per position of the map."""
    loc = net("scr", 1)
    with torch.no_grad():
        loc.classifier[6].weight.zero_()
        loc.classifier[6].bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0]))
    index, _ = box_index(data, "val", CLASSES)
    r = full_protocol(loc, net(seed=2), index, [36], dense_stride=stride, **KW)
    assert r.dense_stride == [stride] and r.to_json()["dense_stride"] == [stride]
    fcn = loc.to_fully_conv(stride)
    for i, (w, h) in enumerate(r.sizes.astype(int).tolist()):
        nw, nh = rescale_size(w, h, 36)
        mh, mw = fcn.map_size(nh, nw)
        ii, jj = np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij")
        x0, y0 = stride * jj.ravel(), stride * ii.ravel()
        win = np.stack([x0, y0, x0 + 32, y0 + 32], 1).astype(np.float64)
        both = np.concatenate([win, hflip_boxes(torch.from_numpy(win), nw).numpy()])
        want = scale_boxes(torch.from_numpy(both), w / nw, h / nh).numpy()
        sel = r.raw["image"] == i
        ncls = len(set(r.raw["class"][sel].tolist()))
        assert sel.sum() == 2 * mh * mw * ncls   # every position, image and mirror
        got = r.raw["boxes"][sel & (r.raw["class"] == r.raw["class"][sel][0])]
        np.testing.assert_allclose(got, want, atol=1e-3)
        if stride == 4:  # stride 32: one position, the top-left window
            assert loc.to_fully_conv().map_size(nh, nw) == (1, 1) and mh * mw >= 4


def reference_stride32(loc: vgg.VGG, cls: vgg.VGG, index: object, scales: list[int],
                       threshold: float = 0.7) -> dict[int, list[tuple[int, tuple]]]:
    """The full protocol as this project ran it before the dense stride (written out
    plainly): the classifier's image-level top-5 at the test scales; at every scale and
    mirror, every position (i, j) of the stride-32 maps predicts a box from the window at
    (32 j, 32 i), scored by the classifier's soft-max at that position; greedy merging
    per class; the class's best-scored box; guesses in posterior order."""
    res = evaluate(cls, index, "dense", scales, workers=0, progress=False,
                   dense_stride=32)
    post = dict(zip(res.image_ids, res.posteriors))
    ids = image_ids(index)
    top = {i: top_classes(post[iid][None], 5)[0].tolist() for i, iid in enumerate(ids)}
    cand: dict[int, list[tuple[int, list[float], float]]] = {i: [] for i in top}
    data = RescaledImages(index, 16, 0, torch.device("cpu"), False, None)
    with torch.no_grad():
        for q in scales:
            for rows, x8 in data.batches(q, "ref"):
                nh, nw = x8.shape[-2:]
                for mirrored in (False, True):
                    xl, xc = normalise(loc, x8), normalise(cls, x8)
                    if mirrored:
                        xl, xc = xl.flip(3), xc.flip(3)
                    bmap = loc.to_fully_conv()(xl)
                    prob = torch.softmax(cls.to_fully_conv()(xc), 1)
                    for b, r in enumerate(rows.tolist()):
                        w, h = data.sizes[r]
                        for c in top[r]:
                            for i in range(bmap.shape[2]):
                                for j in range(bmap.shape[3]):
                                    p = bmap[b, 4 * c:4 * c + 4, i, j].double()[None]
                                    win = torch.tensor([32.0 * j, 32.0 * i, 32.0],
                                                       dtype=torch.float64)
                                    box = decode(p, win)
                                    if mirrored:
                                        box = hflip_boxes(box, nw)
                                    box = scale_boxes(box, w / nw, h / nh)[0].float()
                                    cand[r].append((c, box.tolist(),
                                                    float(prob[b, c, i, j])))
    out = {}
    for r, boxes in cand.items():
        m = greedy_merge_reference(torch.tensor([b for _, b, _ in boxes], dtype=torch.float64),
                                   torch.tensor([s for _, _, s in boxes], dtype=torch.float64),
                                   torch.tensor([c for c, _, _ in boxes]), threshold)
        guesses = []
        for c in top[r]:
            mine = (m.labels == c).nonzero().squeeze(1)
            guesses.append((c, tuple(m.boxes[mine[m.scores[mine].argmax()]].tolist())))
        out[r] = guesses
    return out


def test_stride_32_with_image_classes_is_the_protocol_of_before(data: Path) -> None:
    index, _ = box_index(data, "val", CLASSES)
    loc, cls = net("pcr", 1), net(seed=3)
    r = full_protocol(loc, cls, index, [32, 40], dense_stride=32, class_choice="image",
                      classifier_scales=[32, 40], **KW)
    ref = reference_stride32(loc, cls, index, [32, 40])
    assert r.dense_stride == [32] and r.class_choice == "image"
    for i, guesses in enumerate(r.guesses):
        assert [c for c, _, _ in guesses] == [c for c, _ in ref[i]]
        np.testing.assert_allclose([b for _, _, b in guesses], [b for _, b in ref[i]],
                                   rtol=1e-5, atol=1e-3)


# ------------------------------------------------------------------ classes per scale

class _Spotlight(nn.Module):
    """The score map of a net that rates classes 0..5 by constants (class 0 best) at every
    position and class 6 very low, except at the top-left position of an image whose
    smaller side is at least 48 pixels, where class 6 is far ahead."""

    def __init__(self, real: nn.Module) -> None:
        super().__init__()
        self.real = real

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.real.map_size(*x.shape[-2:])
        base = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -30.0], dtype=x.dtype)
        out = base[None, :, None, None].expand(len(x), 7, h, w).clone()
        if min(x.shape[-2:]) >= 48:
            out[:, 6, 0, 0] = 30.0
        return out


class SpotlightNet(vgg.VGG):
    def to_fully_conv(self, stride: int = 32) -> nn.Module:  # type: ignore[override]
        return _Spotlight(super().to_fully_conv(stride))


def spotlight() -> SpotlightNet:
    m = net(seed=4, classes=SEVEN)
    s = SpotlightNet(m.config, classes=SEVEN)
    s.load_state_dict(m.state_dict())
    return s.eval()


def test_scale_classes_take_the_spatial_maximum() -> None:
    """C_s (SPEC 5 (a)): the classes with the highest score at any position, of the image
    or its mirror, not the highest average."""
    p = torch.full((1, 7, 3, 4), 0.01)
    p[0, :6] = torch.linspace(0.3, 0.05, 6)[:, None, None]
    mirror = p.clone()
    mirror[0, 6, 2, 3] = 0.9          # one position of the mirror only
    assert scale_classes([p]).tolist() == [[0, 1, 2, 3, 4]]
    assert scale_classes([p, mirror]).tolist() == [[6, 0, 1, 2, 3]]
    assert scale_classes([p, mirror], k=2).tolist() == [[6, 0]]
    assert top_classes(torch.stack([p, mirror]).mean((0, 3, 4)).numpy(), 5).tolist() == \
        [[0, 1, 2, 3, 4]]                # the average does not see it


def test_per_scale_classes_follow_overfeat_and_differ_from_image_level(seven: Path) -> None:
    """Class 6 tops scale 48 only (one position): per scale it gets boxes at Q = 48 and
    only there, and class 4 (5th at Q = 40, 6th at Q = 48) only at Q = 40; with the
    image-level top-5 class 6 gets none and class 4 boxes at both scales. The guesses are
    rated by the image-level posterior either way."""
    cls = spotlight()
    index, _ = box_index(seven, "val", SEVEN)
    loc = net("pcr", 5, classes=SEVEN)
    per = full_protocol(loc, cls, index, [40, 48], **KW)
    img = full_protocol(loc, cls, index, [40, 48], class_choice="image", **KW)
    assert per.class_choice == "per-scale" and per.to_json()["classes"] == "per-scale"
    assert img.class_choice == "image"
    for i in range(per.n_images):
        assert by_scale(per.raw, i, 48) == {6, 0, 1, 2, 3}
        assert by_scale(per.raw, i, 40) == {0, 1, 2, 3, 4}
        assert by_scale(img.raw, i, 48) == by_scale(img.raw, i, 40) == {0, 1, 2, 3, 4}
        # the union of the scales' classes competes, rated by the image posterior
        assert [c for c, _, _ in per.guesses[i]] == [0, 1, 2, 3, 4]
        assert [c for c, _, _ in img.guesses[i]] == [0, 1, 2, 3, 4]
    assert len(per.raw["boxes"]) == len(img.raw["boxes"])


def test_classifier_scales_are_used_and_recorded(data: Path, tmp_path: Path) -> None:
    index, _ = box_index(data, "val", CLASSES)
    loc, cls = net("pcr", 1), net(seed=3)
    r = full_protocol(loc, cls, index, [36], classifier_scales=[40], dense_stride=8, **KW)
    ref = evaluate(cls, index, "dense", [40], workers=0, progress=False, dense_stride=8)
    np.testing.assert_allclose(r.posteriors, ref.posteriors, rtol=1e-6)
    assert r.classifier_scales == [40] and r.classifier_stride == 8
    j = r.to_json()
    assert j["classifier_scales"] == [40] and j["classifier_dense_stride"] == 8
    back = load_saved(r.save(tmp_path / "r.npz"))
    assert (back.dense_stride, back.class_choice, back.classifier_scales,
            back.classifier_stride) == ([8], "per-scale", [40], 8)
    # default: the classifier's own multi-scale Q, from its checkpoint's training scale
    ck = vgg.save_checkpoint(tmp_path / "cls.pt", cls, meta={"train_scale": [36, 48]})
    d = full_protocol(loc, ck, index, [36], **KW)
    assert d.classifier_scales == [36, 42, 48] and d.dense_stride == [4]
    with pytest.raises(ConfigError, match="smaller than the crop"):
        full_protocol(loc, cls, index, [36], classifier_scales=[20], **KW)
    with pytest.raises(ConfigError, match="classes must be one of"):
        full_protocol(loc, cls, index, [36], class_choice="all", **KW)
    with pytest.raises(ConfigError, match="dense_stride"):
        full_protocol(loc, cls, index, [36], dense_stride=3, **KW)


def test_a_classifier_of_another_crop_scores_every_position_by_the_image(data: Path) -> None:
    """A crop-64 classifier runs at its own stride (8) and its windows are not the box
    net's (crop 32, stride 4): every box of an image, class, scale and mirror gets the
    classifier's image posterior at that scale; the classes still come from its map."""
    g = torch.Generator().manual_seed(6)
    cls = vgg.build("A", width=1 / 16, fc_width=32, crop=64, classes=CLASSES,
                    init="kaiming", generator=g).eval()
    index, _ = box_index(data, "val", CLASSES)
    r = full_protocol(net("pcr", 1), cls, index, [64], classifier_scales=[64], **KW)
    assert r.dense_stride == [4] and r.classifier_stride == 8
    for i in range(r.n_images):
        for c in (0, 1):
            s = r.raw["scores"][(r.raw["image"] == i) & (r.raw["class"] == c)]
            half = len(s) // 2   # the image's boxes, then the mirror's
            assert len(s) > 2 and np.ptp(s[:half]) == 0 and np.ptp(s[half:]) == 0


def test_files_saved_before_the_stride_was_recorded_read_as_stride_32(data: Path,
                                                                      tmp_path: Path) -> None:
    index, _ = box_index(data, "val", CLASSES)
    r = full_protocol(net("pcr", 1), net(seed=3), index, [36], dense_stride=8, **KW)
    path = r.save(tmp_path / "new.npz")
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    meta = json.loads(str(d["meta"]))
    for k in ("dense_stride", "classes", "classifier_scales", "classifier_dense_stride"):
        meta.pop(k)
    d["meta"] = np.array(json.dumps(meta))
    d.pop("raw_scale")
    np.savez(tmp_path / "old.npz", **d)
    old = load_saved(tmp_path / "old.npz")
    assert (old.dense_stride, old.class_choice, old.classifier_scales,
            old.classifier_stride) == ([32], "image", [36], 32)
    # fusing files of different strides is allowed, and said in the result
    fused = fuse_results([old, load_saved(path)])
    assert fused.dense_stride == [32, 8] and fused.table_row()["dense_stride"] == "32 & 8"
    assert "scale" not in fused.raw and len(fused.raw["boxes"]) == 2 * len(r.raw["boxes"])


# ------------------------------------------------------------------ issue 24: 3, 8, 4

def constructed(post: list[list[float]], raw_classes: list[int], boxes: list[list[float]],
                scores: list[float] | None = None, threshold: float = 0.7) -> LocResult:
    n = len(raw_classes)
    return LocResult(
        protocol="full", nets=["n"], configs=["A"], heads=["PCR"], tuned=["all"],
        train_scales=["42"], scales=[[42]], classes=SEVEN, image_ids=["a.png"],
        labels=np.array([0]), sizes=np.array([[100.0, 100.0]], np.float32),
        gt=[[(0, (10.0, 10.0, 50.0, 50.0))]], guesses=[[]], mean_box=(0.5, 0.5),
        raw={"image": np.zeros(n, np.int64), "class": np.array(raw_classes, np.int64),
             "boxes": np.array(boxes, np.float32),
             "scores": np.array(scores or [1.0] * n, np.float32),
             "scale": np.full(n, 42, np.int64)},
        posteriors=np.array(post, np.float32), classifier="c", threshold=threshold,
        dense_stride=[4], class_choice="image", classifier_scales=[42], classifier_stride=4)


def test_fuse_with_threshold_zero_merges_at_zero() -> None:
    """Issue 24 item 3: `--threshold 0` used to merge at 0.7 (``thr or 0.7``) and record
    0.0. Two boxes 10% of their side apart merge at 0.7 (the average), not at 0 (the
    better-scored one stays)."""
    r = constructed([[0.9, 0.1, 0, 0, 0, 0, 0]], [0, 0],
                    [[10, 10, 50, 50], [14, 10, 54, 50]], [1.0, 2.0])
    assert fuse_results([r]).guesses[0][0][2] == pytest.approx((12, 10, 52, 50))
    zero = fuse_results([r], threshold=0.0)
    assert zero.threshold == 0.0
    assert zero.guesses[0][0][2] == pytest.approx((14, 10, 54, 50))


def test_fused_guesses_are_classes_with_boxes() -> None:
    """Issue 24 item 8: the fused posterior's top-5 may hold a class no part saved boxes
    for (class 6: sixth in both parts); the five guesses are the best-rated classes that
    have boxes."""
    box = [10, 10, 50, 50]
    a = constructed([[.2, .2, .2, .2, .1, 0, .09]], [0, 1, 2, 3, 4], [box] * 5)
    b = constructed([[.2, .2, .2, .2, 0, .1, .09]], [0, 1, 2, 3, 5], [box] * 5)
    post = np.mean([a.posteriors, b.posteriors], axis=0)
    assert 6 in top_classes(post, 5)[0]
    f = fuse_results([a, b])
    assert [c for c, _, _ in f.guesses[0]] == [0, 1, 2, 3, 4]
    assert len(merge_guesses(f.raw, post, 0.7)[0]) == 5


def test_localisation_step_with_an_unreadable_share(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 4: a DDP rank whose share of the batch was all unreadable runs an
    empty batch (forward and backward, for the all-reduce); for localisation it must
    carry the box tensors the loss reads (it raised KeyError: 'boxes')."""
    from vgg.localize.task import LocalisationTask
    from vgg.train import distributed as D
    from vgg.train.checkpoint import Position
    from vgg.train.config import resolve
    from vgg.train.step import TrainStep, grad_scaler

    cfg = resolve({}, {"arch": "A", "width": 1 / 16, "fc_width": 32, "crop": 32,
                       "head": "pcr", "batch": 4, "scale": (36, 36), "data": str(tmp_path)})
    model = net("pcr", 1).train()
    task = LocalisationTask(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(cfg, model, task, opt, grad_scaler("none"), stats=None,
                     dist=D.DistInfo(), device=torch.device("cpu"), run_dir=tmp_path, amp="none")
    step.dist = D.DistInfo(rank=1, world_size=2)  # the other rank read 2 images

    def other_rank(t: torch.Tensor, info: D.DistInfo) -> torch.Tensor:
        if t.dtype == torch.float64:
            t[0] += 2
        return t

    monkeypatch.setattr(D, "all_reduce_sum", other_rank)
    batch = {"images": torch.empty(0, 3, 0, 0, dtype=torch.uint8),
             "labels": torch.empty(0, dtype=torch.int64), "n_bad": 2, "bad": []}
    before = [p.detach().clone() for p in model.parameters()]
    loss, right, counted, n, bad = step(batch, Position(epoch=0, step=0, global_step=0))
    assert (loss, right, counted, n, bad) == (0.0, 0.0, 0.0, 2.0, 2.0)
    # no images here: a zero gradient, so only weight decay moves the weights
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(before) == len(list(model.parameters()))
    assert set(task.empty_batch(32)) == {"images", "labels", "boxes", "box_labels",
                                         "box_valid"}


# ------------------------------------------------------------------ CLI

def test_cli_dense_stride_on_evaluate_and_predict(data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    loc = vgg.save_checkpoint(tmp_path / "loc.pt", net("pcr", 1))
    cls = vgg.save_checkpoint(tmp_path / "cls.pt", net(seed=3), meta={"train_scale": [40, 40]})
    common = ["--data", str(data), "--workers", "0", "--no-progress"]
    assert main(["localize", "evaluate", str(loc), "--classifier", str(cls), *common,
                 "--scales", "36", "--dense-stride", "8", "--classes", "image",
                 "--json", str(tmp_path / "e.json"), "--save-boxes",
                 str(tmp_path / "e.npz")]) == 0
    out = capsys.readouterr().out
    assert "stride" in out and "image" in out
    assert "dense stride 8 for the image-level top-5" in out and "at Q = 35,40,45" in out
    j = json.loads((tmp_path / "e.json").read_text())
    assert j["dense_stride"] == [8] and j["classes"] == "image"
    assert j["classifier_scales"] == [35, 40, 45] and j["classifier_dense_stride"] == 8
    assert load_saved(tmp_path / "e.npz").dense_stride == [8]
    # the default: auto (4 at crop 32), OverFeat's per-scale classes
    assert main(["localize", "evaluate", str(loc), "--classifier", str(cls), *common,
                 "--scales", "36", "--classifier-scales", "36", "--json",
                 str(tmp_path / "d.json")]) == 0
    j = json.loads((tmp_path / "d.json").read_text())
    assert j["dense_stride"] == [4] and j["classes"] == "per-scale"
    assert j["classifier_scales"] == [36]
    capsys.readouterr()
    img = data / "val" / "bar"
    assert main(["localize", "predict", str(loc), str(img), "--classifier", str(cls),
                 "--dense-stride", "8", "--workers", "0", "--no-progress", "--json",
                 "--top", "1"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 4 and all(len(p["guesses"]) == 1 for p in preds)
    # a bad stride: one line naming the flag, exit 2; full-protocol flags on the simple one
    for args, culprit in ((["--dense-stride", "3"], "--dense-stride"),
                          (["--protocol", "simple", "--dense-stride", "8"], "--dense-stride"),
                          (["--protocol", "simple", "--classifier-scales", "36"],
                           "--classifier-scales")):
        try:
            rc = main(["localize", "evaluate", str(loc), "--classifier", str(cls), *common,
                       *args])
        except SystemExit as e:
            rc = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "error:" in err[0] and culprit in err[0], err
