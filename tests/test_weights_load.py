"""The layering of loading: vgg.checkpoint reads vgg's own format only; vgg.weights'
facade (vgg.load_checkpoint) opens any file and reads it once; the builders import
vgg.weights only when given weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vgg
from vgg.checkpoint import load_checkpoint as load_vgg_checkpoint
from vgg.errors import CheckpointError
from vgg.weights import open_weights, read_weights, to_timm

SMALL = dict(width=1 / 16, fc_width=16, crop=64, num_classes=1000)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    m = vgg.build("D", init="kaiming", **SMALL).eval()
    torch.save(m.state_dict(), tmp_path / "tv.pth")
    torch.save(to_timm(m), tmp_path / "timm.pth")
    vgg.save_checkpoint(tmp_path / "ours.pt", m)
    return {"torchvision": tmp_path / "tv.pth", "timm": tmp_path / "timm.pth",
            "vgg": tmp_path / "ours.pt"}


def test_each_file_is_read_once(files: dict[str, Path],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_load = torch.load

    def counting_load(f, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    for kind, path in files.items():
        for read in (open_weights, read_weights):
            calls.clear()
            ck = read(path)
            assert calls == [str(path)], (kind, read.__name__, calls)
            assert ck.meta.get("converted_from") == (None if kind == "vgg" else kind)


def test_checkpoint_module_reads_vgg_files_only(files: dict[str, Path]) -> None:
    assert load_vgg_checkpoint(files["vgg"]).config.arch == "D"
    for kind in ("torchvision", "timm"):
        with pytest.raises(CheckpointError, match="is not a vgg checkpoint"):
            load_vgg_checkpoint(files[kind])
    # the public names open any file: they are the facade
    assert vgg.load_checkpoint is open_weights and vgg.open_weights is open_weights
    model = vgg.load_model(files["timm"])
    assert not model.training and model.classes[0] == "n01440764"


def test_builders_import_vgg_weights_only_for_weights(files: dict[str, Path]) -> None:
    code = ("import sys, vgg; vgg.vgg16(width=1 / 16, fc_width=8, crop=32); "
            "assert 'vgg.weights' not in sys.modules; "
            f"vgg.vgg16(weights={str(files['torchvision'])!r}); "
            "assert 'vgg.weights' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
