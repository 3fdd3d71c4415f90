"""Dense evaluation at the output stride of SPEC 6b (issue 19): `evaluate`, `predict`,
`vgg evaluate --dense-stride`, what results, JSON, posteriors and tables record, fusion
of two strides, and dense validation during training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vgg.cli import main
from vgg.data.folders import index_folder
from vgg.data.transforms import RescaleTransform
from vgg.errors import ConfigError
from vgg.eval import Posteriors, dense_posteriors, evaluate, fuse, predict
from vgg.eval.results import result_from_posteriors, stride_label
from vgg.model import VGGFullyConv
from vgg.report import paper_table

from _eval_util import make_images, save_net, tiny_net

KW = dict(workers=0, progress=False)


@pytest.fixture
def data(tmp_path: Path):
    # one size only: every image of a scale is in one batch
    return index_folder(make_images(tmp_path / "data", sizes=[(56, 40), (56, 40)]))


def _by_hand(net, index, q: int, stride: int) -> np.ndarray:
    """Posteriors of the fully-convolutional net at ``stride`` on the batch of every image
    of ``index`` (all of one size) rescaled to ``q``."""
    x8 = torch.stack([RescaleTransform(q)(path)["image"] for path, _ in index.samples])
    with torch.inference_mode():
        return dense_posteriors(net.to_fully_conv(stride), net.preprocess(x8)).numpy()


def test_stride_32_is_the_old_path_and_the_default_follows_the_crop(data) -> None:
    net = tiny_net()  # crop 32: default stride 4
    r32 = evaluate(net, data, scales=[40], dense_stride=32, **KW)
    # the plain stride-32 net's numbers, exactly (stride 32 is today's path)
    np.testing.assert_array_equal(r32.posteriors, _by_hand(net, data, 40, 32))
    auto = evaluate(net, data, scales=[40], **KW)
    assert r32.dense_stride == 32 and auto.dense_stride == 4
    assert [p.stride for p in auto.pieces] == [4]
    np.testing.assert_allclose(auto.posteriors, _by_hand(net, data, 40, 4), atol=1e-6)
    # 40 x 56 at stride 4: a 3 x 7 map, not the single window of stride 32
    assert np.abs(auto.posteriors - r32.posteriors).max() > 1e-4
    same = evaluate(net, data, scales=[40], dense_stride="auto", **KW)
    np.testing.assert_array_equal(same.posteriors, auto.posteriors)


def test_crops_use_the_plain_net_and_refuse_a_stride(data, monkeypatch) -> None:
    strides: list[int] = []
    forward = VGGFullyConv.forward

    def spy(self, x):  # noqa: ANN001, ANN202
        strides.append(self.stride)
        return forward(self, x)

    monkeypatch.setattr(VGGFullyConv, "forward", spy)
    r = evaluate(tiny_net(), data, method="both", scales=[40], dense_stride=8, **KW)
    assert set(strides) == {8, 32}  # dense at 8, the 50 crops through the plain net
    assert r.dense_stride == 8 and r.select(method="multicrop").dense_stride is None
    assert r.select(method="dense").dense_stride == 8
    for method in ("center", "multicrop"):
        with pytest.raises(ConfigError, match="applies to dense evaluation"):
            evaluate(tiny_net(), data, method=method, dense_stride=8, **KW)
        assert evaluate(tiny_net(), data, method=method, scales=[40],
                        **KW).dense_stride is None
    with pytest.raises(ConfigError, match="dense_stride"):
        evaluate(tiny_net(), data, dense_stride=3, **KW)


def test_stride_is_recorded_in_json_posteriors_and_tables(data, tmp_path) -> None:
    r = evaluate(tiny_net(), data, method="both", scales=[40], dense_stride=8, **KW)
    j = r.to_json()
    assert j["dense_stride"] == 8
    assert {p["method"]: p.get("dense_stride") for p in j["pieces"]} == {
        "dense": 8, "multicrop": None}
    assert r.table_row()["dense_stride"] == 8
    table = paper_table([r.select(method="dense"), r.select(method="multicrop"), r])
    head, _, dense, mc, both = table.splitlines()
    assert "dense stride" in head
    assert dense.split()[4] == "8" and mc.split()[4] == "-" and both.split()[4] == "8"
    p = Posteriors.load(r.save_posteriors(tmp_path / "p.npz"))
    assert p.meta["dense_stride"] == 8
    assert result_from_posteriors(p).dense_stride == 8


def test_fusing_two_strides_says_so(data, tmp_path) -> None:
    net = tiny_net()
    a = evaluate(net, data, scales=[40], dense_stride=32, **KW)
    b = evaluate(net, data, scales=[40], dense_stride=4, **KW)
    fa = Posteriors.load(a.save_posteriors(tmp_path / "a.npz"))
    fb = Posteriors.load(b.save_posteriors(tmp_path / "b.npz"))
    fused = result_from_posteriors(fuse([fa, fb]))
    assert fused.dense_stride == "32 & 4"
    assert "32 & 4" in paper_table([fused])
    # a file written before strides existed: its dense posteriors were at stride 32
    fa.meta.pop("dense_stride")
    assert result_from_posteriors(fa).dense_stride == 32
    assert result_from_posteriors(fuse([fa, fb])).dense_stride == "32 & 4"
    assert stride_label([None, 4, "32 & 4", None]) == "4 & 32"
    assert stride_label([None]) is None


def test_predict_applies_the_stride(tmp_path) -> None:
    img = make_images(tmp_path / "i", classes=["x"], sizes=[(56, 40)]) / "x" / "0.png"
    ck = save_net(tmp_path / "m.pt", train_scale=[40, 40])
    net = tiny_net()
    top = {s: predict(ck, [img], top=3, dense_stride=s, progress=False)[0].top
           for s in (None, 4, 32)}
    assert top[None] == top[4] and top[4] != top[32]
    want = _by_hand(net, index_folder(tmp_path / "i"), 40, 4)[0]  # one image
    assert top[4][0][1] == pytest.approx(float(want.max()), abs=1e-6)
    with pytest.raises(ConfigError, match="applies to dense evaluation"):
        predict(ck, [img], method="center", dense_stride=8, progress=False)


def test_cli_dense_stride_end_to_end(tmp_path, capsys) -> None:
    root = make_images(tmp_path / "ds" / "val", sizes=[(56, 40)]).parent
    ck = save_net(tmp_path / "m.pt", train_scale=[40, 40])
    assert main(["evaluate", str(ck), "--data", str(root), "--scales", "40",
                 "--dense-stride", "8", "--workers", "0", "--no-progress",
                 "--json", str(tmp_path / "r.json"),
                 "--save-posteriors", str(tmp_path / "p.npz")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("A "))
    assert row.split()[3:5] == ["dense", "8"]
    assert json.loads((tmp_path / "r.json").read_text())["dense_stride"] == 8
    assert Posteriors.load(tmp_path / "p.npz").meta["dense_stride"] == 8
    assert main(["predict", str(ck), str(root), "--dense-stride", "16", "--no-progress"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(ck), "--data", str(root), "--dense-stride", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dense-stride" in err[0] and "divisor of 32" in err[0]
    assert main(["evaluate", str(ck), "--data", str(root), "--method", "center",
                 "--dense-stride", "8", "--workers", "0", "--no-progress"]) == 2
    assert "applies to dense evaluation" in capsys.readouterr().err


# ------------------------------------------------------------------ training validation

def test_train_config_dense_stride() -> None:
    from vgg.train import TrainConfig

    base = dict(data="d", crop=32, scale=(36, 48))
    assert TrainConfig(**base).val_dense_stride is None  # centre-crop validation
    assert TrainConfig(**base, val_method="dense").val_dense_stride == 4
    assert TrainConfig(**base, val_method="dense", dense_stride=16).val_dense_stride == 16
    with pytest.raises(ConfigError, match="applies to dense validation"):
        TrainConfig(**base, dense_stride=8)
    with pytest.raises(ConfigError, match="dense_stride"):
        TrainConfig(**base, val_method="dense", dense_stride=12)


def test_old_dense_run_resumes_at_stride_32(tmp_path) -> None:
    import yaml

    from vgg.train import TrainConfig, resume_config
    from vgg.train.config import save_yaml

    new = tmp_path / "new"
    new.mkdir()
    cfg = TrainConfig(data="d", crop=32, scale=(36, 48), val_method="dense", out=str(new))
    save_yaml(cfg, new / "config.yaml")
    assert resume_config(new).val_dense_stride == 4  # saved as auto: the crop's default
    old = tmp_path / "old"
    old.mkdir()
    saved = yaml.safe_load((new / "config.yaml").read_text())
    del saved["dense_stride"]  # a run made before the setting existed
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    assert resume_config(old).val_dense_stride == 32
    with pytest.raises(ConfigError, match="dense_stride"):
        resume_config(old, {"dense_stride": 4})


def test_dense_validation_runs_at_the_config_stride(data, monkeypatch) -> None:
    from vgg.data.loaders import BadImages
    from vgg.train import TrainConfig
    from vgg.train.distributed import DistInfo
    from vgg.train.task import ClassificationTask, TaskContext

    strides: list[int] = []
    forward = VGGFullyConv.forward

    def spy(self, x):  # noqa: ANN001, ANN202
        strides.append(self.stride)
        return forward(self, x)

    monkeypatch.setattr(VGGFullyConv, "forward", spy)
    net = tiny_net()
    ctx = TaskContext(torch.device("cpu"), DistInfo(), BadImages())
    cfg = TrainConfig(data="d", crop=32, scale=(40, 40), val_method="dense", workers=0)
    task = ClassificationTask(cfg)
    got = task.validate(net, data, ctx)
    assert set(strides) == {4} and task.meta()["val_dense_stride"] == 4
    want = evaluate(net, data, scales=[40], dense_stride=4, **KW)
    assert got["val_top1_err"] == pytest.approx(want.top1_err)
