import pytest
import torch

from vgg.localize import merge
from vgg.localize import (DEFAULT_MERGE_THRESHOLD, greedy_merge, greedy_merge_reference,
                          match_score)


@pytest.fixture(params=["numpy", "torch"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both implementations of ``greedy_merge``: numpy for classes of up to ``_SMALL``
    boxes (CPU), the cached row minima in torch above (and on CUDA)."""
    monkeypatch.setattr(merge, "_SMALL", 10**9 if request.param == "numpy" else 0)
    return request.param


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def labels(*xs):
    return torch.tensor(xs, dtype=torch.long)


def clustered(seed: int, n_objects: int = 4, per: int = 12, n_labels: int = 3,
              sigma: float = 0.1, dtype=torch.float64):
    """Boxes jittered around a few objects (centre and log-size noise sigma), several labels,
    a few uniform outliers, shuffled."""
    g = torch.Generator().manual_seed(seed)
    side = torch.rand(n_objects, 2, generator=g, dtype=dtype) * 80 + 20
    centre = torch.rand(n_objects, 2, generator=g, dtype=dtype) * 200 + 50
    owner = torch.arange(n_objects * per) % n_objects
    c = centre[owner] + torch.randn(len(owner), 2, generator=g, dtype=dtype) * sigma * side[owner]
    s = side[owner] * torch.exp(torch.randn(len(owner), 2, generator=g, dtype=dtype) * sigma)
    out_c = torch.rand(5, 2, generator=g, dtype=dtype) * 300
    out_s = torch.rand(5, 2, generator=g, dtype=dtype) * 80 + 20
    boxes = torch.cat([torch.cat([c - s / 2, c + s / 2], 1),
                       torch.cat([out_c - out_s / 2, out_c + out_s / 2], 1)])
    lab = torch.cat([owner % n_labels, torch.randint(n_labels, (5,), generator=g)])
    scores = torch.rand(len(boxes), generator=g, dtype=dtype)
    perm = torch.randperm(len(boxes), generator=g)
    return boxes[perm], scores[perm], lab[perm]


def as_sorted_rows(r) -> torch.Tensor:
    rows = torch.cat([r.boxes, r.scores[:, None], r.labels[:, None].to(r.boxes.dtype),
                      r.counts[:, None].to(r.boxes.dtype)], 1)
    for k in reversed(range(rows.shape[1])):  # lexicographic sort, stable
        rows = rows[rows[:, k].argsort(stable=True)]
    return rows


def test_match_score_properties() -> None:
    a = t([0, 0, 10, 10], [0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110])
    m = match_score(a, a)
    assert m.shape == (4, 4)
    assert m[0, 1] == 0  # identical
    torch.testing.assert_close(m, m.T)
    # offset by half a side: distance 0.5 sizes + (1 - IoU 1/3)
    torch.testing.assert_close(m[0, 2], torch.tensor(0.5 + 2 / 3, dtype=torch.float64))
    assert m[0, 3] > 10
    # scale-invariant
    torch.testing.assert_close(match_score(a * 7, a * 7), m)
    z = t([5, 5, 5, 5])  # zero-area boxes: finite where they coincide, never NaN
    assert not torch.isnan(match_score(torch.cat([z, z, a]), torch.cat([z, z, a]))).any()


def test_near_identical_boxes_merge_to_average_with_summed_score() -> None:
    boxes = t([10, 10, 50, 50], [11, 10, 51, 49])
    r = greedy_merge(boxes, t(0.25, 0.5), labels(3, 3))
    torch.testing.assert_close(r.boxes, t([10.5, 10, 50.5, 49.5]))
    torch.testing.assert_close(r.scores, t(0.75))
    assert r.labels.tolist() == [3] and r.counts.tolist() == [2]


def test_distant_boxes_do_not_merge() -> None:
    boxes = t([0, 0, 10, 10], [40, 40, 50, 50])
    r = greedy_merge(boxes, t(1, 1), labels(0, 0))
    torch.testing.assert_close(r.boxes, boxes)
    assert r.counts.tolist() == [1, 1]


def test_different_labels_never_merge_even_when_identical() -> None:
    boxes = t([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10])
    r = greedy_merge(boxes, t(1, 2, 3), labels(0, 1, 0), threshold=100.0)
    assert r.labels.tolist() == [0, 1] and r.counts.tolist() == [2, 1]
    torch.testing.assert_close(r.scores, t(4, 2))


def test_threshold_zero_merges_only_identical_boxes(path: str) -> None:
    boxes = t([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.001], [20, 0, 30, 10],
              [20, 0, 30, 10])
    for fn in (greedy_merge, greedy_merge_reference):
        r = fn(boxes, t(1, 1, 1, 1, 1), labels(0, 0, 0, 0, 0), threshold=0.0)
        assert r.counts.tolist() == [2, 1, 2]


def test_merge_order_is_greedy_by_lowest_score(path: str) -> None:
    # b0 and b1 are the closest pair; their average then merges with b2 only at a looser
    # threshold. The literal rule weights the merged pair and b2 equally.
    boxes = t([0, 0, 10, 10], [0.5, 0, 10.5, 10], [3, 0, 13, 10])
    r = greedy_merge(boxes, t(1, 1, 1), labels(0, 0, 0), threshold=0.3)
    assert r.counts.tolist() == [2, 1]
    r = greedy_merge(boxes, t(1, 1, 1), labels(0, 0, 0), threshold=1.0)
    torch.testing.assert_close(r.boxes, t([(0.25 + 3) / 2, 0, (10.25 + 13) / 2, 10]))
    assert r.counts.tolist() == [3]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, DEFAULT_MERGE_THRESHOLD, 2.0])
def test_vectorised_equals_reference(seed: int, threshold: float, path: str) -> None:
    boxes, scores, lab = clustered(seed, per=6 + 4 * seed)
    fast = greedy_merge(boxes, scores, lab, threshold)
    ref = greedy_merge_reference(boxes, scores, lab, threshold)
    assert fast.counts.sum() == len(boxes)
    torch.testing.assert_close(as_sorted_rows(fast), as_sorted_rows(ref))
    # same order too: by each merged box's first input box
    torch.testing.assert_close(fast.boxes, ref.boxes)
    assert torch.equal(fast.labels, ref.labels) and torch.equal(fast.counts, ref.counts)


def test_vectorised_equals_reference_float32_and_big_class(path: str) -> None:
    # one label and > 64 boxes: exercises the matrix compaction
    boxes, scores, _ = clustered(11, n_objects=3, per=40, sigma=0.15, dtype=torch.float32)
    lab = torch.zeros(len(boxes), dtype=torch.long)
    fast = greedy_merge(boxes, scores, lab)
    ref = greedy_merge_reference(boxes, scores, lab)
    assert fast.boxes.dtype == torch.float32
    torch.testing.assert_close(as_sorted_rows(fast), as_sorted_rows(ref), rtol=1e-5, atol=1e-4)


def test_empty_and_single(path: str) -> None:
    for fn in (greedy_merge, greedy_merge_reference):
        r = fn(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
        assert r.boxes.shape == (0, 4) and r.scores.shape == (0,) and r.counts.shape == (0,)
        r = fn(t([1, 2, 3, 4]), t(0.5), labels(7))
        torch.testing.assert_close(r.boxes, t([1, 2, 3, 4]))
        assert r.labels.tolist() == [7] and r.counts.tolist() == [1]


def test_deterministic_and_ties_go_to_lowest_pair(path: str) -> None:
    boxes, scores, lab = clustered(3)
    a, b = greedy_merge(boxes, scores, lab), greedy_merge(boxes, scores, lab)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # four identical boxes: every pair ties at score 0; (0, 1) merges first into slot 0,
    # which then merges with 2, then 3: one box in slot 0 holding all four scores
    four = t([0, 0, 8, 8], [0, 0, 8, 8], [0, 0, 8, 8], [0, 0, 8, 8])
    r = greedy_merge(four, t(1, 2, 4, 8), labels(0, 0, 0, 0), threshold=0.0)
    assert r.counts.tolist() == [4] and r.scores.tolist() == [15]


def test_tie_goes_to_lowest_index_pair(path: str) -> None:
    # (0, 1) and (1, 2) tie exactly; (0, 1) merges, and its average is then too far from b2
    boxes = t([0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10])
    m = match_score(boxes, boxes)
    assert m[0, 1] == m[1, 2] < m[0, 2]
    for fn in (greedy_merge, greedy_merge_reference):
        r = fn(boxes, t(1, 1, 1), labels(0, 0, 0), threshold=0.3)
        torch.testing.assert_close(r.boxes, t([0.5, 0, 10.5, 10], [2, 0, 12, 10]))
        assert r.counts.tolist() == [2, 1]


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="boxes"):
        greedy_merge(torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="scores and labels"):
        greedy_merge(torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    boxes, scores, lab = clustered(5)
    cpu = greedy_merge(boxes, scores, lab)
    gpu = greedy_merge(boxes.cuda(), scores.cuda(), lab.cuda())
    assert gpu.boxes.is_cuda
    torch.testing.assert_close(as_sorted_rows(gpu).cpu(), as_sorted_rows(cpu))
