"""Localisation (Appendix A): boxes follow the augmentation, the Euclidean loss, the box
map of the fully-convolutional net, the ILSVRC localisation error on constructed
predictions, the simple and full protocols, saved boxes and their fusion, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vgg
from vgg.cli import main
from vgg.data.annotations import Box, write_voc_xml
from vgg.data.transforms import TrainTransform
from vgg.errors import CheckpointError, ConfigError, DataError
from vgg.localize.boxes import cxcywh_to_xyxy
from vgg.localize.data import LocTrainTransform, box_index, choose_target, map_to_classes
from vgg.localize.evaluate import full_protocol, simple_protocol
from vgg.localize.fusion import fuse_saved
from vgg.localize.result import LocResult, load_saved
from vgg.localize.scoring import correct_at
from vgg.localize.task import box_loss

CLASSES = ["bar", "dot"]


def rect_image(path: Path, size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    w, h = size
    a = np.full((h, w, 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = (250, 250, 250)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def make_boxes_dataset(root: Path, n: int = 4, seed: int = 0) -> Path:
    """root/{train,val}/<class>/i.png with one bright rectangle each, VOC XML beside."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in CLASSES:
            for i in range(n):
                w, h = int(rng.integers(40, 64)), int(rng.integers(40, 64))
                bw, bh = int(rng.integers(12, w - 4)), int(rng.integers(12, h - 4))
                x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                p = root / split / c / f"{i}.png"
                rect_image(p, (w, h), (x0, y0, x0 + bw, y0 + bh))
                write_voc_xml(p.with_suffix(".xml"), p.name, (w, h),
                              [Box(c, x0, y0, x0 + bw, y0 + bh)])
    return root


def tiny_cls(seed: int = 0, classes: list[str] | None = None) -> vgg.VGG:
    g = torch.Generator().manual_seed(seed)
    return vgg.build("A", width=1 / 16, fc_width=32, crop=32, classes=classes or CLASSES,
                     init="kaiming", generator=g).eval()


def tiny_loc(head: str = "pcr", seed: int = 0) -> vgg.VGG:
    g = torch.Generator().manual_seed(seed)
    return vgg.build("A", width=1 / 16, fc_width=32, crop=32, classes=CLASSES, head=head,
                     init="kaiming", generator=g).eval()


# ------------------------------------------------------------------ data and targets

def test_boxes_follow_rescale_crop_and_flip(tmp_path: Path) -> None:
    """The target of a random training crop is the rectangle as it appears in the crop."""
    p = tmp_path / "a.png"
    box = (10, 14, 70, 50)
    rect_image(p, (96, 80), box)
    base = TrainTransform(32, (40, 56), flip=True, colour_std=0.0)
    t = LocTrainTransform(base, {p: [Box("bar", *box)]}, CLASSES, min_visible=0.0)
    seen_flip = set()
    for i in range(24):
        out = t(p, np.random.default_rng(i))
        img = out["image"].float().mean(0)  # (32, 32)
        ys, xs = torch.nonzero(img > 140, as_tuple=True)
        if not out["box_valid"] or len(xs) < 20:
            continue
        target = cxcywh_to_xyxy(out["box"].double()) * 32  # crop pixels, may pass the edges
        visible = target.clamp(0, 32)
        found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).double()
        assert (visible - found).abs().max() <= 1.5, (i, visible, found)
        seen_flip.add(bool(out["box"][0] * 32 > 16))
        assert out["box_label"] == 0
    assert seen_flip == {True, False}  # both mirrored and plain crops were checked


def test_target_choice_and_crops_without_a_target() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 40, 40], [100, 100, 120, 120]],
                         dtype=torch.float64)
    labels = torch.tensor([1, 0, 1])
    box, label, valid = choose_target(boxes, labels, 32)
    assert valid and label == 0 and box.tolist() == [5, 5, 40, 40]  # most area inside
    box, label, valid = choose_target(boxes[2:], labels[2:], 32)
    assert not valid  # nothing visible: masked out of the loss
    # a sliver (less than 20% of the box inside) is not a target
    assert not choose_target(torch.tensor([[28.0, 0, 60, 32]]), torch.tensor([0]), 32)[2]
    assert not choose_target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 32)[2]


def test_dataset_classes_map_to_the_net_by_name(tmp_path: Path) -> None:
    root = make_boxes_dataset(tmp_path / "d", n=2)
    idx, dropped = box_index(root, "train", ["zebra", "dot", "bar"], what="net.pt")
    assert dropped == 0 and idx.classes == ["zebra", "dot", "bar"]
    assert sorted({lbl for _, lbl in idx.samples}) == [1, 2]
    with pytest.raises(DataError, match="not classes of net.pt: bar"):
        box_index(root, "train", ["dot"], what="net.pt")
    with pytest.raises(DataError, match="not classes of x"):
        map_to_classes(idx, ["zebra"], "x")
    # images without a usable box are left out and counted
    (root / "train" / "bar" / "0.xml").unlink()
    idx, dropped = box_index(root, "train", None)
    assert dropped == 1 and len(idx) == 3


# ------------------------------------------------------------------ nets and loss

def test_fully_conv_box_map_equals_the_fc_net_on_a_crop() -> None:
    for head, k in (("scr", 4), ("pcr", 8)):
        m = tiny_loc(head)
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            fc = m(x)
            dense = m.to_fully_conv()(x)
        assert fc.shape == (2, k) and dense.shape == (2, k, 1, 1)
        torch.testing.assert_close(dense.flatten(1), fc, rtol=1e-5, atol=1e-6)
    assert m.to_fully_conv().windows(2, 3).tolist()[:4] == [[0, 0, 32], [32, 0, 32],
                                                             [64, 0, 32], [0, 32, 32]]


def test_euclidean_loss_penalises_only_the_target_class() -> None:
    target = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.2, 0.3, 0.4, 0.4]])
    out = torch.zeros(2, 8)
    out[0, 4:8] = target[0]  # image 0, class 1: exact
    out[1, 0:4] = target[1] + 0.1  # image 1, class 0: off by 0.1 each
    loss, hits, n = box_loss(out, target, torch.tensor([1, 0]), torch.tensor([True, True]),
                             "pcr")
    assert loss.item() == pytest.approx(0.5 * 4 * 0.01, rel=1e-5)
    assert hits.item() == 1 and n.item() == 2  # the shifted box has IoU 0.43
    loss, _, n = box_loss(out, target, torch.tensor([1, 0]), torch.tensor([True, False]),
                          "pcr")
    assert loss.item() == pytest.approx(0.0) and n.item() == 1  # masked crop costs nothing
    out.requires_grad_(True)
    box_loss(out, target, torch.tensor([1, 0]), torch.tensor([True, True]), "pcr")[0].backward()
    assert out.grad[0, :4].abs().sum() == 0 and out.grad[1, 4:].abs().sum() == 0
    scr, _, _ = box_loss(out[:, :4], target, torch.tensor([1, 0]),
                         torch.tensor([True, True]), "scr")
    assert scr.item() > 0


# ------------------------------------------------------------------ localisation error

def test_localisation_error_on_constructed_predictions() -> None:
    gt = [[(0, (0.0, 0.0, 10.0, 10.0))], [(1, (0.0, 0.0, 10.0, 10.0))],
          [(2, (0.0, 0.0, 10.0, 10.0)), (2, (50.0, 50.0, 60.0, 60.0))]]
    good, shifted = (0.0, 0.0, 10.0, 10.0), (3.0, 0.0, 13.0, 10.0)  # IoU 7/13 > 0.5
    bad = (5.0, 0.0, 15.0, 10.0)  # IoU 1/3
    guesses = [
        [(0, 0.9, shifted)],                          # right class, IoU 0.54: right
        [(0, 0.6, good), (1, 0.3, bad), (1, 0.1, good)],  # wrong, wrong IoU, then right
        [(2, 0.8, (50.0, 50.0, 60.0, 60.0))],         # the second box of the class
    ]
    right = correct_at(guesses, gt)
    assert right[:, 0].tolist() == [True, False, True]
    assert right.any(1).tolist() == [True, True, True]
    r = LocResult(protocol="full", nets=["n"], configs=["A"], heads=["PCR"], tuned=["all"],
                  train_scales=["32"], scales=[[32]], classes=["a", "b", "c"],
                  image_ids=["0", "1", "2"], labels=np.array([0, 1, 2]),
                  sizes=np.array([[10, 10], [10, 10], [100, 100]], np.float32), gt=gt,
                  guesses=guesses, mean_box=(0.5, 0.5))
    assert r.top1_err == pytest.approx(1 / 3) and r.top5_err == 0.0
    # baselines on the same classes: the whole image is right on images 0 and 1 only
    # when the guessed class is right: image 0 (class 0), image 1 at guess 2
    assert r.errors["whole_top1_err"] == pytest.approx(2 / 3)
    assert r.errors["whole_top5_err"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ protocols

@pytest.fixture(scope="module")
def boxes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_boxes_dataset(tmp_path_factory.mktemp("boxes"))


def test_simple_protocol_is_exact_for_a_net_that_predicts_the_crop(boxes_data: Path) -> None:
    """An SCR net whose last layer outputs (0.5, 0.5, 1, 1) predicts the central crop:
    the protocol must place it at the centre of the image, in image pixels."""
    m = tiny_loc("scr")
    with torch.no_grad():
        m.classifier[6].weight.zero_()
        m.classifier[6].bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0]))
    index, _ = box_index(boxes_data, "val", CLASSES)
    r = simple_protocol(m, index, 32, workers=0, progress=False)
    for (w, h), g in zip(r.sizes, r.guesses):
        s = min(w, h) / 32  # Q = 32: the crop is the image's central square
        side = 32 * s
        x0, y0 = (round(w / s) - 32) // 2 * s, (round(h / s) - 32) // 2 * s
        np.testing.assert_allclose(g[0][2], (x0, y0, x0 + side, y0 + side), atol=1.0)
    assert r.n_images == 8 and 0 <= r.top1_err <= 1 and r.top5_err is None


def test_full_protocol_fusion_and_saved_boxes(boxes_data: Path, tmp_path: Path) -> None:
    index, _ = box_index(boxes_data, "val", CLASSES)
    a, b, cls = tiny_loc("pcr", 1), tiny_loc("scr", 2), tiny_cls(3)
    kw = dict(workers=0, progress=False)
    ra = full_protocol(a, cls, index, [32, 40], **kw)
    assert ra.n_images == 8 and all(1 <= len(g) <= 2 for g in ra.guesses)
    assert ra.top5_err <= ra.top1_err and "cls_top1_err" in ra.errors
    rb = full_protocol(b, cls, index, [32, 40], **kw)
    rab = full_protocol([a, b], cls, index, [32, 40], **kw)
    # the fusion merges the union of the raw boxes: the same as fusing the saved files
    fused = fuse_saved([ra.save(tmp_path / "a.npz"), rb.save(tmp_path / "b.npz")])
    assert len(rab.raw["boxes"]) == len(ra.raw["boxes"]) + len(rb.raw["boxes"])
    for x, y in zip(fused.guesses, rab.guesses):
        assert [c for c, _, _ in x] == [c for c, _, _ in y]
        np.testing.assert_allclose([bx for _, _, bx in x], [bx for _, _, bx in y], atol=1e-3)
    back = load_saved(tmp_path / "a.npz")
    assert back.errors == pytest.approx(ra.errors) and back.image_ids == ra.image_ids
    # re-scoring with another threshold reruns no net
    assert fuse_saved([tmp_path / "a.npz"], threshold=0.0).threshold == 0.0
    with pytest.raises(ConfigError, match="class lists"):
        full_protocol(a, tiny_cls(classes=["x", "y"]), index, [32], **kw)


def test_classification_commands_refuse_localisation_nets(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    loc = vgg.save_checkpoint(tmp_path / "loc.pt", tiny_loc())
    cls = vgg.save_checkpoint(tmp_path / "cls.pt", tiny_cls())
    img = tmp_path / "x.png"
    rect_image(img, (40, 40), (5, 5, 30, 30))
    assert main(["predict", str(loc), str(img)]) == 2
    err = capsys.readouterr().err
    assert "localisation net A with a PCR head" in err and "vgg localize" in err
    assert main(["localize", "evaluate", str(cls), "--data", str(tmp_path),
                 "--protocol", "simple"]) == 2
    assert "not a localisation net" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        from vgg.localize.evaluate import as_loc_net
        as_loc_net(cls)


# ------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_tiny_training_beats_both_baselines(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Classification net, then a PCR net from it through `vgg localize train`; its
    simple-protocol error must beat the whole-image and the mean-box baselines."""
    from vgg.data.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "shapes", classes=2, train_per_class=150,
                               val_per_class=20, min_side=40, max_side=56, workers=0,
                               object_size=(0.25, 0.9))
    common = ["--data", str(data), "--batch", "32", "--workers", "0", "--no-progress",
              "--no-tensorboard", "--no-plot"]
    assert main(["train", *common, "--arch", "A", "--bn", "--width", "0.125",
                 "--fc-width", "128", "--crop", "32", "--scale", "36", "--lr", "0.02",
                 "--init", "kaiming", "--epochs", "2", "--out", str(tmp_path / "cls"),
                 "--stats-limit", "50"]) == 0
    assert main(["localize", "train", *common, "--from", str(tmp_path / "cls" / "best.pt"),
                 "--head", "pcr", "--lr", "0.01", "--epochs", "12", "--schedule", "cosine",
                 "--out", str(tmp_path / "loc")]) == 0
    capsys.readouterr()
    assert main(["localize", "evaluate", str(tmp_path / "loc" / "best.pt"), "--data",
                 str(data), "--protocol", "simple", "--workers", "0", "--json",
                 str(tmp_path / "s.json")]) == 0
    j = json.loads((tmp_path / "s.json").read_text())
    assert j["n_images"] == 40
    assert j["top1_err"] < j["whole_top1_err"] and j["top1_err"] < j["mean_top1_err"], j
    assert main(["localize", "evaluate", str(tmp_path / "loc" / "best.pt"), "--classifier",
                 str(tmp_path / "cls" / "best.pt"), "--data", str(data), "--workers", "0",
                 "--save-boxes", str(tmp_path / "f.npz")]) == 0
    out = capsys.readouterr().out
    assert "full" in out and "top-5 loc. err" in out
    assert main(["localize", "predict", str(tmp_path / "loc" / "best.pt"), "--classifier",
                 str(tmp_path / "cls" / "best.pt"), str(data / "val" / "circle"), "--top",
                 "2", "--draw", str(tmp_path / "drawn"), "--workers", "0"]) == 0
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 20
    ck = vgg.load_checkpoint(tmp_path / "loc" / "best.pt")
    assert ck.config.head == "pcr" and ck.meta["tune"] == "all" and len(ck.meta["mean_box"]) == 2
