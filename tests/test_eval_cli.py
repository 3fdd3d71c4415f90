import json

import numpy as np
import pytest
import torch

from vgg.cli import main

from _eval_util import make_images, save_net


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "ds"
    make_images(root / "val")
    ckpt = save_net(tmp_path / "m.pt", train_scale=[32, 48])
    return tmp_path, root, ckpt


def test_evaluate_json_and_posteriors_then_fuse(setup, capsys) -> None:
    tmp, root, ckpt = setup
    other = save_net(tmp / "n.pt", seed=5, train_scale=[32, 32])
    rc = main(["evaluate", str(ckpt), str(other), "--data", str(root), "--method", "both",
               "--scales", "32,40", "--workers", "0", "--json", str(tmp / "r.json"),
               "--save-posteriors", str(tmp / "p.npz")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "top-1 val. error (%)" in out and "[32;48] & 32" in out and "multicrop" in out
    j = json.loads((tmp / "r.json").read_text())
    assert j["n_images"] == 12 and 0 <= j["top1_err"] <= 1 and j["method"] == "both"
    assert j["scales"] == [[32, 40], [32, 40]]
    with np.load(tmp / "p.npz", allow_pickle=False) as z:
        assert z["posteriors"].shape == (12, 3) and z["image_ids"][0] == "cat/0.png"

    # dense at each scale separately, then fused without rerunning a net
    for q in (32, 40):
        assert main(["evaluate", str(ckpt), "--data", str(root / "val"), "--scales", str(q),
                     "--workers", "0", "--save-posteriors", str(tmp / f"d{q}.npz")]) == 0
    capsys.readouterr()
    assert main(["fuse", str(tmp / "d32.npz"), str(tmp / "d40.npz"), "--json",
                 str(tmp / "f.json"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| ConvNet config.") and "| 32,40 |" in out
    fj = json.loads((tmp / "f.json").read_text())
    r2 = main(["evaluate", str(ckpt), "--data", str(root), "--scales", "32,40",
               "--workers", "0", "--json", str(tmp / "e.json")])
    assert r2 == 0
    assert fj["top1_err"] == pytest.approx(json.loads((tmp / "e.json").read_text())["top1_err"])


def test_fuse_refuses_mismatch(setup, capsys, tmp_path) -> None:
    tmp, root, ckpt = setup
    assert main(["evaluate", str(ckpt), "--data", str(root), "--method", "center",
                 "--workers", "0", "--save-posteriors", str(tmp / "a.npz")]) == 0
    make_images(tmp / "ds2" / "val", classes=["cat", "dog", "owl"])
    other = save_net(tmp / "o.pt", classes=["cat", "dog", "owl"])
    assert main(["evaluate", str(other), "--data", str(tmp / "ds2"), "--method", "center",
                 "--workers", "0", "--save-posteriors", str(tmp / "b.npz")]) == 0
    capsys.readouterr()
    assert main(["fuse", str(tmp / "a.npz"), str(tmp / "b.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot fuse") and "a.npz" in err and "b.npz" in err


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "{tmp}/missing.pt", "--data", "{root}"], "checkpoint not found"),
    (["evaluate", "{ckpt}", "--data", "{tmp}/nodata"], "dataset folder not found"),
    (["evaluate", "{ckpt}", "--data", "{root}", "--scales", "16,32"], "smaller than the crop"),
    (["evaluate", "{ckpt}", "--data", "{root}", "--scales", "x"], "--scales"),
    (["evaluate", "{ckpt}", "{tmp}/n.pt", "--data", "{root}"], "class lists differ"),
    (["fuse", "{tmp}/missing.npz"], "not found"),
    (["predict", "{tmp}/missing.pt", "{root}"], "checkpoint not found"),
    (["predict", "{ckpt}", "{root}", "--scale", "20"], "smaller than the crop"),
    (["evaluate", "{ckpt}", "--data", "{root}", "--device", "cuda:7"], "--device cuda:7"),
    (["predict", "{ckpt}", "{root}", "--device", "tpu"], "unknown device 'tpu'"),
    (["evaluate", "{ckpt}", "--data", "{root}", "--json", "{ckpt}/r.json"],
     "cannot write --json"),
    (["evaluate", "{ckpt}", "--data", "{root}", "--save-posteriors", "{tmp}"], "is a folder"),
    (["evaluate", "{ckpt}", "--data", "{root}", "--scales", "99999999"], "scales"),
])
def test_user_errors_exit_2(setup, capsys, argv, message) -> None:
    tmp, root, ckpt = setup
    save_net(tmp / "n.pt", classes=["a", "b", "c"])
    argv = [a.format(tmp=tmp, root=root, ckpt=ckpt) for a in argv]
    assert main(argv + (["--workers", "0"] if argv[0] == "evaluate" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_predict_with_a_bad_file_among_good_ones(setup, capsys) -> None:
    tmp, root, ckpt = setup
    bad = root / "val" / "cat" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rc = main(["predict", str(ckpt), str(root / "val" / "cat"), str(tmp / "nope.png"),
               "--top", "2"])
    assert rc == 1
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert len(lines) == 4 and all(": " in ln and "(" in ln for ln in lines)
    assert lines[0].startswith(str(root / "val" / "cat" / "0.png"))
    assert "zz_broken.jpg" in cap.err and "nope.png" in cap.err
    assert "2 of 6 image(s) could not be predicted" in cap.err

    rc = main(["predict", str(ckpt), str(root / "val" / "dog" / "1.png"), str(bad), "--json",
               "--top", "5"])
    assert rc == 1
    j = json.loads(capsys.readouterr().out)
    assert len(j[0]["top"]) == 3  # capped at the number of classes
    assert sum(t["prob"] for t in j[0]["top"]) == pytest.approx(1.0, abs=1e-4)
    assert j[0]["top"][0]["prob"] >= j[0]["top"][1]["prob"]
    assert "error" in j[1] and "zz_broken.jpg" in j[1]["error"]


def test_unwritable_outputs_fail_before_the_work(setup, capsys, monkeypatch) -> None:
    tmp, root, ckpt = setup
    import sys

    ev = sys.modules["vgg.eval.evaluate"]
    ran = []
    monkeypatch.setattr(ev, "_run", lambda *a, **k: ran.append(1))
    blocker = tmp / "file"
    blocker.write_text("x")
    assert main(["evaluate", str(ckpt), "--data", str(root), "--json",
                 str(blocker / "r.json"), "--workers", "0"]) == 2
    assert "cannot write --json" in capsys.readouterr().err and not ran


def test_one_line_errors_name_the_command(setup, capsys) -> None:
    tmp, root, ckpt = setup
    with pytest.raises(SystemExit) as e:
        main(["predict", str(ckpt), str(root), "--crop", "100"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("vgg predict: error: unrecognized arguments: --crop 100")
    assert len(err.strip().splitlines()) == 1 and "usage" not in err
    with pytest.raises(SystemExit):
        main(["train", "--data", "d", "--lr", "nan"])
    err = capsys.readouterr().err
    assert err.startswith("vgg train: error: argument --lr") and "finite" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["train", "--data", "d", "--workers", "99999999999"])
    assert "at most 128" in capsys.readouterr().err


def test_fuse_refuses_non_finite_posteriors(setup, capsys) -> None:
    tmp, root, ckpt = setup
    assert main(["evaluate", str(ckpt), "--data", str(root), "--method", "center",
                 "--workers", "0", "--save-posteriors", str(tmp / "a.npz")]) == 0
    with np.load(tmp / "a.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["posteriors"][3, 1] = np.nan
    np.savez(tmp / "nan.npz", **arrays)
    capsys.readouterr()
    assert main(["fuse", str(tmp / "nan.npz")]) == 2
    err = capsys.readouterr().err
    assert "nan.npz holds non-finite posteriors" in err


def test_predict_json_keeps_full_precision_and_text_three_digits(tmp_path, capsys) -> None:
    from _eval_util import tiny_net
    import vgg

    names = [f"c{i:03d}" for i in range(1000)]
    net = tiny_net(classes=names)
    with torch.no_grad():
        net.classifier[6].weight.mul_(0.0)  # (nearly) uniform over 1000 classes
    ckpt = vgg.save_checkpoint(tmp_path / "k.pt", net)
    img = make_images(tmp_path / "imgs", classes=["x"], sizes=[(32, 32)]) / "x" / "0.png"
    assert main(["predict", str(ckpt), str(img), "--json", "--top", "2"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j[0]["top"][0]["prob"] == pytest.approx(0.001, rel=1e-3)
    assert j[0]["top"][0]["prob"] != round(j[0]["top"][0]["prob"], 3)
    assert main(["predict", str(ckpt), str(img), "--top", "1"]) == 0
    assert "(0.001)" in capsys.readouterr().out


def test_predict_folder_reports_broken_images_not_annotations(setup, capsys) -> None:
    tmp, root, ckpt = setup
    folder = root / "val" / "dog"
    (folder / "0.xml").write_text("<annotation/>")  # VOC annotations beside the images
    (folder / "photo").write_bytes((folder / "1.png").read_bytes())  # no extension
    (folder / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rc = main(["predict", str(ckpt), str(folder), "--top", "1"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "photo:" in cap.out  # an image without an extension is predicted
    assert "zz.png" in cap.err and "0.xml" not in cap.err  # only the broken image is an error
    assert "1 of 6 image(s) could not be predicted" in cap.err
