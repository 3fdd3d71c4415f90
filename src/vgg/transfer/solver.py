"""LinearSVC's problem for all classes at once, in torch (Appendix B's SVMs, fast).

Per class k, over the rows i that are not ignored for k (``M[i, k]``), labels
``Y[i, k]`` in {-1, +1}, the L2-regularised squared-hinge primal that scikit-learn's
``LinearSVC`` (liblinear; ``fit_intercept=True``, ``intercept_scaling=1``) solves, the
intercept being the weight of a constant feature 1 and regularised like the others::

    f_k(w, b) = 0.5 (|w|^2 + b^2) + C sum_i M[i, k] max(0, 1 - Y[i, k] (w.x_i + b))^2

Two steps:

1. :class:`Basis`: the rows ``[x_i, 1]`` in coordinates of their span that keep their
   inner products: (N, r) features with r <= min(N, D + 1), so the problem, and its
   optimum, are unchanged (the optimal weights lie in that span), while each product
   costs N r instead of N (D + 1). When N <= D + 1 the coordinates are the Cholesky
   factor of the N x N Gram matrix (lower triangular: products skip its zeros, about
   half the work), and the conjugate gradients are preconditioned by deflation on its
   principal axes; when the Gram matrix is nearly singular (repeated rows; real
   descriptors) its pivoted Cholesky factor on a CPU, the same way. Otherwise (a nearly
   singular Gram matrix on a GPU, or N > D + 1) they are principal axes (eigenvectors),
   where the Hessian is nearly diagonal and its diagonal preconditions. One basis serves every C and every subset of its rows (the
   held-out fits).
2. :func:`fit_squared_hinge`: a truncated Newton method on the (K, r) weight matrix, all
   classes in lockstep: the generalised Hessian of the squared hinge (exact, piecewise
   constant), the Newton system solved by preconditioned conjugate gradients (low C,
   many active rows) or exactly, by Cholesky on the active rows' Gram matrix (high C,
   few), an exact line search (the objective is piecewise quadratic along a line).
   A class stops
   when ``|grad f_k|^2 / 2 <= tol f_k``: f_k is 1-strongly convex, so this certifies
   ``f_k(w) - min f_k <= tol f_k(w)`` (a relative objective gap of at most ``tol``).

Everything runs in float64 (the conjugate gradients' products in float32: they only
shape a direction) on the basis's device (CUDA when there is one), on torch's threads
on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

TOL = 1e-6            # certified relative objective gap per class (see fit_squared_hinge)
MAX_NEWTON = 200
MAX_CG = 500
RANK_EPS = 1e-11      # eigenvalues below RANK_EPS * the largest: outside the span
TINY32 = torch.finfo(torch.float32).tiny
GRAM_MAX = 8192       # rows up to which the N x N Gram matrix is kept (exact Newton steps)
CHOL_EPS = 1e-8       # smallest squared Cholesky pivot, relative to the largest |row|^2
PIVOT_EPS = 1e-10     # pivoted Cholesky: pivots below this x the largest |row|^2 dropped
PIVOTED = True        # nearly singular Gram matrices on a CPU: pivoted Cholesky (else eigh)
DEFLATE = 128         # principal axes the Cholesky route's preconditioner treats exactly


@dataclass
class Basis:
    """Coordinates of the span of the rows ``[x_i, 1]`` of X (N, D) in which the rows
    keep their inner products.

    ``L`` (N, r): the rows in those coordinates (``L @ L.T`` is the Gram matrix of the
    augmented rows). Weights ``omega`` (r,) in them are ``w~ = [w, b]`` =
    ``omega @ axes`` with ``axes`` (r, D+1) = ``left @ [X, 1]`` (Gram routes) or ``right.T``
    (second-moment route); neither is formed. Three routes:

    - Cholesky (N <= D + 1, the Gram matrix G well conditioned): ``L`` = the Cholesky
      factor of G; on a CPU when G is nearly singular (repeated rows, real
      descriptors), its pivoted Cholesky factor, rank-truncated. The weights come from a
      triangular solve with the rows ``piv`` of L. The axes are not principal ones, so
      the conjugate gradients are preconditioned by deflation: the top ``DEFLATE``
      principal axes ``V`` (r, k), found by a randomized subspace iteration, exactly,
      the rest by one scalar;
    - eigenvectors of G (N <= D + 1, G nearly singular, not on a CPU), rank-truncated;
    - eigenvectors of the (D+1) x (D+1) second-moment matrix (N > D + 1).

    In the last two the coordinates are principal axes: the Hessian is nearly diagonal
    there, and its diagonal preconditions."""

    L: torch.Tensor
    left: torch.Tensor | None    # (r, N): Lambda^-1/2 U^T (eigenvector Gram route)
    X: torch.Tensor | None       # (N, D) float64 (Gram routes)
    right: torch.Tensor | None   # (D+1, r): eigenvectors (second-moment route)
    Gz: torch.Tensor | None      # (N+1, N+1): the Gram matrix of the augmented rows,
    #                              when kept, with a zero row and column N (padding)
    V: torch.Tensor | None = None     # (r, k) float32: deflation axes (Cholesky route)
    ends: torch.Tensor | None = None  # (N,): row i of L is zero past column ends[i]
    piv: torch.Tensor | None = None   # (r,): the rows whose L block is triangular (Cholesky)
    _rows: tuple[bytes | None, RowSet] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, X: np.ndarray | torch.Tensor, device: str | torch.device | None = None
           ) -> Basis:
        dev = torch.device(device) if device is not None else (
            X.device if isinstance(X, torch.Tensor) else torch.device("cpu"))
        Xt = torch.as_tensor(X).to(dev, torch.float64)
        n, d = Xt.shape
        ones = torch.ones(n, 1, dtype=torch.float64, device=dev)
        if n <= d + 1:
            Gz = _gram_padded(Xt)
            G = Gz[:-1, :-1]
            R, info = torch.linalg.cholesky_ex(G)
            # a pivot is the distance of a row from the span of the rows before it:
            # a tiny one (a repeated row) would make L^-1, and the weights, inaccurate
            chol = None
            if int(info) == 0 and bool(R.diagonal().min() ** 2
                                       > CHOL_EPS * G.diagonal().max()):
                chol = R, torch.arange(n, device=dev), torch.arange(n, device=dev)
            elif dev.type == "cpu" and PIVOTED:   # nearly singular (real descriptors)
                chol = _pivoted_cholesky(G)
            if chol is not None:
                L, ends, piv = chol
                return cls(L, None, Xt, None, Gz,
                           _top_axes(L, min(DEFLATE, L.shape[1] // 2)), ends, piv)
            lam, U = torch.linalg.eigh(G)   # G = U Lambda U^T, L = U Lambda^1/2
            keep = lam > RANK_EPS * lam[-1].clamp_min(1e-300)
            lam, U = lam[keep], U[:, keep]
            root = lam.sqrt()
            return cls(U * root, (U / root).T.contiguous(), Xt, None, Gz)
        Xa = torch.cat([Xt, ones], 1)  # second-moment route: Xa^T Xa = V Lambda V^T
        lam, V = torch.linalg.eigh(Xa.T @ Xa)
        keep = lam > RANK_EPS * lam[-1].clamp_min(1e-300)
        V = V[:, keep].contiguous()
        L = Xa @ V
        return cls(L, None, None, V, _padded(L @ L.T) if n <= GRAM_MAX else None)

    @property
    def rank(self) -> int:
        return self.L.shape[1]

    def rows(self, rows: torch.Tensor | np.ndarray | None) -> RowSet:
        """The products' operands for a fit on ``rows`` (all when None), kept for the
        next fit on the same rows (the held-out fits of every C share them)."""
        key = None if rows is None else np.asarray(
            rows.cpu() if isinstance(rows, torch.Tensor) else rows).tobytes()
        if self._rows is None or self._rows[0] != key:
            self._rows = (key, RowSet.of(self, rows))
        return self._rows[1]

    @property
    def G(self) -> torch.Tensor | None:
        """The (N, N) Gram matrix of the augmented rows, when kept."""
        return None if self.Gz is None else self.Gz[:-1, :-1]

    def weights(self, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, r) coordinates -> W (K, D), b (K,)."""
        if self.right is not None:
            wa = omega @ self.right.T
            return wa[:, :-1], wa[:, -1]
        assert self.X is not None
        if self.piv is not None:   # Cholesky: the axes are L_P^-1 [X_P, 1] (P: piv)
            beta = torch.linalg.solve_triangular(self.L[self.piv].T, omega.T, upper=True).T
            return beta @ self.X[self.piv], beta.sum(1)
        beta = omega @ self.left          # (K, N): w~ = sum_i beta_i [x_i, 1]
        return beta @ self.X, beta.sum(1)


def _padded(G: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(G, (0, 1, 0, 1))


def _pivoted_cholesky(G: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G (N, N) positive semi-definite, nearly singular -> (L (N, r), ends (N,), piv (r,)):
    ``L L^T`` = G up to the pivots below ``PIVOT_EPS`` of G's largest diagonal entry
    (LAPACK's pivoted Cholesky, ``dpstrf``: about 10x faster than the eigenvectors at
    N = 3060); the rows ``piv`` of L form a lower-triangular (r, r) block, row i of L is
    zero past column ``ends[i]``."""
    from scipy.linalg import lapack

    Gn = G.cpu().numpy()
    c, piv, rank, info = lapack.dpstrf(Gn, lower=1, tol=PIVOT_EPS * float(Gn.diagonal().max()))
    if info < 0:
        raise RuntimeError(f"LAPACK dpstrf failed (info {info})")
    order = torch.as_tensor(piv[:Gn.shape[0]] - 1, dtype=torch.long)   # 1-based pivots
    factor = torch.as_tensor(np.tril(c[:, :rank]), dtype=G.dtype)       # rows in pivot order
    L = torch.empty_like(factor)
    L[order] = factor
    ends = torch.empty(Gn.shape[0], dtype=torch.long)
    ends[order] = torch.arange(Gn.shape[0]).clamp_max(rank - 1)
    return L.to(G.device), ends.to(G.device), order[:rank].to(G.device)


def _gram_padded(X: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """(N+1, N+1): ``X X^T + 1`` (the augmented rows' Gram matrix) with a zero row and
    column N; its lower block triangle computed and mirrored, (1 + 1/blocks) / 2 of the
    product's work."""
    n = X.shape[0]
    Gz = torch.zeros(n + 1, n + 1, dtype=X.dtype, device=X.device)
    cut = [round(n * j / blocks) for j in range(blocks + 1)]
    for i in range(blocks):
        a, b = cut[i], cut[i + 1]
        for j in range(i + 1):
            c, d = cut[j], cut[j + 1]
            block = X[a:b] @ X[c:d].T
            Gz[a:b, c:d] = block
            if j < i:
                Gz[c:d, a:b] = block.T
    Gz[:n, :n] += 1.0
    return Gz


class Rows:
    """Products with rows ``L`` (n, r) whose row i is zero past column ``ends[i]`` (a
    Cholesky factor's rows, all or some; None: dense), by row blocks that skip the
    zeros: about (1 + 1/blocks) / 2 of the dense products' work for a whole factor."""

    def __init__(self, L: torch.Tensor, ends: torch.Tensor | None, blocks: int = 6) -> None:
        n, r = L.shape
        self.L, self.shape = L, (n, r)
        if ends is None or n < 2 * blocks:
            self.parts = [(0, n, r)]
        else:
            cut = [round(n * j / blocks) for j in range(blocks + 1)]
            self.parts = [(a, b, int(ends[a:b].max()) + 1) for a, b in zip(cut, cut[1:])]

    def float(self) -> Rows:
        out = Rows.__new__(Rows)
        out.L, out.shape, out.parts = self.L.float(), self.shape, self.parts
        return out

    def mm(self, M: torch.Tensor) -> torch.Tensor:
        """L @ M, M (r, k)."""
        out = torch.empty(self.shape[0], M.shape[1], dtype=M.dtype, device=M.device)
        for a, b, hi in self.parts:
            torch.mm(self.L[a:b, :hi], M[:hi], out=out[a:b])
        return out

    def tmm(self, S: torch.Tensor) -> torch.Tensor:
        """L^T @ S, S (n, k)."""
        out = torch.zeros(self.shape[1], S.shape[1], dtype=S.dtype, device=S.device)
        for a, b, hi in self.parts:
            out[:hi].addmm_(self.L[a:b, :hi].T, S[a:b])
        return out


@dataclass
class RowSet:
    """A fit's rows of a :class:`Basis`: ``L`` (n, r) float64 and its products
    (:class:`Rows`, float64 and the conjugate gradients' float32), ``gidx`` their indices
    (None: all), and the preconditioners' row terms: ``L2T32`` (r, n) the squared
    coordinates (principal axes), or ``PV2T`` (k, n) the squared coordinates on the
    deflation axes ``V`` and ``sq32`` (n,) the squared norms (Cholesky route)."""

    L: torch.Tensor
    gidx: torch.Tensor | None
    Lr: Rows
    Lr32: Rows
    L2T32: torch.Tensor | None
    PV2T: torch.Tensor | None
    sq32: torch.Tensor | None
    V: torch.Tensor | None

    def preconditioner(self, act: torch.Tensor, C: float
                       ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """For the Hessians ``I + 2C L^T diag(act_k) L`` of the classes in ``act`` (n, k'')
        float32: ``apply(res, on)`` -> the preconditioned residuals ``res`` of classes
        ``on``. On principal axes the Hessian's diagonal (Jacobi); on the Cholesky
        coordinates deflation: its diagonal on the axes ``V``, exactly, the rest by
        their mean diagonal."""
        if self.V is None:
            P = 1 + 2 * C * (self.L2T32 @ act).T           # (k'', r)
            return lambda res, on: res / P[on]
        V = self.V
        rest = max(self.L.shape[1] - V.shape[1], 1)
        hv = (self.PV2T @ act).T                          # (k'', k): H's diagonal on V
        mu = 1 + 2 * C * ((self.sq32 @ act) - hv.sum(1)).clamp_min(0) / rest
        inv_h = 1 / (1 + 2 * C * hv) - 1 / mu[:, None]
        return lambda res, on: res / mu[on, None] + ((res @ V) * inv_h[on]) @ V.T

    @classmethod
    def of(cls, basis: Basis, rows: torch.Tensor | np.ndarray | None) -> RowSet:
        if rows is None:
            L, gidx, ends = basis.L, None, basis.ends
        else:
            gidx = torch.as_tensor(rows, device=basis.L.device, dtype=torch.long)
            L, ends = basis.L[gidx], None if basis.ends is None else basis.ends[gidx]
        Lr = Rows(L, ends)
        Lr32 = Lr.float()
        L32 = Lr32.L
        if basis.V is None:
            return cls(L, gidx, Lr, Lr32, (L32 * L32).T.contiguous(), None, None, None)
        return cls(L, gidx, Lr, Lr32, None, ((L32 @ basis.V) ** 2).T.contiguous(),
                   (L32 * L32).sum(1), basis.V)


def _top_axes(L: torch.Tensor, k: int, power: int = 2, over: int = 16) -> torch.Tensor:
    """(r, k) float32: the top k right singular vectors of L (N, r) (its principal
    axes), by a seeded randomized subspace iteration with ``power`` passes (Halko et
    al. 2011); approximate, which only a preconditioner may be."""
    L32 = L.float()
    gen = torch.Generator(device=L.device).manual_seed(0)
    Y = torch.randn(L.shape[1], k + over, generator=gen, device=L.device)
    for _ in range(power + 1):
        Y = L32.T @ (L32 @ torch.linalg.qr(Y)[0])
    Q = torch.linalg.qr(Y)[0]
    B = L32 @ Q
    _, vec = torch.linalg.eigh(B.T @ B)
    return (Q @ vec[:, -k:]).contiguous()


def objective(L: torch.Tensor, Y: torch.Tensor, M: torch.Tensor, omega: torch.Tensor,
              C: float) -> torch.Tensor:
    """f_k per class (K,) of weights ``omega`` (K, r) on rows ``L`` (N, r)."""
    slack = (1 - Y * (L @ omega.T)).clamp_min(0) * M
    return 0.5 * (omega ** 2).sum(1) + C * (slack ** 2).sum(0)


@dataclass
class FitInfo:
    newton: int                 # Newton iterations (the most any class needed)
    cg: int                     # conjugate-gradient steps in all
    converged: bool             # every class met the tolerance
    objective: np.ndarray       # (K,) f_k at the returned weights


def _line_search(a: torch.Tensor, b: torch.Tensor, Z: torch.Tensor, Q: torch.Tensor,
                 Y: torch.Tensor, M: torch.Tensor, C: float, iters: int = 50) -> torch.Tensor:
    """argmin_t f(omega + t d) per class: the root of the piecewise-linear, increasing
    phi'(t) = a + t b + 2C sum_i M (z_i + t q_i - y_i) q_i [y_i (z_i + t q_i) < 1], with
    a = omega.d, b = |d|^2, Z and Q the margins of omega and d: safeguarded Newton steps
    (exact once the active set stops changing), bisection when they leave the bracket;
    to a relative 1e-9 (the Newton iteration's accuracy comes from its gradient test)."""
    lo = torch.zeros_like(a)
    hi = torch.full_like(a, float("inf"))
    t = torch.ones_like(a)
    for _ in range(iters):
        zt = Z + t * Q
        act = (Y * zt < 1) & M
        d1 = a + t * b + 2 * C * torch.where(act, (zt - Y) * Q, 0).sum(0)
        d2 = b + 2 * C * torch.where(act, Q * Q, 0).sum(0)
        lo = torch.where(d1 < 0, t, lo)
        hi = torch.where(d1 > 0, t, hi)
        newton = t - d1 / d2
        inside = (newton > lo) & (newton < hi)
        mid = torch.where(torch.isinf(hi), 2 * t, 0.5 * (lo + hi))
        # settled: at the root up to rounding (phi' is exact on the root's piece)
        settled = ((newton - t).abs() <= 1e-9 * t) | (hi - lo <= 1e-9 * t)
        if bool(settled.all()):
            return t
        t = torch.where(settled, t, torch.where(inside, newton, mid))
    return t


CHOLESKY_SLOWDOWN = 4  # a Cholesky flop costs about this many matrix-product flops
CHUNK_BYTES = 1 << 28   # memory of one batch of padded Newton systems
PAD_SLACK = 1.05        # the largest system of a batch: at most this times the smallest


def _exact_steps(Gz: torch.Tensor, gidx: torch.Tensor | None, act: torch.Tensor,
                 Y: torch.Tensor, classes: torch.Tensor, C: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The Newton points of ``classes``: beta (len(classes), n) with
    ``(G_AA + I / 2C) beta_A = y_A`` on each class's active rows A (zero elsewhere), and
    which of them were solved (a failed factorisation falls back to CG). ``Gz``: the
    Gram matrix with a zero row and column N (:attr:`Basis.Gz`). The systems are
    batched, padded with identity rows, in order of size; on a CPU the batches are
    shared among torch's threads, one thread each (a batched factorisation of small
    matrices uses threads poorly: 1.6x faster so on 2 cores)."""
    n = act.shape[0]
    dev = Gz.device
    sizes = act[:, classes].sum(0)
    order = torch.argsort(sizes)
    sizes_l = sizes[order].tolist()
    parts = []
    start = 0
    while start < len(classes):
        # a batch: systems within PAD_SLACK of the smallest one's size (padding costs
        # the largest one's factorisation for each), within CHUNK_BYTES
        stop = start + 1
        while stop < len(classes) and (stop - start + 1) * sizes_l[stop] ** 2 * 8 \
                <= CHUNK_BYTES and sizes_l[stop] <= sizes_l[start] * PAD_SLACK + 8:
            stop += 1
        parts.append(order[start:stop])
        start = stop
    threads = torch.get_num_threads() if dev.type == "cpu" else 1
    if threads > 1:   # each batch split among the threads
        parts = [p for part in parts for p in part.tensor_split(min(threads, len(part)))]

    def solve(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = int(sizes[part[-1]])
        idx = torch.zeros(len(part), m, dtype=torch.long, device=dev)
        valid = torch.zeros(len(part), m, dtype=torch.bool, device=dev)
        for j, c in enumerate(classes[part].tolist()):
            rows = torch.nonzero(act[:, c])[:, 0]
            idx[j, :len(rows)] = rows
            valid[j, :len(rows)] = True
        g = torch.where(valid, idx if gidx is None else gidx[idx], Gz.shape[0] - 1)
        A = Gz[g[:, :, None], g[:, None, :]]            # zero rows/columns for padding
        A.diagonal(dim1=1, dim2=2).add_(torch.where(valid, 1 / (2 * C), 1.0))
        rhs = torch.where(valid, Y[idx, classes[part][:, None]], 0.0)[:, :, None]
        chol, info = torch.linalg.cholesky_ex(A)
        half = torch.linalg.solve_triangular(chol, rhs, upper=False)
        sol = torch.linalg.solve_triangular(chol.mT, half, upper=True)[:, :, 0]
        good = info == 0
        rows_b = torch.where(valid & good[:, None], sol, 0.0)
        return good, torch.zeros(len(part), n, dtype=Gz.dtype, device=dev).scatter_add_(
            1, idx, rows_b), part

    if threads > 1 and len(parts) > 1:
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                done = list(pool.map(solve, parts))
        finally:
            torch.set_num_threads(threads)
    else:
        done = [solve(part) for part in parts]
    beta = torch.zeros(len(classes), n, dtype=Gz.dtype, device=dev)
    ok = torch.ones(len(classes), dtype=torch.bool, device=dev)
    for good, rows_b, part in done:
        ok[part] = good
        beta[part] = rows_b
    return beta, ok


def fit_squared_hinge(basis: Basis, rows: torch.Tensor | np.ndarray | None,
                      Y: torch.Tensor, M: torch.Tensor, C: float,
                      omega: torch.Tensor | None = None, tol: float = TOL,
                      max_newton: int = MAX_NEWTON, max_cg: int = MAX_CG,
                      direct_max: int | None = None) -> tuple[torch.Tensor, FitInfo]:
    """Minimise f_k for every class k on ``rows`` of the basis (all when None): ``Y``
    (n, K) in {-1, +1}, ``M`` (n, K) bool (row used for class k), ``omega`` (K, r) the
    start (a warm start from a nearby C; zeros by default). Returns the (K, r) weights
    and a :class:`FitInfo`.

    Each Newton step minimises the quadratic model on the class's active rows A (margin
    below 1): exactly, ``omega = L_A^T beta`` with ``(G_AA + I / 2C) beta = y_A`` (a
    Cholesky solve), when A has at most ``direct_max`` rows (default: when that costs
    less than the CG steps the last Newton system took; high C, few support vectors);
    by conjugate gradients otherwise; then the exact line search towards it.
    """
    dev = basis.L.device
    G = basis.Gz
    rs = basis.rows(rows)
    L, gidx, Lr, Lr32 = rs.L, rs.gidx, rs.Lr, rs.Lr32
    n, r = L.shape
    k = Y.shape[1]
    Y = Y.to(L)
    M = M.to(device=dev, dtype=torch.bool)
    Mf = M.to(L.dtype)
    omega = torch.zeros(k, r, dtype=L.dtype, device=dev) if omega is None \
        else omega.to(L).clone()
    Z = Lr.mm(omega.T)             # (n, K) margins
    cg_est = 10.0   # CG steps a Newton system takes (the last one's count)
    cg_steps = 0
    f = torch.zeros(k, dtype=L.dtype, device=dev)
    done = torch.zeros(k, dtype=torch.bool, device=dev)
    lv = torch.arange(k, device=dev)   # the classes still iterating (a done one is left)
    for it in range(max_newton + 1):
        Yl = Y[:, lv]
        slack = (1 - Yl * Z[:, lv]).clamp_min(0) * Mf[:, lv]   # (n, k'), 0 where unused
        fl = 0.5 * (omega[lv] ** 2).sum(1) + C * (slack ** 2).sum(0)
        f[lv] = fl
        grad = omega[lv] - 2 * C * Lr.tmm(slack * Yl).T         # (k', r)
        gg = (grad ** 2).sum(1)
        ok = gg <= 2 * tol * fl
        done[lv[ok]] = True
        if bool(ok.all()) or it == max_newton:
            break
        keep = torch.nonzero(~ok)[:, 0]
        lv, Yl, slack, grad, gg, fl = lv[keep], Yl[:, keep], slack[:, keep], grad[keep], \
            gg[keep], fl[keep]
        act_b = slack > 0                                      # generalised Hessian's rows
        n_act = act_b.sum(0)
        if G is None:
            direct = torch.zeros_like(ok[keep])
        elif direct_max is None:  # an exact step where it costs less than CG's
            direct = n_act.double() ** 3 / 3 * CHOLESKY_SLOWDOWN <= cg_est * 4 * n * r
        else:
            direct = n_act <= direct_max
        d = torch.zeros_like(grad)
        if bool(direct.any()):
            sel = torch.nonzero(direct)[:, 0]
            beta, good = _exact_steps(G, gidx, act_b, Yl, sel, C)
            direct[sel[~good]] = False
            sel, beta = sel[good], beta[good]
            d[sel] = Lr.tmm(beta.T).T - omega[lv[sel]]
        if not bool(direct.all()):
            # preconditioned CG on H d = -grad, H v = v + 2C L^T diag(act) L v, per class
            cls = torch.nonzero(~direct)[:, 0]
            Gc, act_c = grad[cls].float(), act_b[:, cls].float()
            precond = rs.preconditioner(act_c, C)
            ggc, fc = gg[cls], fl[cls]
            stop = (ggc.sqrt() * torch.clamp((ggc / (2 * fc.clamp_min(1e-300))).sqrt(),
                                             max=0.1).clamp_min(1e-3)).float()  # forcing
            dc = torch.zeros_like(Gc)
            res = -Gc
            on = torch.arange(len(cls), device=dev)     # the classes still iterating
            zr = precond(res, on)
            p = zr.clone()
            rz = (res * zr).sum(1)
            for step in range(1, max_cg + 1):
                po = p[on]
                Hp = po + 2 * C * Lr32.tmm(act_c[:, on] * Lr32.mm(po.T)).T
                cg_steps += 1
                alpha = rz[on] / (po * Hp).sum(1).clamp_min(TINY32)
                dc[on] += alpha[:, None] * po
                res[on] -= alpha[:, None] * Hp
                on = on[(res[on] ** 2).sum(1).sqrt() > stop[on]]
                if len(on) == 0:
                    break
                zr = precond(res[on], on)
                rz_new = (res[on] * zr).sum(1)
                p[on] = zr + (rz_new / rz[on].clamp_min(TINY32))[:, None] * p[on]
                rz[on] = rz_new
            d[cls] = dc.to(d.dtype)
            cg_est = float(step)
        Q = Lr.mm(d.T)
        t = _line_search((omega[lv] * d).sum(1), (d ** 2).sum(1), Z[:, lv], Q, Yl, M[:, lv],
                         C)
        omega[lv] += t[:, None] * d
        Z[:, lv] += t * Q
    return omega, FitInfo(it, cg_steps, bool(done.all()), f.cpu().numpy())
