import numpy as np
import pytest

from vgg.errors import VggError
from vgg.eval import Posteriors, fuse, load_and_fuse


def post(ids, classes=("a", "b"), labels=None, p=None, source=None) -> Posteriors:
    n = len(ids)
    rng = np.random.default_rng(len(ids))
    p = rng.dirichlet(np.ones(len(classes)), n) if p is None else p
    return Posteriors(image_ids=list(ids), classes=list(classes),
                      labels=np.zeros(n, int) if labels is None else labels, posteriors=p,
                      meta={"method": "dense", "scales": [[256]]}, source=source)


def test_npz_round_trip(tmp_path) -> None:
    a = post(["x/1.jpg", "y/2.jpg", "z/3.jpg"], classes=("a", "b", "c"),
             labels=np.array([0, 2, 1]))
    path = a.save(tmp_path / "sub" / "a.npz")
    with np.load(path, allow_pickle=False) as z:  # plain arrays, no pickle needed
        assert z["posteriors"].dtype == np.float32
    b = Posteriors.load(path)
    assert b.image_ids == a.image_ids and b.classes == a.classes
    assert b.labels.tolist() == [0, 2, 1] and b.meta == a.meta
    np.testing.assert_allclose(b.posteriors, a.posteriors, rtol=1e-6)
    assert b.source == str(path)


def test_fuse_averages_and_matches_rows_by_id() -> None:
    a = post(["1", "2"], p=np.array([[1.0, 0.0], [0.0, 1.0]]))
    b = post(["2", "1"], p=np.array([[0.5, 0.5], [0.0, 1.0]]))  # other order
    f = fuse([a, b])
    assert f.image_ids == ["1", "2"]
    np.testing.assert_allclose(f.posteriors, [[0.5, 0.5], [0.25, 0.75]])
    assert len(f.meta["fused"]) == 2
    w = fuse([a, b], weights=[3, 1])
    np.testing.assert_allclose(w.posteriors[0], [0.75, 0.25])


def test_fuse_refuses_different_classes_naming_files() -> None:
    a = post(["1"], source="A.npz")
    b = post(["1"], classes=("a", "c"), source="B.npz")
    with pytest.raises(VggError, match=r"A\.npz and B\.npz: their class lists differ "
                                       r"\(classes differ: b, c\)"):
        fuse([a, b])
    c = post(["1"], classes=("b", "a"), source="C.npz")
    with pytest.raises(VggError, match="C.npz.*different order"):
        fuse([a, c])


def test_fuse_refuses_different_images_or_labels() -> None:
    a = post(["1", "2"], source="A.npz")
    with pytest.raises(VggError, match=r"A\.npz and B\.npz: they cover different images.*'2'"):
        fuse([a, post(["1", "3"], source="B.npz")])
    with pytest.raises(VggError, match="the labels differ"):
        fuse([a, post(["1", "2"], labels=np.array([0, 1]), source="B.npz")])
    with pytest.raises(VggError, match="nothing to fuse"):
        fuse([])


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(VggError, match="not found: .*missing.npz"):
        Posteriors.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(VggError, match="bad.npz"):
        Posteriors.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(VggError, match="other.npz is not a vgg posteriors file"):
        load_and_fuse([other])
