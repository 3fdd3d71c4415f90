"""Appendix B's SVMs: the torch solver reaches liblinear's optimum of the same problem
(LinearSVC's L2-regularised squared hinge, intercept regularised), chooses the same C,
and gives the same recalls; classes with nothing to train on; ``--solver``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from vgg.cli import main
from vgg.errors import ConfigError
from vgg.eval import metrics
from vgg.transfer import features as F
from vgg.transfer import solver as S
from vgg.transfer.svm import TorchSVMs, fit_svms, train_svms


def objective(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, C: float) -> float:
    """LinearSVC's primal (fit_intercept, intercept_scaling 1): the bias is a weight on a
    constant feature 1, regularised. y in {-1, +1}."""
    X, w = X.astype(np.float64), w.astype(np.float64)
    slack = np.maximum(0.0, 1.0 - y * (X @ w + b))
    return 0.5 * (w @ w + b * b) + C * float((slack ** 2).sum())


def problem(n: int, d: int, k: int, separable: bool, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor-like rows (class means + noise, L2-normalised) and single-label targets;
    separable: means far apart, else mostly noise."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)
    centres = rng.normal(size=(k, d))
    X = centres[y] * (3.0 if separable else 0.25) + rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.eye(k, dtype=np.uint8)[y]


def reference(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """LinearSVC run to a tight tolerance: the optimum to compare with."""
    svm = LinearSVC(C=C, tol=1e-10, max_iter=1_000_000, dual=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svm.fit(X.astype(np.float64), y)
    return svm.coef_[0], float(svm.intercept_[0])


@pytest.mark.parametrize("n,d,separable", [(60, 20, True), (60, 20, False),
                                           (40, 150, True), (40, 150, False)],
                         ids=["D<N-separable", "D<N-overlapping", "D>N-separable",
                              "D>N-overlapping"])
@pytest.mark.parametrize("ignored", [False, True], ids=["all-rows", "ignored-rows"])
def test_torch_solver_reaches_liblinears_objective(n: int, d: int, separable: bool,
                                                    ignored: bool) -> None:
    X, T = problem(n, d, 3, separable)
    X[1] = X[0]  # a repeated row: a rank-deficient Gram matrix
    ign = np.random.default_rng(1).random(T.shape) < 0.15 if ignored else None
    for C in (0.1, 10.0, 1000.0):
        ours = fit_svms(X, T, ign, C, solver="torch")
        lib = fit_svms(X, T, ign, C, solver="liblinear", jobs=1)
        assert ours.solver == "torch" and lib.solver == "liblinear"
        for c in range(3):
            rows = np.ones(n, bool) if ign is None else ~ign[:, c]
            Xc, yc = X[rows], np.where(T[rows, c] > 0, 1.0, -1.0)
            best = objective(Xc, yc, *reference(Xc, yc, C), C)
            f_ours = objective(Xc, yc, ours.W[c], ours.b[c], C)
            f_lib = objective(Xc, yc, lib.W[c], lib.b[c], C)
            # within the solver's certified gap (1e-6) plus float32 weights' rounding
            assert f_ours == pytest.approx(best, rel=2e-5), (C, c)
            assert f_ours <= f_lib * (1 + 2e-5), (C, c)


@pytest.mark.parametrize("direct", [0, None], ids=["conjugate-gradients", "exact-steps"])
def test_newton_steps_cg_or_exact_and_warm_starts_reach_the_optimum(direct: int | None
                                                                     ) -> None:
    X, T = problem(90, 40, 3, separable=False, seed=2)
    basis = S.Basis.of(X)
    Y = torch.as_tensor(np.where(T > 0, 1.0, -1.0))
    M = torch.ones(Y.shape, dtype=torch.bool)
    omega = None
    for C in (0.1, 10.0):  # warm-started along the grid
        omega, info = S.fit_squared_hinge(basis, None, Y, M, C, omega, direct_max=direct)
        assert info.converged
        cold, _ = S.fit_squared_hinge(basis, None, Y, M, C, direct_max=direct)
        W, b = basis.weights(omega)
        for c in range(3):
            y = Y[:, c].numpy()
            best = objective(X, y, *reference(X, y, C), C)
            assert objective(X, y, W[c].numpy(), float(b[c]), C) == pytest.approx(
                best, rel=2e-6)
        f_cold = S.objective(basis.L, Y, M.double(), cold, C)
        torch.testing.assert_close(S.objective(basis.L, Y, M.double(), omega, C), f_cold,
                                   rtol=2e-6, atol=0)
    if direct == 0:
        assert info.cg > 0


def test_same_c_and_recalls_as_liblinear() -> None:
    X, T = problem(160, 30, 4, separable=False, seed=3)
    Xte, Tte = problem(120, 30, 4, separable=False, seed=3)  # same centres, other rows
    grid = [0.01, 0.1, 1.0, 10.0, 100.0]
    ours = train_svms(X, T, C_grid=grid, solver="torch")
    lib = train_svms(X, T, C_grid=grid, solver="liblinear", jobs=1)
    assert ours.C == lib.C
    assert ours.selection == pytest.approx(lib.selection, abs=1e-12)
    labels = Tte.argmax(1)
    np.testing.assert_array_equal(metrics.class_recalls(ours.scores(Xte), labels),
                                  metrics.class_recalls(lib.scores(Xte), labels))


@pytest.mark.parametrize("solver", ["torch", "liblinear"])
def test_a_class_with_no_rows_or_one_side_is_a_constant_scorer(solver: str) -> None:
    X, T = problem(60, 12, 3, separable=True)
    ign = np.zeros(T.shape, bool)
    ign[:, 2] = True                  # every image "difficult" for class 2: no rows
    ign[T[:, 1] > 0, 1] = True        # no positive of class 1 left
    T = T.copy()
    T[:, 0] = 1                       # class 0 everywhere: no negative
    T[:5, 0] = 0
    ign[:5, 0] = True
    svm = fit_svms(X, T, ign, 1.0, solver=solver, jobs=1)
    np.testing.assert_array_equal(svm.W, 0)
    np.testing.assert_array_equal(svm.b, [1.0, -1.0, -1.0])
    svm = train_svms(X, T, ign, multi_label=True, C_grid=[0.1, 1.0], solver=solver, jobs=1)
    np.testing.assert_array_equal(svm.b, [1.0, -1.0, -1.0])


def test_an_all_difficult_class_among_trained_ones() -> None:
    X, T = problem(60, 12, 3, separable=True)
    ign = np.zeros(T.shape, bool)
    ign[:, 2] = True  # was an IndexError in the liblinear path, the default then
    svm = fit_svms(X, T, ign, 1.0)
    assert np.all(svm.W[2] == 0) and svm.b[2] == -1.0
    assert np.abs(svm.W[:2]).sum() > 0
    two = T[:, 2] == 0  # the images of classes 0 and 1: told apart
    assert metrics.mean_class_recall(svm.scores(X[two])[:, :2], T[two, :2].argmax(1)) > 0.9


def test_torch_svms_warm_start_from_the_nearest_c() -> None:
    X, T = problem(60, 12, 3, separable=False)
    engine = TorchSVMs(X, T, None)
    assert engine._start(1.0) is None
    for C in (0.1, 10.0):
        engine.fit(None, C)
    torch.testing.assert_close(engine._start(8.0), engine._warm[10.0])
    torch.testing.assert_close(engine._start(0.5), engine._warm[0.1])
    torch.testing.assert_close(engine._start(1.0), engine._warm[0.1])  # a tie: smaller C


def test_jobs_limit_torchs_threads_for_the_fit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    X, T = problem(30, 8, 3, separable=True)
    seen = []
    real = S.fit_squared_hinge

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.get_num_threads())
        return real(*a, **kw)
    monkeypatch.setattr("vgg.transfer.svm.fit_squared_hinge", spy)
    before = torch.get_num_threads()
    train_svms(X, T, C_grid=[0.1, 1.0], jobs=1, device="cpu")
    assert seen == [1, 1, 1] and torch.get_num_threads() == before


def test_solver_errors() -> None:
    X, T = problem(30, 8, 3, separable=True)
    with pytest.raises(ConfigError, match="unknown SVM solver 'sgd': choose from torch, "
                                          "liblinear"):
        train_svms(X, T, solver="sgd")
    with pytest.raises(ConfigError, match="C must be > 0"):
        fit_svms(X, T, None, 0.0)


def test_cli_solver_flag_is_recorded(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    X, T = problem(60, 16, 3, separable=True)
    F.Features(X, [f"i{j}" for j in range(60)], T, ["a", "b", "c"]).save(tmp_path / "f.npz")
    for solver in ("torch", "liblinear"):
        assert main(["transfer", str(tmp_path / "f.npz"), "--train-per-class", "12",
                     "--splits", "1", "--C", "0.1,1", "--solver", solver, "--jobs", "1",
                     "--json", str(tmp_path / f"{solver}.json")]) == 0
        r = json.loads((tmp_path / f"{solver}.json").read_text())
        assert r["results"][0]["splits"][0]["solver"] == solver
    a, b = (json.loads((tmp_path / f"{s}.json").read_text())["results"][0]["values"]
            for s in ("torch", "liblinear"))
    assert a == b
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["transfer", str(tmp_path / "f.npz"), "--train-per-class", "12", "--solver",
              "sgd"])
    assert exit_.value.code == 2
    assert "invalid choice: 'sgd'" in capsys.readouterr().err


@pytest.mark.parametrize("pivoted", [True, False], ids=["pivoted-cholesky", "gram-eigh"])
def test_the_bases_keep_the_rows_inner_products_and_reach_the_optimum(
        pivoted: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """N <= D + 1: the Cholesky factor of the Gram matrix; when a repeated row makes it
    singular, its pivoted Cholesky factor on a CPU (or its eigenvectors); N > D + 1: the
    second-moment eigenvectors. Each keeps ``L L^T`` = the augmented rows' Gram matrix,
    and its fit reaches LinearSVC's optimum."""
    monkeypatch.setattr(S, "PIVOTED", pivoted)
    X, T = problem(50, 120, 3, separable=False, seed=4)
    rep = X.copy()
    rep[1] = rep[0]
    tall, Tt = problem(80, 10, 3, separable=False, seed=4)
    for Xs, Ts, route in ((X, T, "cholesky"), (rep, T, "pivoted" if pivoted else "gram-eigh"),
                          (tall, Tt, "moments")):
        basis = S.Basis.of(Xs)
        got = ("moments" if basis.right is not None else "gram-eigh" if basis.piv is None
               else "cholesky" if len(basis.piv) == len(Xs) else "pivoted")
        assert got == route
        if route == "pivoted":
            assert basis.rank == len(Xs) - 1             # one of the repeated pair dropped
            assert not (0 in basis.piv.tolist() and 1 in basis.piv.tolist())
            P = basis.piv
            assert torch.equal(basis.L[P].triu(1), torch.zeros_like(basis.L[P]))
        Xa = np.hstack([Xs, np.ones((len(Xs), 1), np.float32)]).astype(np.float64)
        torch.testing.assert_close(basis.L @ basis.L.T, torch.as_tensor(Xa @ Xa.T),
                                   rtol=1e-9, atol=1e-9)
        if basis.ends is not None:   # the block products' promise: zeros past ends
            cols = torch.arange(basis.rank)
            assert bool((basis.L[cols[None, :] > basis.ends[:, None]] == 0).all())
        Y = torch.as_tensor(np.where(Ts > 0, 1.0, -1.0))
        M = torch.ones(Y.shape, dtype=torch.bool)
        for C in (0.1, 1000.0):
            omega, info = S.fit_squared_hinge(basis, None, Y, M, C)
            assert info.converged
            W, b = basis.weights(omega)
            for c in range(3):
                y = Y[:, c].numpy()
                best = objective(Xs, y, *reference(Xs, y, C), C)
                assert objective(Xs, y, W[c].numpy(), float(b[c]), C) == pytest.approx(
                    best, rel=2e-6), (route, C, c)


def test_staircase_products_equal_the_dense_ones() -> None:
    """A Cholesky factor's rows, all or a subset, multiplied block by block past their
    zeros: the same products as dense ones."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 60, generator=g, dtype=torch.float64)
    R = torch.linalg.cholesky(A @ A.T + torch.eye(40, dtype=torch.float64))
    for rows in (torch.arange(40), torch.tensor([1, 3, 4, 9, 17, 18, 20, 30, 33, 35, 38, 39,
                                                 5])):
        L = R[rows]
        Lr = S.Rows(L, torch.arange(40)[rows], blocks=4)
        assert len(Lr.parts) == 4 and min(hi for _, _, hi in Lr.parts) < 40
        M = torch.randn(40, 7, generator=g, dtype=torch.float64)
        Sx = torch.randn(len(rows), 7, generator=g, dtype=torch.float64)
        torch.testing.assert_close(Lr.mm(M), L @ M)
        torch.testing.assert_close(Lr.tmm(Sx), L.T @ Sx)
        torch.testing.assert_close(Lr.float().mm(M.float()), (L @ M).float(), rtol=1e-5,
                                   atol=1e-5)


def test_exact_steps_shared_among_threads_equal_one_thread() -> None:
    X, T = problem(70, 120, 4, separable=False, seed=5)
    basis = S.Basis.of(X)
    Y = torch.as_tensor(np.where(T > 0, 1.0, -1.0))
    act = torch.rand(Y.shape, generator=torch.Generator().manual_seed(1)) < 0.6
    classes = torch.arange(4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, ok1 = S._exact_steps(basis.Gz, None, act, Y, classes, 10.0)
        torch.set_num_threads(2)
        two, ok2 = S._exact_steps(basis.Gz, None, act, Y, classes, 10.0)
        assert torch.get_num_threads() == 2   # restored after the threads' share
    finally:
        torch.set_num_threads(before)
    assert bool(ok1.all()) and bool(ok2.all())
    torch.testing.assert_close(one, two, rtol=1e-12, atol=1e-12)
    # each system solved: (G_AA + I / 2C) beta_A = y_A, zero off A
    G = basis.G
    for c in range(4):
        a = torch.nonzero(act[:, c])[:, 0]
        lhs = G[a][:, a] @ one[c, a] + one[c, a] / 20.0
        torch.testing.assert_close(lhs, Y[a, c], rtol=1e-9, atol=1e-9)
        assert bool((one[c, ~act[:, c]] == 0).all())


def test_the_gram_matrix_by_blocks_is_the_full_product_padded() -> None:
    X = torch.randn(23, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for blocks in (1, 4, 5):
        Gz = S._gram_padded(X, blocks)
        assert Gz.shape == (24, 24)
        torch.testing.assert_close(Gz[:23, :23], X @ X.T + 1, rtol=0, atol=1e-12)
        assert bool((Gz[23] == 0).all()) and bool((Gz[:, 23] == 0).all())
