"""TrainConfig validation, YAML configs and the precedence defaults < file < given flags;
CLI errors exit with status 2 and one message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vgg.cli import build_parser, main
from vgg.cli.train import given_settings
from vgg.errors import ConfigError
from vgg.train import TrainConfig, load_yaml, parse_scale, resolve

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _cfg_from_argv(argv: list[str]) -> TrainConfig:
    args = build_parser().parse_args(["train", *argv])
    file_values = load_yaml(args.config) if getattr(args, "config", None) else {}
    return resolve(file_values, given_settings(args))


def test_defaults_are_the_paper_recipe() -> None:
    c = TrainConfig(data="d")
    assert (c.batch, c.lr, c.momentum, c.weight_decay, c.dropout, c.epochs) == (
        256, 1e-2, 0.9, 5e-4, 0.5, 74)
    assert c.lr_factor == 0.1 and c.lr_decreases == 3
    assert c.scale == (256, 256) and c.crop == 224 and c.init_std == 0.01
    assert c.decay_biases is False


def test_parse_scale() -> None:
    assert parse_scale("256") == (256, 256)
    assert parse_scale("256-512") == (256, 512)
    assert parse_scale("256,512") == (256, 512)
    with pytest.raises(ConfigError):
        parse_scale("big")
    with pytest.raises(ConfigError):
        parse_scale("1-2-3")


@pytest.mark.parametrize("kw, match", [
    ({"scale": (512, 256)}, "s_min"), ({"scale": (128, 128)}, "smaller than the crop"),
    ({"micro_batch": 512}, "micro_batch"), ({"init": "zeros"}, "init"),
    ({"device": "tpu"}, "device"), ({"amp": "fp8"}, "amp"),
    ({"init_from": "a", "finetune_from": "b"}, "not both"), ({"data": None}, "--data"),
])
def test_invalid_configs(kw: dict, match: str) -> None:
    base = {"data": "d"}
    base.update(kw)
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**base)


def test_flags_given_override_file_and_only_those(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"arch": "A", "lr": 0.05, "batch": 16, "scale": "256-512",
                                 "micro-batch": 8, "width": 0.5}))
    c = _cfg_from_argv(["--config", str(f), "--data", "d", "--lr", "0.1", "--batch", "256"])
    assert c.lr == 0.1          # given flag beats the file
    assert c.batch == 256       # even when the given value equals the default
    assert c.arch == "A" and c.width == 0.5 and c.micro_batch == 8  # file beats default
    assert c.scale == (256, 512)
    assert c.epochs == 74       # neither: default
    c2 = _cfg_from_argv(["--config", str(f), "--data", "d", "--arch", "B", "--no-flip"])
    assert c2.arch == "B" and c2.flip is False and c2.lr == 0.05


def test_bn_flag_maps_to_batch_norm() -> None:
    assert _cfg_from_argv(["--data", "d", "--bn"]).batch_norm is True
    assert _cfg_from_argv(["--data", "d"]).batch_norm is False


def test_yaml_unknown_key_and_bad_yaml(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("arch: A\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_yaml(f)
    f.write_text("arch: [A\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")


def test_shipped_configs_resolve() -> None:
    files = sorted(CONFIGS.glob("*.yaml"))
    names = {f.stem for f in files}
    for arch in ("A", "A-LRN", "B", "C", "D", "E"):
        for s in ("S256", "S384", "S256-512"):
            assert f"{arch}-{s}" in names
    for f in files:
        c = resolve(load_yaml(f), {"data": "d"})
        assert c.crop == 224 and c.batch == 256
        if f.stem.endswith("S384"):
            assert c.scale == (384, 384) and c.lr == 1e-3 and c.finetune_from
        if f.stem.endswith("S256-512"):
            assert c.scale == (256, 512) and c.finetune_from


@pytest.mark.parametrize("argv", [
    ["train", "--data", "d", "--scale", "abc"],
    ["train", "--data", "d", "--crop", "100"],
    ["train", "--data", "d", "--batch", "0"],
    ["train", "--data", "d", "--init", "zeros"],
])
def test_cli_bad_flag_values_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"),
                 "--arch", "A", "--width", "0.0625", "--fc-width", "16", "--crop", "32",
                 "--scale", "40"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "norun")]) == 2
    assert "norun" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--data", "d"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["train", "--data", "d", "--scale", "512-256", "--crop", "32"]) == 2
    assert "s_min" in capsys.readouterr().err


def test_help_says_biases_are_not_decayed(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "NOT decayed" in out and "--decay-biases" in out and "torchrun" in out


@pytest.mark.parametrize("content,expect", [
    (b"\xff\xfe\x00a\x89PNG\r\n", "is not UTF-8 text"),            # a binary file
    ("arch: A\nlr: 0.1\nlr: 0.5\n".encode(), "duplicate key 'lr' (first on line 2) (line 3"),
    (b"arch: A\nmicro-batch: 2\nmicro_batch: 4\n", "'micro_batch' is given twice"),
    (b"arch: [A\n", "is not valid YAML"),
    (b"- arch\n- A\n", "expected a mapping of settings"),
    (b"just some words\n", "expected a mapping of settings"),
])
def test_train_config_that_is_not_a_settings_file_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes, expect: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 items 16 and 22c: `vgg train --config` on a file that is not UTF-8 text,
    not YAML, not a mapping, or gives a key twice: one line naming the file, exit 2."""
    from vgg.cli import main

    monkeypatch.chdir(tmp_path)  # main trained on with the last duplicate: no runs/ here
    f = tmp_path / "run.yaml"
    f.write_bytes(content)
    assert main(["train", "--config", str(f), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(f) in err and expect in err, err


def test_every_init_scheme_is_a_train_flag(capsys: pytest.CaptureFixture) -> None:
    from vgg.model import INIT_SCHEMES

    assert "gaussian-scaled" in INIT_SCHEMES
    for scheme in INIT_SCHEMES:
        assert TrainConfig(data="d", init=scheme).init == scheme
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(INIT_SCHEMES) + "}" in out and "fan-in" in out
