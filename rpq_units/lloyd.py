"""Batched k-means (Lloyd) on torch: one code path for CPU and GPU.

``G`` independent problems (the M sub-quantizers of PQ/RPQ) are solved together:
``x: (G, N, d)`` -> ``centroids: (G, K, d)``. Nearest centroid by
``argmin_k ||x||^2 - 2 x c_k^T + ||c_k||^2``, computed on row blocks so the ``(N, K)`` score
matrix never exists in memory.

:func:`fit_kmeans` runs, in order:

1. **Seeding**: greedy k-means++ (Arthur & Vassilvitskii, 2007; ``2 + log K`` candidate draws
   per step, as in scikit-learn) on a seeded random subset of ``init_frames`` rows, with the
   D^2 distances measured after a random projection to ``SEED_PROJ_DIM`` dims. K-means++ is
   K sequential passes over its input; a small, projected subset keeps them in cache.
2. **Warm start**: Lloyd iterations (Lloyd, 1982) on a larger seeded subset (``warm_frames``
   rows), where centroids move most and an iteration costs a fraction of a full pass.
3. **Full-data Lloyd** until the relative change of the objective falls under ``tol`` or
   ``max_iter`` passes. On CPU the passes skip rows whose assignment provably cannot change
   (Hamerly, 2010: per row an upper bound on the distance to its centroid and a lower bound
   on the distance to every other one). Hamerly lowers every lower bound by the largest
   centroid move; here the largest movers are measured exactly instead, so the bounds drop
   only by the largest remaining move (see :func:`_lloyd_bounded_impl`). Cluster sums are
   float64 and updated only from the rows that changed cluster. The passes follow the same
   assignments as plain Lloyd at a fraction of the distance computations.
4. **Final assignment** of all rows to the final centroids (on CPU by one more bounded
   pass, else by :func:`assign`), which gives the reported inertia.

On CUDA, for codebooks of at least :data:`LOWP_MIN_K` centroids, :func:`assign` uses
:func:`assign_lowp`: an fp16 product on row blocks whose result is certified exact by an
error bound (uncertified rows are rescored or searched again in fp32).

Empty clusters are re-seeded with the rows farthest from their centroids. Everything is
seeded by ``seed`` through a CPU ``torch.Generator``: same seed and data, same centroids.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

#: rows per block in :func:`assign` (CPU): the (block, K) scores stay cache-sized.
CPU_BLOCK_ROWS = 4096
#: default subset sizes, per centroid: seeding and warm start (capped by N).
INIT_FRAMES_PER_CENTROID = 8
#: seeding distances are measured in a random projection to this many dims (see kmeans_plusplus)
SEED_PROJ_DIM = 64
WARM_FRAMES_PER_CENTROID = 64
#: warm-start iterations on the subset (they stop earlier at ``WARM_TOL``).
WARM_ITERS = 20
WARM_TOL = 1e-3
#: relative slack on squared distances from the ``||x||^2 - 2xc + ||c||^2`` expansion, used to
#: keep Hamerly's bounds valid under fp32 rounding.
BOUND_EPS = 1e-5


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: unchanged), then restore.

    The bookkeeping of seeding and of bounded Lloyd is many small tensor ops; on a busy
    machine every OpenMP fork/join of such an op waits for a free core, which made seeding
    over 10x slower with 2 threads than with 1. Small ops therefore run on one thread and
    only the large matrix products use the caller's thread count.
    """
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _chunk_rows(n: int, d: int, k: int, budget: int = 1 << 26) -> int:
    """Rows per chunk so a (chunk, K) score block stays under ``budget`` floats."""
    return max(1, min(n, budget // max(k, 1)))


def _block_rows(x: torch.Tensor, k: int) -> int:
    if x.device.type == "cpu":
        return max(1, min(CPU_BLOCK_ROWS, (1 << 22) // max(k, 1) * 4))
    return _chunk_rows(x.shape[-2], x.shape[-1], k * x.shape[0])


@torch.no_grad()
def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per row.

    x: (G, N, d), centroids: (G, K, d) -> codes (G, N) int64, squared distances (G, N) float32.
    Works on row blocks (no (N, K) matrix); ties go to the lowest index. On CUDA devices, for
    K >= :data:`LOWP_MIN_K`, the certified reduced-precision search :func:`assign_lowp` is used
    (same codes; set ``GPU_LOWP = False`` to force the plain fp32 product). Where the caller
    allowed TF32 (``torch.backends.cuda.matmul.allow_tf32 = True``) the plain product runs in
    TF32 instead: about 2x faster on an H100 than the certified search, but not exact (99.97 %
    of codes equal to fp32 in bench/RESULTS.md).
    """
    if (x.is_cuda and GPU_LOWP and centroids.shape[1] >= LOWP_MIN_K
            and not torch.backends.cuda.matmul.allow_tf32):
        return assign_lowp(x, centroids)
    g, n, d = x.shape
    k = centroids.shape[1]
    c_sq = (centroids * centroids).sum(-1).unsqueeze(1)  # (G, 1, K)
    c_t = centroids.transpose(1, 2)  # (G, d, K)
    codes = torch.empty(g, n, dtype=torch.long, device=x.device)
    dist = torch.empty(g, n, dtype=torch.float32, device=x.device)
    step = _block_rows(x, k * g)
    buf = torch.empty(g, min(step, n), k, dtype=torch.float32, device=x.device)
    for s in range(0, n, step):
        xc = x[:, s : s + step]
        scores = buf[:, : xc.shape[1]]
        torch.baddbmm(c_sq, xc, c_t, alpha=-2.0, out=scores)
        best, idx = scores.min(dim=2)
        codes[:, s : s + step] = idx
        dist[:, s : s + step] = (best + (xc * xc).sum(-1)).clamp_min_(0.0)
    return codes, dist


#: on CUDA, :func:`assign` uses the certified fp16 search :func:`assign_lowp` ...
GPU_LOWP = True
#: ... for codebooks of at least this many centroids. Below it the fixed per-row work of the
#: certified search (centring, casting, the exact distances) outweighs the cheaper product:
#: on one H100 with N = 2M, D = 1024 it was slower than the fp32 product at K = 500 and
#: faster at K = 1000 and K = 2000 (bench/RESULTS.md).
LOWP_MIN_K = 768
#: error of one reduced-precision dot product, per unit ``||x|| ||c||``: rounding of both
#: inputs and of the output (3u) plus fp32 accumulation, times a safety margin of 4/3.
LOWP_EPS = {torch.float16: 4 * 2.0**-11, torch.bfloat16: 4 * 2.0**-8}
#: absolute error per feature dimension from inputs that fall in the subnormal range
#: (fp16 only: bf16 has the fp32 exponent range), for inputs scaled to |x| <= 1, |c| <= 2.
LOWP_TINY = {torch.float16: 2.0**-23, torch.bfloat16: 0.0}


@contextlib.contextmanager
def _exact_fp16_accumulation() -> Iterator[None]:
    """cuBLAS may reduce fp16 products in fp16 (split-K) unless told not to; the error bound
    assumes fp32 accumulation."""
    old = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = old


@torch.no_grad()
def assign_lowp(
    x: torch.Tensor,
    centroids: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float16,
    candidates: int = 2,
    block_rows: int | None = None,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid with a reduced-precision product, certified exact. Same contract as
    :func:`assign`: x (G, N, d), centroids (G, K, d) -> codes (G, N), squared distances (G, N).

    Rows and centroids are centred on the centroid mean ``mu`` (distances do not change). Per
    row block, with ``a`` the largest centred row norm and ``beta`` the largest centred
    centroid norm, one fp16 (or bf16) product of the augmented matrices ``[x'/a, 1]`` and
    ``[-2 c'/beta, ||c'||^2 / (a beta)]`` gives every score ``||c'_j||^2 - 2 x' c'_j`` divided
    by ``a beta``, with error at most ``E = eps (2 ||x'|| / a + beta / a)`` plus a subnormal
    term (``eps`` = :data:`LOWP_EPS`). Three tiers, each exact:

    1. the best approximate centroid is the nearest when the second-best approximate score
       is more than ``2 E`` above it (no other centroid can overtake it);
    2. otherwise the ``candidates`` best are rescored exactly in fp32 (elementwise, never
       TF32), and the best of them is the nearest when its exact score is below the next
       approximate score minus ``E``;
    3. the remaining rows are searched again with the fp32 product.

    The squared distances are computed directly, ``||x - c_code||^2``. ``stats`` (a dict)
    receives the counts ``rows``, ``rescored`` (tier 2) and ``fallback`` (tier 3).
    """
    g, n, d = x.shape
    k = centroids.shape[1]
    t = max(1, min(candidates, k - 1))
    eps, tiny = LOWP_EPS[dtype], LOWP_TINY[dtype] * d
    step = min(n, block_rows or (1 << 18 if x.is_cuda else 4096))
    dpad = (d + 8) // 8 * 8  # room for the bias column, rows 16-byte aligned for the GEMM
    codes = torch.empty(g, n, dtype=torch.long, device=x.device)
    dist = torch.empty(g, n, dtype=torch.float32, device=x.device)
    xa = torch.zeros(step, dpad, dtype=dtype, device=x.device)
    xa[:, d] = 1.0
    ca = torch.zeros(k, dpad, dtype=torch.float32, device=x.device)
    rescored = fallback = 0
    with _exact_fp16_accumulation():
        for gi in range(g):
            c = centroids[gi]
            mu = c.mean(0)
            cc = c - mu
            cc_sq = (cc * cc).sum(1)
            beta = cc_sq.max().sqrt().clamp_min(1e-30)
            ca[:, :d] = cc * (-2.0 / beta)
            for s in range(0, n, step):
                e = min(n, s + step)
                b = e - s
                xc = x[gi, s:e] - mu
                nrm = torch.linalg.vector_norm(xc, dim=1)
                # a >= beta / 1024 keeps the bias column (<= beta / a) far from fp16 overflow
                a = torch.maximum(nrm.max(), beta / 1024.0)
                torch.div(xc, a, out=xa[:b, :d])
                ca[:, d] = cc_sq / (a * beta)
                sc = torch.mm(xa[:b], ca.to(dtype).t())  # (b, K): score / (a beta)
                err = (2.0 * nrm / a + beta / a) * eps + tiny  # (b,), scaled units
                v1, i1 = sc.min(dim=1)
                sc.scatter_(1, i1.unsqueeze(1), float("inf"))
                v2, i2 = sc.min(dim=1)
                code = i1
                unsure = (v2.float() - v1.float() <= 2.0 * err).nonzero().squeeze(1)
                if unsure.numel():
                    rescored += int(unsure.numel())
                    # the ``candidates`` best of the unsure rows and the score after them
                    sub = sc.index_select(0, unsure)
                    cand = [i1.index_select(0, unsure), i2.index_select(0, unsure)]
                    nxt = v2.index_select(0, unsure)
                    for _ in range(t - 1):
                        sub.scatter_(1, cand[-1].unsqueeze(1), float("inf"))
                        nxt, i_next = sub.min(dim=1)
                        cand.append(i_next)
                    cand_t = torch.stack(cand[:t], dim=1)  # (u, t)
                    xu = xc.index_select(0, unsure)
                    exact = cc_sq[cand_t] - 2.0 * (cc[cand_t] * xu.unsqueeze(1)).sum(-1)
                    best, j = exact.min(dim=1)
                    code = i1.clone()
                    code[unsure] = cand_t.gather(1, j.unsqueeze(1)).squeeze(1)
                    scale = a * beta
                    nrm_u = nrm.index_select(0, unsure)
                    slack = BOUND_EPS * (nrm_u * nrm_u + cc_sq.max())
                    ok = best + slack < (nxt.float() - err.index_select(0, unsure)) * scale
                    bad = unsure[~ok]
                    if bad.numel():
                        fallback += int(bad.numel())
                        # centred rows: less cancellation in the fp32 expansion
                        rows = xc.index_select(0, bad)
                        scores = torch.addmm(cc_sq, rows, cc.t(), alpha=-2.0)
                        code[bad] = scores.argmin(dim=1)
                codes[gi, s:e] = code
                diff = xc.sub_(cc.index_select(0, code))
                dist[gi, s:e] = torch.linalg.vector_norm(diff, dim=1).square_()
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + g * n
        stats["rescored"] = stats.get("rescored", 0) + rescored
        stats["fallback"] = stats.get("fallback", 0) + fallback
    return codes, dist


class _Searcher:
    """Exact nearest and second-nearest centroid search for one problem, on row blocks.

    ``search(rows)`` -> codes, ``d1`` (squared distance to the nearest centroid) and ``d2``
    (squared distance to the second nearest), for ``x[rows]`` (all rows when ``rows`` is
    None), from the scores ``||c||^2 - 2 x c^T`` of one fp32 product per block; the rows are
    gathered block by block, never copied as a whole.
    """

    def __init__(self, x: torch.Tensor, x_sq: torch.Tensor, cent: torch.Tensor):
        self.x, self.x_sq = x, x_sq
        self.c_sq = (cent * cent).sum(1)
        self.c_t = cent.t()
        self.block = _block_rows(x.unsqueeze(0), cent.shape[0])

    def search(self, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.x.shape[0] if rows is None else rows.numel()
        dev = self.x.device
        codes = torch.empty(n, dtype=torch.long, device=dev)
        d1 = torch.empty(n, dtype=torch.float32, device=dev)
        d2 = torch.empty(n, dtype=torch.float32, device=dev)
        buf = torch.empty(min(self.block, n), self.c_sq.shape[0], dtype=torch.float32, device=dev)
        for s in range(0, n, self.block):
            e = min(n, s + self.block)
            if rows is None:
                xb, xb_sq = self.x[s:e], self.x_sq[s:e]
            else:
                r = rows[s:e]
                xb, xb_sq = self.x.index_select(0, r), self.x_sq.index_select(0, r)
            scores = buf[: e - s]
            torch.addmm(self.c_sq, xb, self.c_t, alpha=-2.0, out=scores)
            best, idx = scores.min(dim=1)
            scores.scatter_(1, idx.unsqueeze(1), float("inf"))
            codes[s:e] = idx
            torch.add(best, xb_sq, out=d1[s:e])
            torch.add(scores.amin(dim=1), xb_sq, out=d2[s:e])
        return codes, d1, d2


def _sqdist_rows(
    x: torch.Tensor, rows: torch.Tensor | None, cent: torch.Tensor, codes: torch.Tensor
) -> torch.Tensor:
    """``||x[rows] - cent[codes]||^2`` computed directly, on cache-sized blocks. x (n, d),
    rows (r,) or None (all rows), cent (K, d), codes (r,) -> (r,) float32."""
    r = x.shape[0] if rows is None else rows.numel()
    out = torch.empty(r, dtype=torch.float32, device=x.device)
    step = 2048
    for s in range(0, r, step):
        xb = x[s : s + step] if rows is None else x.index_select(0, rows[s : s + step])
        diff = xb - cent.index_select(0, codes[s : s + step])
        out[s : s + step] = (diff * diff).sum(1)
    return out


def _assign_top2(
    x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One problem, fp32: x (n, d), x_sq (n,), centroids (K, d) -> codes (n,), nearest and
    second nearest squared distances (n,), (n,) (from the expansion, not clamped)."""
    return _Searcher(x, x_sq, centroids).search(None)


def _subset(x: torch.Tensor, m: int, generator: torch.Generator) -> torch.Tensor:
    """A seeded random subset of ``m`` rows (the same rows for every group) of x (G, N, d)."""
    n = x.shape[1]
    if m >= n:
        return x
    idx = torch.randperm(n, generator=generator)[:m].sort().values.to(x.device)
    return x.index_select(1, idx)


@torch.no_grad()
def kmeans_plusplus(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    *,
    n_trials: int | None = None,
    proj_dim: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007) for each of G problems.

    x: (G, N, d) -> (G, K, d), centroids being rows of x. Each step draws ``n_trials``
    candidates (default ``2 + floor(log K)``, as scikit-learn) with probability proportional to
    the squared distance to the nearest chosen centroid, and keeps the one that lowers the
    potential most (``n_trials=1``: plain k-means++).

    ``proj_dim``: measure the seeding distances after a seeded Gaussian random projection to
    ``proj_dim`` dimensions (Johnson-Lindenstrauss; squared distances are kept up to a small
    relative error, so D^2 sampling keeps its behaviour). The K sequential steps then read a
    ``(N, proj_dim)`` matrix that stays in cache instead of the full ``(N, d)`` one.
    """
    g, n, d = x.shape
    if n_trials is None:
        n_trials = 2 + int(math.log(k))
    t = max(1, min(int(n_trials), n))
    z = x
    if proj_dim is not None and proj_dim < d:
        proj = torch.randn(d, proj_dim, generator=generator).to(x.device, x.dtype)
        z = torch.matmul(x, proj / math.sqrt(proj_dim))
    cent = torch.empty(g, k, d, dtype=x.dtype, device=x.device)
    with _threads(1 if x.device.type == "cpu" else None):
        _seed_loop(x, z, k, t, generator, cent)
    return cent


def _seed_loop(
    x: torch.Tensor, z: torch.Tensor, k: int, t: int, generator: torch.Generator,
    cent: torch.Tensor,
) -> None:
    """The K sequential k-means++ steps (see :func:`kmeans_plusplus`), written into ``cent``."""
    g, n, _ = x.shape
    for gi in range(g):
        zi = z[gi].contiguous()
        z_sq = (zi * zi).sum(1)  # (N,)
        first = int(torch.randint(n, (1,), generator=generator))
        chosen = [first]
        closest = (z_sq - 2 * (zi @ zi[first]) + z_sq[first]).clamp_min_(0.0)
        for _ in range(1, k):
            w = closest.double().cpu()
            if not float(w.sum()) > 0:
                w = torch.ones_like(w)
            cand = torch.multinomial(w, t, replacement=True, generator=generator).to(x.device)
            zc = zi.index_select(0, cand)  # (t, p)
            dc = torch.addmm(z_sq.unsqueeze(0), zc, zi.t(), alpha=-2.0)
            dc.add_(z_sq[cand].unsqueeze(1)).clamp_min_(0.0)  # (t, N)
            pot = torch.minimum(dc, closest.unsqueeze(0))
            best = int(pot.sum(1).argmin())
            chosen.append(int(cand[best]))
            closest = pot[best]
        cent[gi] = x[gi].index_select(0, torch.tensor(chosen, device=x.device))


def _reseed_empty(
    cent: torch.Tensor, counts: torch.Tensor, x: torch.Tensor, far: torch.Tensor
) -> int:
    """Move the centroids of empty clusters (one problem: cent (K, d), counts (K,)) onto the
    rows of x (n, d) farthest from their centroids (``far``: (n,) distances). Returns how many."""
    empty = (counts == 0).nonzero().squeeze(1)
    ne = int(empty.numel())
    if ne:
        rows = far.topk(min(ne, far.numel())).indices
        cent[empty[: rows.numel()]] = x[rows]
        logger.debug("re-seeded %d empty clusters", ne)
    return ne


def _update_plain(
    x: torch.Tensor, codes: torch.Tensor, dist: torch.Tensor, k: int, sq_total: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the clusters (G, K, d) given codes (G, N), empty clusters re-seeded, and the
    objective of the codes at those means, ``(sum ||x||^2 - sum_k ||S_k||^2 / n_k) / N`` (G,)."""
    g, n, d = x.shape
    sums = torch.zeros(g, k, d, dtype=x.dtype, device=x.device)
    counts = torch.zeros(g, k, dtype=x.dtype, device=x.device)
    ones = torch.ones(n, dtype=x.dtype, device=x.device)
    for gi in range(g):
        sums[gi].index_add_(0, codes[gi], x[gi])
        counts[gi].index_add_(0, codes[gi], ones)
    c = counts.clamp_min(1.0).unsqueeze(-1)
    cent = sums / c
    obj = (sq_total - (sums.double() ** 2 / c.double()).sum((1, 2))) / n
    for gi in range(g):
        _reseed_empty(cent[gi], counts[gi], x[gi], dist[gi])
    return cent, obj


def _lloyd_plain(
    x: torch.Tensor, cent: torch.Tensor, *, max_iter: int, tol: float, history: list | None
) -> tuple[torch.Tensor, int]:
    """Plain batched Lloyd on x (G, N, d) from cent (G, K, d). Returns (centroids, passes).
    ``history`` gets, per pass, the objective of the new codes at their cluster means."""
    prev = None
    it = 0
    sq_total = (x * x).sum(-1).double().sum(-1)  # (G,)
    for it in range(1, max_iter + 1):  # noqa: B007
        codes, dist = assign(x, cent)
        cent, obj = _update_plain(x, codes, dist, cent.shape[1], sq_total)
        if history is not None:
            history.append(obj.tolist())
        if prev is not None:
            rel = float(((prev - obj) / prev.clamp_min(1e-30)).abs().max())
            if rel < tol:
                break
        prev = obj
    return cent, it


def _lloyd_bounded(
    x: torch.Tensor, cent: torch.Tensor, *, max_iter: int, tol: float, history: list | None
) -> tuple[torch.Tensor, int, float, torch.Tensor, torch.Tensor]:
    """:func:`_lloyd_bounded_impl` with small ops on one thread, products on the caller's."""
    if x.device.type != "cpu":
        return _lloyd_bounded_impl(x, cent, max_iter=max_iter, tol=tol, history=history, gemm_threads=None)
    threads = torch.get_num_threads()
    with _threads(1):
        return _lloyd_bounded_impl(x, cent, max_iter=max_iter, tol=tol, history=history,
                                   gemm_threads=threads)


def _lloyd_bounded_impl(
    x: torch.Tensor, cent: torch.Tensor, *, max_iter: int, tol: float, history: list | None,
    gemm_threads: int | None,
) -> tuple[torch.Tensor, int, float, torch.Tensor, torch.Tensor]:
    """Exact Lloyd on one problem, x (n, d), cent (K, d), skipping provably unchanged rows.

    Per row: ``upper`` >= distance to its centroid, ``lower`` <= distance to every other
    centroid (Hamerly, 2010). After centroids move by ``delta`` (K,), Hamerly lowers every
    ``lower`` by ``max(delta)``; in high dimension a few centroids move far while most do not
    move at all, so instead the ``m`` largest movers B are measured exactly for all rows (an
    (n, d) x (d, m) product) and ``lower`` drops only by the largest move outside B. ``m`` is
    picked each pass to minimise predicted work. Rows with ``upper > lower`` get their upper
    bound tightened, then, if still ambiguous, a full top-2 search. Cluster sums are float64
    and updated only for rows that changed cluster.

    After the last centroid update the rows are assigned once more (same bounds), so the
    function returns (centroids, passes, fraction of rows fully searched per pass after the
    first, codes (n,), squared distances (n,) to the final centroids, computed as
    ``||x - c||^2`` directly).
    The objective tracked for ``tol`` (and appended to ``history``) is the exact mean squared
    distance of each row to the mean of its cluster,
    ``(sum ||x||^2 - sum_k ||S_k||^2 / n_k) / N``, non-increasing across passes.
    """
    n, d = x.shape
    k = cent.shape[0]
    x_sq = (x * x).sum(1)
    sq_total = float(x_sq.double().sum())
    with _threads(gemm_threads):
        codes, d1, d2 = _Searcher(x, x_sq, cent).search(None)
    c_norm_max = float((cent * cent).sum(1).max().sqrt())
    slack = BOUND_EPS * (x_sq.sqrt() + c_norm_max) ** 2  # rounding slack on squared distances
    upper = (d1 + slack).clamp_min_(0.0).sqrt_()
    lower = (d2 - slack).clamp_min_(0.0).sqrt_()
    del d1, d2
    sums = torch.zeros(k, d, dtype=torch.float64, device=x.device)
    step = 2048
    for s in range(0, n, step):
        sums.index_add_(0, codes[s : s + step], x[s : s + step].double())
    counts = torch.bincount(codes, minlength=k).double()
    prev = None
    recomputed = 0
    it = 0
    block = _block_rows(x.unsqueeze(0), k)
    for it in range(1, max_iter + 1):  # noqa: B007
        obj = (sq_total - float((sums.pow(2).sum(1) / counts.clamp_min(1.0)).sum())) / n
        if history is not None:
            history.append([obj])
        new = (sums / counts.clamp_min(1.0).unsqueeze(1)).float()
        if bool((counts == 0).any()):
            _reseed_empty(new, counts, x, upper)
        delta = (new - cent).pow(2).sum(1).sqrt()
        cent = new
        done = (prev is not None and abs(prev - obj) / max(prev, 1e-30) < tol) or it == max_iter
        prev = obj
        # ---- choose B: the m largest movers, measured exactly --------------------------
        order = delta.argsort(descending=True)
        moves = torch.cat([delta[order], delta.new_zeros(1)])
        upper += delta[codes]
        best_m, best_cost = 0, float("inf")
        for m in (0, 4, 16, 32, 64, 128, 256):
            if m >= k:
                break
            fails = int((upper > lower - moves[m]).sum())
            cost = n * m + fails * k
            if cost < best_cost:
                best_m, best_cost = m, cost
        lower -= moves[best_m]
        if best_m:
            big = order[:best_m]
            pos = torch.full((k,), -1, dtype=torch.long, device=x.device)
            pos[big] = torch.arange(best_m, device=x.device)
            cb = cent[big]
            cb_sq = (cb * cb).sum(1)
            buf = torch.empty(min(block, n), best_m, dtype=torch.float32, device=x.device)
            gemm = _threads(gemm_threads)
            gemm.__enter__()
            for s in range(0, n, block):
                e = min(n, s + block)
                dist = buf[: e - s]
                torch.addmm(cb_sq, x[s:e], cb.t(), alpha=-2.0, out=dist)
                dist += x_sq[s:e].unsqueeze(1)
                own = pos[codes[s:e]]
                rows = (own >= 0).nonzero().squeeze(1)
                if rows.numel():
                    o = own[rows]
                    upper[s + rows] = (dist[rows, o] + slack[s + rows]).clamp_min_(0.0).sqrt_()
                    dist[rows, o] = float("inf")
                near = (dist.amin(1) - slack[s:e]).clamp_min_(0.0).sqrt_()
                torch.minimum(lower[s:e], near, out=lower[s:e])
            gemm.__exit__(None, None, None)
        # ---- rows that may change: tighten, then full search -----------------------------
        cand = (upper > lower).nonzero().squeeze(1)
        need = cand[:0]
        if cand.numel():
            exact = _sqdist_rows(x, cand, cent, codes[cand]).sqrt_().mul_(1 + BOUND_EPS)
            upper[cand] = exact
            need = cand[exact > lower[cand]]
        if need.numel() == 0:
            if done:
                break
            continue
        recomputed += int(need.numel())
        searcher = _Searcher(x, x_sq, cent)
        with _threads(gemm_threads if need.numel() >= 1024 else None):
            new_codes, nd1, nd2 = searcher.search(need)
        sl = slack[need]
        upper[need] = (nd1 + sl).clamp_min_(0.0).sqrt_()
        lower[need] = (nd2 - sl).clamp_min_(0.0).sqrt_()
        old_codes = codes[need]
        moved = (new_codes != old_codes).nonzero().squeeze(1)
        if moved.numel():
            xm = x.index_select(0, need[moved]).double()
            sums.index_add_(0, old_codes[moved], xm, alpha=-1.0)
            sums.index_add_(0, new_codes[moved], xm)
            counts -= torch.bincount(old_codes[moved], minlength=k).double()
            counts += torch.bincount(new_codes[moved], minlength=k).double()
            codes[need] = new_codes
        logger.debug("pass %d: objective %.6g, B=%d, %d tightened, %d of %d rows searched, %d moved",
                     it, obj, best_m, cand.numel(), need.numel(), n, moved.numel())
        if done:
            break
    # codes now hold the nearest centroid of every row for the final centroids
    dist = _sqdist_rows(x, None, cent, codes)
    frac = recomputed / max(1, n * it)
    return cent, it, frac, codes, dist


def _lloyd(
    x: torch.Tensor, cent: torch.Tensor, *, max_iter: int, tol: float, history: list | None,
    bounds: bool,
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Lloyd passes on x (G, N, d) from cent (G, K, d): bounded per problem, or plain batched.

    Returns (centroids, passes, squared distances (G, N) of the rows to their nearest final
    centroid, or None from the plain path)."""
    if not bounds:
        cent, it = _lloyd_plain(x, cent, max_iter=max_iter, tol=tol, history=history)
        return cent, it, None
    outs, dists, hists, passes = [], [], [], 0
    for gi in range(x.shape[0]):
        h: list = []
        c, it, frac, _, dist = _lloyd_bounded(x[gi], cent[gi], max_iter=max_iter, tol=tol, history=h)
        outs.append(c)
        dists.append(dist)
        hists.append([v[0] for v in h])
        passes = max(passes, it)
        logger.debug("problem %d: %d passes, %.1f%% of rows searched per pass", gi, it, 100 * frac)
    if history is not None:
        for i in range(max(len(h) for h in hists)):
            history.append([h[min(i, len(h) - 1)] for h in hists])
    return torch.stack(outs), passes, torch.stack(dists)


@torch.no_grad()
def fit_kmeans(
    x: torch.Tensor,
    k: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    init: str | torch.Tensor = "k-means++",
    init_frames: int | None = None,
    warm_frames: int | None = None,
    bounds: bool | None = None,
    history: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on G problems at once.

    x: (G, N, d) float32 (or (N, d), treated as G = 1) -> (centroids (G, K, d), inertia (G,)),
    inertia being the mean squared distance of the rows to their nearest final centroid.
    Stops when the relative change of the objective falls under ``tol`` or after
    ``max_iter`` full-data passes; empty clusters are re-seeded with the farthest rows.
    Deterministic for a given ``seed``.

    Optional keyword arguments: ``init`` (``"k-means++"`` or a (G, K, d) tensor of initial
    centroids, which also skips the warm start), ``init_frames`` / ``warm_frames`` (subset
    sizes for seeding and warm start; defaults ``8 K`` and ``64 K``, ``warm_frames=0`` turns
    the warm start off), ``bounds`` (Hamerly pruning; default on for CPU tensors),
    ``history`` (a list that receives, for every full-data pass, the objective of the new
    assignment at its cluster means: a list of G floats; non-increasing).
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    g, n, d = x.shape
    if k > n:
        raise ValueError(f"k-means: {n} rows is fewer than k={k}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    if isinstance(init, torch.Tensor):
        cent = init.reshape(g, k, d).to(x.device, x.dtype).clone()
        warm = 0
    elif init == "k-means++":
        n0 = min(n, init_frames or max(INIT_FRAMES_PER_CENTROID * k, 1024))
        cent = kmeans_plusplus(_subset(x, n0, gen), k, gen, proj_dim=SEED_PROJ_DIM)
        warm = WARM_FRAMES_PER_CENTROID * k if warm_frames is None else warm_frames
    else:
        raise ValueError(f"k-means: unknown init {init!r} (use 'k-means++' or a tensor)")
    if bounds is None:
        bounds = x.device.type == "cpu"
    if 0 < warm < n and max_iter > 1:
        cent, w_it, _ = _lloyd(_subset(x, warm, gen), cent, max_iter=WARM_ITERS,
                               tol=max(tol, WARM_TOL), history=None, bounds=bounds)
        logger.debug("warm start: %d passes on %d rows", w_it, warm)
    cent, it, dist = _lloyd(x, cent, max_iter=max_iter, tol=tol, history=history, bounds=bounds)
    logger.debug("full data: %d passes on %d rows", it, n)
    if dist is None:
        _, dist = assign(x, cent)
    inertia = dist.double().mean(1).float()
    if squeeze:
        return cent[0], inertia[0]
    return cent, inertia
