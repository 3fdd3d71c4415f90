"""Linear SVMs on fixed descriptors (Appendix B): one-vs-rest, the regularisation C chosen
on 20% of the training images held out, then refit on all of them.

One binary SVM per class, so that VOC's "difficult" images (neither positive nor
negative for a class) are left out of that class's training only; for single-label sets
this is exactly scikit-learn's one-vs-rest scheme. Each is the L2-regularised
squared-hinge SVM of scikit-learn's ``LinearSVC`` (the intercept regularised like a
weight on a constant feature 1). Two solvers of that one problem:

- ``torch`` (default): all classes at once, a Newton method in torch (:mod:`.solver`),
  on the GPU when there is one, warm-started along the C grid; stops at a certified
  relative objective gap of ``solver.TOL`` per class.
- ``liblinear``: scikit-learn's ``LinearSVC`` per class, the classes in parallel (joblib
  threads, ``jobs``: liblinear releases the GIL).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..eval import metrics
from .solver import TOL, Basis, fit_squared_hinge

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
HOLDOUT = 0.2          # the paper: 20% of each training split validates hyper-parameters
MAX_ITER = 5000        # liblinear's iteration cap
SOLVERS = ("torch", "liblinear")


@dataclass
class LinearSVMs:
    """One linear SVM per class: ``W`` (K, D), ``b`` (K,). ``scores(X)`` -> (N, K)
    decision values. ``C`` is the chosen regularisation, ``selection`` the held-out
    metric of every C tried, ``fit_seconds`` the time of the final fit (with the torch
    solver, ``train_svms``'s basis is computed before and timed apart: ``basis_seconds``),
    ``solver`` the solver that fitted it."""

    W: np.ndarray
    b: np.ndarray
    C: float
    selection: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = 0.0
    solver: str = "torch"
    basis_seconds: float = 0.0

    def scores(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float32) @ self.W.T.astype(np.float32) + self.b[None, :]


def _constant(y: np.ndarray) -> float:
    """The scorer of a class with no positive (-1; no rows at all, e.g. every one
    "difficult", included) or no negative (+1) training row."""
    return 1.0 if y.size and y[0] else -1.0


def _fit_class(X: np.ndarray, y: np.ndarray, rows: np.ndarray | None, C: float,
               seed: int) -> tuple[np.ndarray, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    if rows is not None:  # the rows not ignored for this class
        X, y = X[rows], y[rows]
    if y.size == 0 or y.min() == y.max():  # no positive or no negative: a constant scorer
        return np.zeros(X.shape[1], np.float32), _constant(y)
    svm = LinearSVC(C=C, dual=bool(X.shape[0] < X.shape[1]), max_iter=MAX_ITER,
                    random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(X, y)
    return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])


def _fit_liblinear(X: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None, C: float,
                   seed: int, jobs: int | None) -> LinearSVMs:
    from joblib import Parallel, delayed

    X = np.ascontiguousarray(X, np.float64)
    k = targets.shape[1]
    pos = np.asarray(targets) > 0
    rows = [np.nonzero(~ignore[:, c])[0] if ignore is not None and ignore[:, c].any()
            else None for c in range(k)]
    t0 = time.perf_counter()
    # threads: liblinear trains without the GIL, and X is shared, not copied per class
    # (processes would memory-map a copy per task: K times its size in /dev/shm)
    out = Parallel(n_jobs=jobs if jobs is not None else -1, prefer="threads")(
        delayed(_fit_class)(X, pos[:, c], rows[c], C, seed) for c in range(k))
    W = np.stack([w for w, _ in out])
    b = np.array([v for _, v in out], np.float32)
    return LinearSVMs(W, b, C, fit_seconds=time.perf_counter() - t0, solver="liblinear")


def svm_device(device: str | torch.device | None = None) -> torch.device:
    """Where the torch solver runs: ``device``, else CUDA when there is one, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def _threads(jobs: int | None) -> Iterator[None]:
    """torch's CPU threads limited to ``jobs`` for the duration (None: unchanged)."""
    before = torch.get_num_threads()
    if jobs is not None:
        torch.set_num_threads(jobs)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchSVMs:
    """The torch solver on one training set (X (N, D), targets (N, K), ignore (N, K) or
    None): the basis of X once (:class:`.solver.Basis`), then :meth:`fit` on any subset
    of its rows at any C, each fit warm-started from the fit done before at the nearest
    C (the C grid is walked from small to large)."""

    def __init__(self, X: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None,
                 device: str | torch.device | None = None, tol: float = TOL
                 ) -> None:
        self.device = svm_device(device)
        self.tol = tol
        t0 = time.perf_counter()
        self.basis = Basis.of(X, self.device)
        self.basis_seconds = time.perf_counter() - t0
        pos = torch.as_tensor(np.asarray(targets) > 0, device=self.device)
        self.Y = torch.where(pos, 1.0, -1.0).to(torch.float64)
        self.M = torch.ones_like(pos) if ignore is None else \
            ~torch.as_tensor(np.asarray(ignore, bool), device=self.device)
        self._warm: dict[float, torch.Tensor] = {}

    def _start(self, C: float) -> torch.Tensor | None:
        if not self._warm:
            return None
        near = min(self._warm, key=lambda c: (abs(np.log(c / C)), c))
        return self._warm[near]

    def fit(self, rows: np.ndarray | None, C: float) -> LinearSVMs:
        """SVMs on ``rows`` (all when None) at ``C``."""
        if not C > 0:
            raise ConfigError(f"the SVM's C must be > 0, got {C}")
        Y, M = (self.Y, self.M) if rows is None else (self.Y[rows], self.M[rows])
        pos, neg = ((Y > 0) & M).any(0), ((Y < 0) & M).any(0)
        trained = pos & neg      # the others: constant scorers (+1 all positive, else -1)
        k, r = Y.shape[1], self.basis.rank
        omega = torch.zeros(k, r, dtype=torch.float64, device=self.device)
        t0 = time.perf_counter()
        if bool(trained.any()):
            start = self._start(C)
            idx = torch.nonzero(trained)[:, 0]
            om, info = fit_squared_hinge(self.basis, rows, Y[:, idx], M[:, idx], C,
                                         None if start is None else start[idx], self.tol)
            omega[idx] = om
            if not info.converged:
                log.warning("the torch SVM solver stopped after %d Newton steps short of "
                            "its tolerance (C=%g)", info.newton, C)
            self._warm[C] = omega
        W, b = self.basis.weights(omega)
        b = torch.where(trained, b, torch.where(pos, 1.0, -1.0).to(b))
        return LinearSVMs(W.float().cpu().numpy(), b.float().cpu().numpy(), C,
                          fit_seconds=time.perf_counter() - t0, solver="torch",
                          basis_seconds=self.basis_seconds)


def _check_solver(solver_: str) -> None:
    if solver_ not in SOLVERS:
        raise ConfigError(f"unknown SVM solver {solver_!r}: choose from {', '.join(SOLVERS)}")


def fit_svms(X: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None, C: float,
             seed: int = 0, jobs: int | None = None, *, solver: str = "torch",
             device: str | torch.device | None = None) -> LinearSVMs:
    """One-vs-rest linear SVMs at regularisation ``C``: class k is trained on the rows
    not ignored for k, positives where ``targets[:, k]``. ``jobs``: threads (liblinear:
    classes fitted at once; torch: torch's CPU threads); ``device``: the torch solver's
    (default CUDA when there is one); ``seed``: liblinear's."""
    _check_solver(solver)
    if not C > 0:
        raise ConfigError(f"the SVM's C must be > 0, got {C}")
    if solver == "liblinear":
        return _fit_liblinear(X, targets, ignore, C, seed, jobs)
    with _threads(jobs):
        return TorchSVMs(X, targets, ignore, device).fit(None, C)


def holdout_rows(targets: np.ndarray, fraction: float = HOLDOUT, seed: int = 0,
                 multi_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): ``fraction`` of each class's images (stratified) for
    single-label sets, of all images for multi-label ones; seeded. Every class keeps at
    least one training image."""
    rng = np.random.default_rng(seed)
    n = targets.shape[0]
    if multi_label:
        perm = rng.permutation(n)
        m = int(round(fraction * n))
        return np.sort(perm[m:]), np.sort(perm[:m])
    labels = targets.argmax(1)
    held = []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        m = min(int(round(fraction * len(idx))), len(idx) - 1)
        held.extend(idx[:m].tolist())
    held_a = np.array(sorted(held), np.int64)
    return np.setdiff1d(np.arange(n), held_a), held_a


def selection_metric(multi_label: bool, ap_kind: str = "voc07_11point"
                     ) -> tuple[str, Callable[[np.ndarray, np.ndarray, np.ndarray | None],
                                          float]]:
    """The metric C is chosen by: mean AP (multi-label) or mean class recall."""
    if multi_label:
        def m_ap(s: np.ndarray, t: np.ndarray, ig: np.ndarray | None) -> float:
            ap = metrics.class_average_precisions(s, t, ig, ap_kind)
            return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
        return f"mAP ({ap_kind})", m_ap
    return "mean class recall", lambda s, t, ig: metrics.mean_class_recall(s, t.argmax(1))


def train_svms(X: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None = None, *,
               multi_label: bool = False, C_grid: Sequence[float] = C_GRID,
               holdout: float = HOLDOUT, seed: int = 0, jobs: int | None = None,
               ap_kind: str = "voc07_11point", solver: str = "torch",
               device: str | torch.device | None = None) -> LinearSVMs:
    """The paper's classifier: for every C of ``C_grid``, SVMs trained on 80% of the
    training images and scored on the held-out 20% (mean AP or mean class recall); the
    best C (the smaller on a tie) refit on all the training images. ``solver``: "torch"
    (all classes at once, warm-started along the grid; ``device`` default CUDA when
    there is one) or "liblinear" (scikit-learn's LinearSVC); ``jobs`` as in
    :func:`fit_svms`."""
    if X.shape[0] != targets.shape[0]:
        raise DataError(f"{X.shape[0]} descriptors for {targets.shape[0]} label rows")
    if X.shape[0] < 2:
        raise DataError("need at least two training images")
    _check_solver(solver)
    grid = sorted({float(c) for c in C_grid})
    if not grid or grid[0] <= 0:
        raise ConfigError(f"the C grid must hold positive values, got {list(C_grid)}")
    with _threads(jobs if solver == "torch" else None):
        return _train(X, targets, ignore, multi_label, grid, holdout, seed, jobs, ap_kind,
                      solver, device)


def _train(X: np.ndarray, targets: np.ndarray, ignore: np.ndarray | None, multi_label: bool,
           grid: list[float], holdout: float, seed: int, jobs: int | None, ap_kind: str,
           solver_: str, device: str | torch.device | None) -> LinearSVMs:
    if solver_ == "torch":
        engine = TorchSVMs(X, targets, ignore, device)
        fit = engine.fit
    else:
        def fit(rows: np.ndarray | None, C: float) -> LinearSVMs:
            if rows is None:
                return _fit_liblinear(X, targets, ignore, C, seed, jobs)
            return _fit_liblinear(X[rows], targets[rows],
                                  None if ignore is None else ignore[rows], C, seed, jobs)
    name, metric = selection_metric(multi_label, ap_kind)
    selection: dict[str, float] = {}
    if len(grid) > 1:
        tr, va = holdout_rows(targets, holdout, seed, multi_label)
        if len(va) == 0:
            log.warning("too few training images to hold any out: C=%g is used untested",
                        grid[0])
            grid = grid[:1]
        else:
            for C in grid:  # small to large: each torch fit starts from the last
                svm = fit(tr, C)
                selection[f"{C:g}"] = metric(svm.scores(X[va]), targets[va],
                                             None if ignore is None else ignore[va])
                log.debug("C=%g: held-out %s %.4f", C, name, selection[f"{C:g}"])
    if selection:
        finite = {c: v for c, v in selection.items() if np.isfinite(v)}
        best = max(finite, key=lambda c: (finite[c], -float(c))) if finite else f"{grid[0]:g}"
        C = float(best)
    else:
        C = grid[0]
    if len(selection) > 2 and C in (grid[0], grid[-1]):
        log.warning("the chosen C=%g is at the %s of the grid %s: the best value may lie "
                    "beyond it (--C to widen it)", C, "low end" if C == grid[0] else
                    "high end", ",".join(f"{c:g}" for c in grid))
    final = fit(None, C)
    final.selection = selection
    log.info("SVMs (%s): C=%g chosen on %d%% held out (%s: %s)", solver_, C,
             round(100 * holdout), name,
             ", ".join(f"C={c} {v:.3f}" for c, v in selection.items()) or "one C")
    return final


def describe(svm: LinearSVMs) -> dict[str, Any]:
    return {"C": svm.C, "selection": svm.selection, "fit_seconds": round(svm.fit_seconds, 3),
            "solver": svm.solver}
