import numpy as np
import pytest

from vgg.eval import metrics

P = np.array([[0.7, 0.2, 0.1],   # true 0 -> right
              [0.5, 0.3, 0.2],   # true 1 -> predicted 0, true is 2nd
              [0.6, 0.3, 0.1],   # true 2 -> predicted 0, true is 3rd
              [0.1, 0.1, 0.8]])  # true 2 -> right
Y = np.array([0, 1, 2, 2])
CL = ["a", "b", "c"]


def test_topk_hand_computed() -> None:
    assert metrics.top1_error(P, Y) == pytest.approx(0.5)
    assert metrics.topk_error(P, Y, 2) == pytest.approx(0.25)
    assert metrics.topk_error(P, Y, 3) == 0.0
    assert metrics.top5_error(P, Y) == 0.0  # k capped at K = 3


def test_ties_go_to_lower_index() -> None:
    p = np.array([[0.5, 0.5], [0.5, 0.5]])
    assert metrics.top1_error(p, np.array([0, 1])) == pytest.approx(0.5)


def test_per_image_wrong_and_top_classes_agree() -> None:
    assert metrics.topk_wrong(P, Y, 1).tolist() == [False, True, True, False]
    assert metrics.topk_wrong(P, Y, 2).tolist() == [False, False, True, False]
    top = metrics.top_classes(P, 2)
    assert top.tolist() == [[0, 1], [0, 1], [0, 1], [2, 0]]
    assert metrics.top_classes(P, 5).shape == (4, 3)  # k capped at K
    # the ranking topk_wrong counts is top_classes' order, ties included
    tied = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4]])
    for k in (1, 2, 3):
        for y in range(3):
            labels = np.full(2, y)
            in_top = (metrics.top_classes(tied, k) == y).any(1)
            assert (metrics.topk_wrong(tied, labels, k) == ~in_top).all()


def test_per_class_and_confusion() -> None:
    pc = metrics.per_class_accuracy(P, Y, CL)
    assert pc == {"a": {"n": 1, "top1_acc": 1.0}, "b": {"n": 1, "top1_acc": 0.0},
                  "c": {"n": 2, "top1_acc": 0.5}}
    cm = metrics.confusion_matrix(P, Y)
    assert cm.tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 1]]
    pairs = metrics.confused_pairs(P, Y, CL)
    assert pairs == [{"true": "b", "predicted": "a", "count": 1, "fraction": 1.0},
                     {"true": "c", "predicted": "a", "count": 1, "fraction": 0.5}]
    assert metrics.confused_pairs(P, Y, CL, limit=1) == pairs[:1]


def test_absent_class_left_out_and_summary() -> None:
    s = metrics.summarize(P[:1], Y[:1], CL)
    assert s["per_class"] == {"a": {"n": 1, "top1_acc": 1.0}}
    assert s["n_images"] == 1 and s["top1_err"] == 0.0 and s["confused_pairs"] == []


def test_bad_shapes_rejected() -> None:
    with pytest.raises(ValueError, match="labels"):
        metrics.top1_error(P, Y[:2])
    with pytest.raises(ValueError, match="lie in"):
        metrics.top1_error(P, np.array([0, 1, 2, 3]))
    assert np.isnan(metrics.top1_error(np.zeros((0, 3)), np.zeros(0)))


def test_non_finite_rows_count_as_wrong() -> None:
    p = np.array([[0.9, 0.1], [np.nan, 0.2], [0.3, np.inf]])
    y = np.array([0, 0, 1])
    assert metrics.top1_error(p, y) == pytest.approx(2 / 3)  # NaN never looks right
    assert metrics.top5_error(p, y) == pytest.approx(2 / 3)
