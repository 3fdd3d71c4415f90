"""Table 12 (VOC-2012 action classification): descriptor rows per person, AP per action
as the VOC protocol computes it, end to end on the generated voc-action layout; and the
saved-features pairing check and mean ± std convention of every transfer protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vgg.cli import main
from vgg.data.actions import ACTIONS, read_actions
from vgg.errors import DataError
from vgg.eval import metrics
from vgg.transfer import actions as A
from vgg.transfer import protocols as P
from vgg.transfer.features import Features, l2_normalise
from vgg.transfer.svm import train_svms

from _eval_util import make_images, save_net
from test_data_actions import fragment  # noqa: F401  (the hand-written devkit fragment)


def _feats(X: np.ndarray, ids: list[str], classes: list[str]) -> Features:
    return Features(l2_normalise(X), ids, np.zeros((len(ids), len(classes)), np.uint8),
                    classes, meta={"layer": "relu7"})


def test_descriptor_rows_per_person(fragment: Path) -> None:  # noqa: F811
    s = read_actions(fragment, "train")
    rng = np.random.default_rng(0)
    img = _feats(rng.normal(size=(2, 5)), ["2010_000002", "2010_000001"], ["x"])
    # the box of 2010_000001#3 could not be read: that person is left out
    box = _feats(rng.normal(size=(2, 4)), ["2010_000002#2", "2010_000001#1"], ["x"])
    v = A.person_features(img, box, s)
    assert list(v) == list(A.VARIANTS)
    a, b, c = (v[k] for k in A.VARIANTS)
    assert a.ids == b.ids == c.ids == ["2010_000001#1", "2010_000002#2"]
    assert np.array_equal(a.X, img.X[[1, 0]]) and np.array_equal(b.X, box.X[[1, 0]])
    want = l2_normalise(np.concatenate([l2_normalise(a.X), l2_normalise(b.X)], 1))
    assert c.dim == 9 and np.allclose(c.X, want)
    for f in (a, b, c):
        assert f.classes == list(ACTIONS) and f.multi_label
        assert np.array_equal(f.targets, s.targets[[0, 2]])
        assert np.array_equal(f.ignore, s.ignore[[0, 2]])


def test_ap_per_action_is_the_voc_protocols_ap() -> None:
    rng = np.random.default_rng(1)
    acts = ["jumping", "phoning", "reading"]

    def split(n: int) -> Features:
        t = (rng.random((n, 3)) < 0.3).astype(np.uint8)
        ig = rng.random((n, 3)) < 0.1
        X = rng.normal(size=(n, 6)) + 1.5 * t @ rng.normal(size=(3, 6))
        return Features(l2_normalise(X), [f"p{i}" for i in range(n)], t, acts, ig,
                        meta={"multi_label": True})

    tr, te = split(60), split(40)
    got = A.score_actions(tr, te, "trained, image only", 0, [0.1, 1, 10], 1)
    voc = {o.metric: o for o in P.score_ap(tr, te, "x", 0, [0.1, 1, 10], 1, "area")}
    assert got.metric == P.AP_NAMES["area"] and got.per_class == voc[got.metric].per_class
    svm = train_svms(tr.X, tr.targets, tr.ignore, multi_label=True, C_grid=[0.1, 1, 10],
                     seed=0, jobs=1, ap_kind="area")
    s = svm.scores(te.X)
    for k, a in enumerate(acts):
        assert got.per_class[a] == pytest.approx(metrics.average_precision(
            s[:, k], te.targets[:, k] > 0, te.ignore[:, k], "area"))
    assert got.value == pytest.approx(np.mean(list(got.per_class.values())))


def test_actions_protocol_end_to_end(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "VOCaction"
    assert main(["data", "synth", str(data), "--layout", "voc-action", "--classes", "3",
                 "--train-per-class", "12", "--val-per-class", "8", "--min-side", "48",
                 "--max-side", "80", "--workers", "0"]) == 0
    ck = save_net(tmp_path / "n.pt")
    # no --protocol: a folder with only ImageSets/Action is the actions protocol
    assert main(["transfer", str(ck), "--data", str(data), "--scales", "32",
                 "--no-baseline", "--workers", "0", "--no-progress", "--jobs", "1",
                 "--C", "0.1,1,10", "--json", str(tmp_path / "a.json"),
                 "--features-dir", str(tmp_path / "fd")]) == 0
    out = capsys.readouterr().out
    assert "Table 12" in out and "79.2" in out and "84.0" in out
    assert "AP per action" in out and "playinginstrument" in out
    r = json.loads((tmp_path / "a.json").read_text())
    assert r["protocol"] == "actions" and r["actions"] == list(ACTIONS[:3])
    assert r["paper"] == {"image only": 79.2, "image + box": 84.0}
    m = {x["label"]: x for x in r["results"]}
    assert list(m) == [f"trained, {v}" for v in A.VARIANTS]
    assert all(set(x["per_class"]) == set(ACTIONS[:3]) for x in r["results"])
    assert r["train"].startswith("trainval (") and r["test"].startswith("test (")
    # the cue is in the box, and the persons of one image do different actions: the
    # image's descriptor cannot tell them apart, its box's can (measured 0.37 vs 0.77)
    assert m["trained, image + box"]["value"] > m["trained, image only"]["value"] + 0.2, m
    assert sorted(p.name for p in (tmp_path / "fd").glob("*.npz")) == [
        "trained-test-action-images.npz", "trained-test-persons.npz",
        "trained-trainval-action-images.npz", "trained-trainval-persons.npz"]
    persons = Features.load(tmp_path / "fd" / "trained-test-persons.npz")
    assert persons.ids[0].endswith("#1")
    assert main(["transfer", str(ck), "--data", str(data), "--protocol", "caltech"]) == 2
    assert "VOC year folder" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 24 item 20

def test_saved_test_features_must_match_the_training_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    sizes = [(40, 40), (48, 40), (40, 48)]
    make_images(data / "train", sizes=sizes)
    make_images(data / "val", sizes=sizes, seed=1)
    ck, other = save_net(tmp_path / "n.pt"), save_net(tmp_path / "m.pt", seed=1)
    common = ["--workers", "0", "--no-progress"]

    def feats(name: str, *extra: str, net: Path = ck, split: str = "val") -> str:
        out = str(tmp_path / f"{name}.npz")
        assert main(["features", str(net), "--data", str(data), "--split", split,
                     "--out", out, "--scales", "32", *common, *extra]) == 0
        return out

    train = feats("train", split="train")
    good = feats("val")
    assert main(["transfer", train, "--test", good, "--C", "1", "--jobs", "1"]) == 0
    capsys.readouterr()
    for test, keys in ((feats("relu6", "--layer", "relu6"), "layer"),
                       (feats("scales", "--scales", "32,40"), "scales"),
                       (feats("net", net=other), "weights"),
                       (feats("stack", "--combine", "stack"), "combine")):
        assert main(["transfer", train, "--test", test, "--C", "1", "--jobs", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"differing {keys}" in err, err
    assert main(["transfer", train, "--test", train, "--C", "1", "--jobs", "1"]) == 2
    assert "are training images" in capsys.readouterr().err
    # another dataset, made alike
    make_images(tmp_path / "e" / "val", sizes=sizes)
    make_images(tmp_path / "e" / "train", sizes=sizes)
    assert main(["features", str(ck), "--data", str(tmp_path / "e"), "--split", "val",
                 "--out", str(tmp_path / "e.npz"), "--scales", "32", *common]) == 0
    assert main(["transfer", train, "--test", str(tmp_path / "e.npz"), "--C", "1"]) == 2
    assert "differing dataset" in capsys.readouterr().err


# ------------------------------------------------------------------ issue 24 item 10

def test_mean_and_std_over_splits_one_convention() -> None:
    o = P.Outcome("trained", ["n"], [32], "stack", "relu7", P.RECALL, [0.5, 0.7, 0.6], {})
    assert o.value == pytest.approx(0.6) and o.std == pytest.approx(0.1)  # ddof=1
    assert metrics.mean_std([0.5, 0.7, 0.6]) == (pytest.approx(0.6), pytest.approx(0.1))
    assert metrics.mean_std([0.4]) == (0.4, None)
    with pytest.raises(DataError, match="split 2 of 3 gave no finite value"):
        P.Outcome("trained", ["n"], [32], "stack", "relu7", P.RECALL, [0.5, np.nan, 0.6], {})
    with pytest.raises(ValueError, match="seed 1 of 2"):
        metrics.mean_std([np.inf, 0.2], "seed")
    one = P.Outcome("trained", ["n"], [32], "avg", "relu7", "mAP", [float("nan")], {})
    assert np.isnan(one.value) and one.std is None  # one value: shown as n/a, not refused


def test_a_split_that_scores_nothing_is_refused_by_name() -> None:
    rng = np.random.default_rng(0)
    t = np.eye(2, dtype=np.uint8)[np.array([0, 1] * 4)]
    f = Features(l2_normalise(rng.normal(size=(8, 3))), [str(i) for i in range(8)], t,
                 ["a", "b"])
    empty = (np.arange(6), np.array([], np.int64))
    with pytest.raises(DataError, match="split 2 of 2 gave no mean class recall"):
        P.score_splits(f, [(np.arange(6), np.arange(6, 8)), empty], "trained", C_grid=[1],
                       jobs=1)
