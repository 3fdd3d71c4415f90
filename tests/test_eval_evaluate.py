import numpy as np
import pytest
import torch

import vgg
from vgg.data.folders import index_folder
from vgg.errors import ConfigError, DataError, VggError
from vgg.eval import EvalNet, evaluate
from vgg.eval.fusion import Posteriors, fuse
from vgg.model import VGGFullyConv
from vgg.report import paper_table

from _eval_util import CLASSES, make_images, save_net, tiny_net


@pytest.fixture
def data(tmp_path):
    return index_folder(make_images(tmp_path / "data"))


def test_dense_equals_centre_through_files(tmp_path) -> None:
    index = index_folder(make_images(tmp_path / "sq", sizes=[(48, 48), (40, 40)]))
    net = tiny_net()
    dense = evaluate(net, index, method="dense", scales=[32], flip=False, workers=0,
                     progress=False)
    centre = evaluate(net, index, method="center", scales=[32], workers=0, progress=False)
    np.testing.assert_allclose(dense.posteriors, centre.posteriors, atol=1e-5)
    assert dense.n_images == 6 and dense.image_ids[0] == "cat/0.png"


def test_both_multiscale_and_select(data, tmp_path, monkeypatch) -> None:
    seen = []
    forward = VGGFullyConv.forward

    def spy(self, x):
        seen.append(tuple(x.shape))
        return forward(self, x)

    monkeypatch.setattr(VGGFullyConv, "forward", spy)
    ckpt = save_net(tmp_path / "m.pt", train_scale=[32, 48])
    r = evaluate([ckpt], data, method="both", batch_size=3, workers=0, progress=False)
    assert r.scales == [[32, 40, 48]] and r.train_scales == ["[32;48]"]
    assert len(r.pieces) == 6 and r.n_images == 12
    crops = sum(s[0] for s in seen if s[-2:] == (32, 32) and s[0] > 3)
    # multi-crop: 50 crops per scale and image, 150 over three scales
    assert crops == 150 * 12
    dense = r.select(method="dense")
    mc = r.select(method="multicrop")
    np.testing.assert_allclose(r.posteriors, (dense.posteriors + mc.posteriors) / 2, atol=1e-6)
    one = r.select(method="dense", scales=[40])
    assert one.scales == [[40]] and one.method == "dense"
    np.testing.assert_allclose(r.posteriors.sum(1), 1.0, atol=1e-5)
    assert 0.0 <= r.top5_err <= r.top1_err <= 1.0
    with pytest.raises(VggError, match="holds no posteriors"):
        r.select(method="center")
    j = r.to_json()
    assert {"top1_err", "top5_err", "n_images", "per_class", "confused_pairs", "config",
            "scales", "method"} <= set(j)
    assert j["n_images"] == 12 and len(j["pieces"]) == 6
    table = paper_table([dense, mc, r])
    assert "[32;48]" in table and "32,40,48" in table and "both" in table


def test_save_posteriors_round_trip(data, tmp_path) -> None:
    r = evaluate(tiny_net(), data, method="center", workers=0, progress=False)
    p = Posteriors.load(r.save_posteriors(tmp_path / "p.npz"))
    assert p.image_ids == r.image_ids and p.classes == CLASSES
    np.testing.assert_array_equal(p.labels, r.labels)
    np.testing.assert_allclose(p.posteriors, r.posteriors)
    assert p.meta["method"] == "center" and p.meta["scales"] == [[37]]


def test_fusion_of_two_nets_is_the_average(data, tmp_path) -> None:
    """Sect. 4.4: nets are weighted equally, whatever their number of test scales: a net
    trained at S = crop has two default scales {S, S+5}, a jittered one three."""
    a = save_net(tmp_path / "a.pt", seed=1, train_scale=[32, 32])   # Q = {32, 37}
    b = save_net(tmp_path / "b.pt", seed=2, train_scale=[32, 48])   # Q = {32, 40, 48}
    kw = dict(method="dense", workers=0, progress=False)
    ra, rb = evaluate(a, data, **kw), evaluate(b, data, **kw)
    assert ra.scales == [[32, 37]] and rb.scales == [[32, 40, 48]]
    rab = evaluate([a, b], data, **kw)
    np.testing.assert_allclose(rab.posteriors, (ra.posteriors + rb.posteriors) / 2, atol=1e-6)
    np.testing.assert_allclose(rab.select(nets=[1]).posteriors, rb.posteriors, atol=1e-6)
    # ... and equals the fusion of the saved posteriors of the nets evaluated alone
    fused = fuse([Posteriors.load(ra.save_posteriors(tmp_path / "a.npz")),
                  Posteriors.load(rb.save_posteriors(tmp_path / "b.npz"))])
    np.testing.assert_allclose(fused.posteriors, rab.posteriors, atol=1e-6)
    # the average over the five (net, scale) pieces would be another number
    pieces = np.mean([p.posteriors for p in rab.pieces], axis=0)
    assert np.abs(pieces - rab.posteriors).max() > 1e-4


def test_refuses_nets_with_different_classes(data, tmp_path) -> None:
    a = save_net(tmp_path / "a.pt")
    b = save_net(tmp_path / "b.pt", classes=["cat", "dog", "owl"])
    with pytest.raises(VggError, match=r"a\.pt and .*b\.pt: their class lists differ"):
        evaluate([a, b], data, workers=0, progress=False)


def test_bad_image_is_skipped_and_named(data, tmp_path) -> None:
    bad = tmp_path / "data" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = evaluate(tiny_net(), index_folder(tmp_path / "data"), method="dense", scales=[32],
                 workers=0, progress=False)
    assert r.n_images == 12 and r.skipped == ["dog/broken.png"]
    assert r.to_json()["n_skipped"] == 1


def test_dataset_with_subset_of_classes_is_remapped(tmp_path) -> None:
    index = index_folder(make_images(tmp_path / "d", classes=["fox"], sizes=[(32, 32)]))
    r = evaluate(tiny_net(), index, method="center", scales=[32], workers=0, progress=False)
    assert r.labels.tolist() == [2]
    other = index_folder(make_images(tmp_path / "e", classes=["emu"], sizes=[(32, 32)]))
    with pytest.raises(DataError, match="unknown to .*: emu"):
        evaluate(tiny_net(), other, workers=0, progress=False)


def test_labels_follow_class_names_not_positions(tmp_path, caplog) -> None:
    """ImageNet-style: a 10-class net; the dataset holds 2 of its classes, whose folders
    sort first here but are classes 7 and 3 of the net."""
    names = [f"n0{i}" for i in range(10)]
    net = tiny_net(classes=names)
    index = index_folder(make_images(tmp_path / "d", classes=["n07", "n03"],
                                     sizes=[(32, 32)]))
    assert index.classes == ["n03", "n07"]
    r = evaluate(net, index, method="center", scales=[32], workers=0, progress=False)
    assert sorted(r.labels.tolist()) == [3, 7]
    assert r.labels[r.image_ids.index("n07/0.png")] == 7
    # a net without names: refused unless the dataset has exactly its number of classes
    anon = tiny_net(classes=names)
    anon.classes = None
    with pytest.raises(DataError, match="no class names.* 2 classes .*10 outputs"):
        evaluate(anon, index, workers=0, progress=False)
    three = index_folder(make_images(tmp_path / "t", sizes=[(32, 32)]))
    anon3 = tiny_net()
    anon3.classes = None
    with caplog.at_level("WARNING"):
        r3 = evaluate(anon3, three, method="center", scales=[32], workers=0, progress=False)
    assert "has no class names" in caplog.text and r3.labels.tolist() == [0, 1, 2]


def test_nan_posteriors_count_as_wrong(data) -> None:
    net = tiny_net()
    with torch.no_grad():
        net.classifier[6].bias[0] = float("nan")
    r = evaluate(net, data, method="center", scales=[32], workers=0, progress=False)
    assert r.n_images == 12 and not r.skipped  # scored, not "unreadable"
    assert r.top1_err == 1.0 and r.top5_err == 1.0


def test_json_says_what_each_piece_is(data, tmp_path) -> None:
    c = evaluate(tiny_net(), data, method="center", scales=[32], workers=0, progress=False)
    j = c.to_json()
    assert j["flip"] is False and j["pieces"][0]["flip"] is False
    d = evaluate(tiny_net(), data, method="dense", scales=[32], workers=0, progress=False)
    assert d.to_json()["pieces"][0]["flip"] is True
    from vgg.eval import fuse_results

    fj = fuse_results([c, d]).to_json()
    assert all("scale" not in p for p in fj["pieces"])  # never a made-up "scale": 0


def test_argument_errors(data) -> None:
    net = tiny_net()
    with pytest.raises(ConfigError, match="unknown method"):
        evaluate(net, data, method="tencrop")
    with pytest.raises(ConfigError, match="smaller than the crop 32"):
        evaluate(net, data, scales=[16, 32])
    with pytest.raises(vgg.errors.CheckpointError, match="not found"):
        evaluate("/nonexistent/x.pt", data)


def test_train_scale_override_and_evalnet(data) -> None:
    r = evaluate(EvalNet(tiny_net(), "mine", [40, 40]), data, method="center", workers=0,
                 progress=False)
    assert r.nets == ["mine"] and r.scales == [[40]]
    r2 = evaluate(tiny_net(), data, method="dense", multi_scale=False, train_scale=[32, 48],
                  workers=0, progress=False)
    assert r2.scales == [[40]]
