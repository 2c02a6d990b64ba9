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

The nearest-centroid searches and cluster sums are those of :mod:`rpq_units.search`: on CUDA
a fused Triton fp16 search whose result is certified exact by an error bound (uncertified
rows are rescored or searched again in fp32) and a sorted segment sum. With
``memory_budget``, frames larger than the budget stay in host memory and every pass streams
them to the device (:func:`host_chunks`).

Empty clusters are re-seeded with the rows farthest from their centroids. Everything is
seeded by ``seed`` through a CPU ``torch.Generator``: same seed and data, same centroids.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import torch

from rpq_units import search
from rpq_units.search import (  # noqa: F401  (assign, assign_lowp, LOWP_*: re-exported)
    BOUND_EPS,
    LOWP_EPS,
    LOWP_MIN_K,
    Top2Search,
    assign,
    assign_lowp,
    block_rows,
    cluster_sums,
    fused_available,
)

logger = logging.getLogger(__name__)

#: default subset sizes, per centroid: seeding and warm start (capped by N).
INIT_FRAMES_PER_CENTROID = 8
#: seeding distances are measured in a random projection to this many dims (see kmeans_plusplus)
SEED_PROJ_DIM = 64
WARM_FRAMES_PER_CENTROID = 64
#: warm-start iterations on the subset (they stop earlier at ``WARM_TOL``).
WARM_ITERS = 20
WARM_TOL = 1e-3


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


def _new_sums(g: int, k: int, d: int, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Zeroed cluster sums (G, K, d): float64 where :func:`cluster_sums` sums in float64 (CUDA
    with triton), else in the dtype of the rows (the same bits as one ``index_add_``)."""
    dtype = torch.float64 if fused_available(device) else x.dtype
    return torch.zeros(g, k, d, dtype=dtype, device=device)


def _accumulate(sums: torch.Tensor, counts: torch.Tensor, x: torch.Tensor, codes: torch.Tensor) -> None:
    """Add the rows x (G, b, d) with codes (G, b) to sums (G, K, d) and counts (G, K)."""
    for gi in range(x.shape[0]):
        counts[gi] += cluster_sums(x[gi], codes[gi], sums.shape[1], out=sums[gi])[1]


def _means(
    sums: torch.Tensor, counts: torch.Tensor, sq_total: torch.Tensor, n: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the clusters (G, K, d) and the objective of the codes at those means,
    ``(sum ||x||^2 - sum_k ||S_k||^2 / n_k) / N`` (G,)."""
    c = counts.clamp_min(1).to(sums.dtype).unsqueeze(-1)
    cent = (sums / c).to(dtype)
    obj = (sq_total - (sums.double() ** 2 / c.double()).sum((1, 2))) / n
    return cent, obj


def stream_rows(x: torch.Tensor, memory_budget: int | None) -> int | None:
    """Rows per chunk for a fit of x (G, N, d) streamed from host memory under
    ``memory_budget`` bytes of device memory for the data (two chunks in flight), or None
    when the data fit the budget (no streaming)."""
    if memory_budget is None or x.numel() * x.element_size() <= memory_budget:
        return None
    per_row = x.shape[0] * x.shape[2] * x.element_size()
    return max(1, int(memory_budget) // (2 * per_row))


def host_chunks(
    x: torch.Tensor, rows: int, device: torch.device
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Row chunks ``(start, end, x[:, start:end] on device)`` of a host tensor x (G, N, d).

    To a CUDA device the next chunk is copied while the caller computes on the current one:
    a worker thread copies it into one of two pinned buffers and queues the host-to-device
    copy on a side stream; the compute stream waits on that copy's event only. A chunk is
    valid until the next one is requested. On CPU, or with x already on the device, the
    chunks are views.
    """
    g, n, d = x.shape
    if device.type != "cuda" or x.device == device:
        for s in range(0, n, rows):
            yield s, min(n, s + rows), x[:, s : s + rows].to(device)
        return
    from concurrent.futures import ThreadPoolExecutor

    rows = min(rows, n)
    pinned = [torch.empty(g, rows, d, dtype=x.dtype, pin_memory=True) for _ in range(2)]
    on_dev = [torch.empty(g, rows, d, dtype=x.dtype, device=device) for _ in range(2)]
    copy_stream = torch.cuda.Stream(device)
    ready = [torch.cuda.Event() for _ in range(2)]
    used = [torch.cuda.Event() for _ in range(2)]
    compute = torch.cuda.current_stream(device)

    def stage(i: int) -> tuple[int, int, int]:
        s, e, j = i * rows, min(n, (i + 1) * rows), i % 2
        used[j].synchronize()  # the compute on this slot's previous chunk (and its copy) ended
        pinned[j][:, : e - s].copy_(x[:, s:e])
        with torch.cuda.stream(copy_stream):
            on_dev[j][:, : e - s].copy_(pinned[j][:, : e - s], non_blocking=True)
            ready[j].record(copy_stream)
        return s, e, j

    count = (n + rows - 1) // rows
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(stage, 0)
        for i in range(count):
            s, e, j = fut.result()
            if i + 1 < count:
                fut = pool.submit(stage, i + 1)
            compute.wait_event(ready[j])
            yield s, e, on_dev[j][:, : e - s]
            used[j].record(compute)


def assign_streamed(
    x: torch.Tensor, cent: torch.Tensor, rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign` of host rows x (G, N, d) against cent (G, K, d) on cent's device, in
    chunks of ``rows`` -> codes, squared distances (G, N) on the host."""
    g, n, _ = x.shape
    codes = torch.empty(g, n, dtype=torch.long)
    dist = torch.empty(g, n, dtype=torch.float32)
    for s, e, xd in host_chunks(x, rows, cent.device):
        c, dd = assign(xd, cent)
        codes[:, s:e], dist[:, s:e] = c.cpu(), dd.cpu()
    return codes, dist


def _lloyd_plain(
    x: torch.Tensor, cent: torch.Tensor, *, max_iter: int, tol: float, history: list | None,
    rows: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Plain batched Lloyd on x (G, N, d) from cent (G, K, d) on cent's device; returns
    (centroids, passes). ``history`` gets, per pass, the objective of the new codes at their
    cluster means. With ``rows``, x stays where it is (host memory) and each pass streams it
    to the device in chunks of ``rows`` (:func:`host_chunks`): the same passes (assignments,
    sums in row order, objective, re-seeding) with only two chunks on the device.

    Where :func:`assign` runs the fused search and x is on the device, the rows are prepared
    for it once (:func:`rpq_units.search.prepare_rows`: centred on their mean, scaled,
    rounded to fp16) instead of in every pass, and the passes skip the distances unless a
    cluster comes out empty (its re-seeding needs them)."""
    g, n, d = x.shape
    k = cent.shape[1]
    dev = cent.device
    rows = rows or n
    sq_rows = torch.empty(g, n, dtype=torch.float32, device=x.device)
    for s, e, xd in host_chunks(x, rows, dev):
        sq_rows[:, s:e] = (xd * xd).sum(-1).to(x.device)
    sq_total = sq_rows.double().sum(-1).to(dev)  # (G,)
    del sq_rows
    prep = None
    if rows >= n and x.device == dev and search.uses_fused(dev):
        try:
            prep = search.prepare_rows(x)
        except torch.OutOfMemoryError:
            logger.info("k-means: no device memory for the prepared fp16 rows; preparing "
                        "them in every pass")
    prev = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        sums = _new_sums(g, k, d, x, dev)
        counts = torch.zeros(g, k, dtype=torch.long, device=dev)
        dist: torch.Tensor | None = torch.empty(g, n, dtype=torch.float32, device=x.device)
        for s, e, xd in host_chunks(x, rows, dev):
            codes, dd = assign(xd, cent, prepared=prep, need_dist=False)
            _accumulate(sums, counts, xd, codes)
            if dd is None:
                dist = None
            elif dist is not None:
                dist[:, s:e] = dd.to(x.device)
        old = cent
        cent, obj = _means(sums, counts, sq_total, n, cent.dtype)
        if dist is None and bool((counts == 0).any()):  # the distances of this pass's codes
            dist = torch.empty(g, n, dtype=torch.float32, device=x.device)
            for s, e, xd in host_chunks(x, rows, dev):
                dist[:, s:e] = assign(xd, old, prepared=prep)[1].to(x.device)
        for gi in range(g):
            ne = int((counts[gi] == 0).sum())
            if ne:  # re-seed empty clusters with the farthest rows
                far = dist[gi].topk(min(ne, n)).indices
                _reseed_empty(cent[gi], counts[gi], x[gi].index_select(0, far).to(dev),
                              dist[gi].index_select(0, far).to(dev))
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
        codes, d1, d2 = Top2Search(x, x_sq, cent).search(None)
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
    block = block_rows(x.unsqueeze(0), k)
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
        searcher = Top2Search(x, x_sq, cent)
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
    device: str | torch.device | None = None,
    memory_budget: int | None = None,
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
    assignment at its cluster means: a list of G floats; non-increasing), ``device`` (where
    to compute; default x's), ``memory_budget`` (bytes: when x is larger, it stays in host
    memory and the full-data passes stream it to the device in chunks, see
    :func:`host_chunks`; seeding and warm start use their subsets in memory. All passes are
    plain Lloyd, as on GPU in memory, so the result equals an in-memory fit with
    ``bounds=False``).
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    g, n, d = x.shape
    device = x.device if device is None else torch.device(device)
    rows = stream_rows(x, memory_budget)
    if rows is None:
        x = x.to(device)
    else:
        x = x.cpu()
        logger.info("k-means: %.2f GB of frames over the memory budget of %.2f GB: streaming "
                    "%d rows at a time", x.numel() * x.element_size() / 1e9, memory_budget / 1e9,
                    rows)
    if k > n:
        raise ValueError(f"k-means: {n} rows is fewer than k={k}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    if isinstance(init, torch.Tensor):
        cent = init.reshape(g, k, d).to(device, x.dtype).clone()
        warm = 0
    elif init == "k-means++":
        n0 = min(n, init_frames or max(INIT_FRAMES_PER_CENTROID * k, 1024))
        cent = kmeans_plusplus(_subset(x, n0, gen).to(device), k, gen, proj_dim=SEED_PROJ_DIM)
        warm = WARM_FRAMES_PER_CENTROID * k if warm_frames is None else warm_frames
    else:
        raise ValueError(f"k-means: unknown init {init!r} (use 'k-means++' or a tensor)")
    if bounds is None:
        bounds = device.type == "cpu" and rows is None
    elif bounds and rows is not None:
        raise ValueError("k-means: bounds=True needs the data in memory (no memory_budget)")
    if 0 < warm < n and max_iter > 1:
        cent, w_it, _ = _lloyd(_subset(x, warm, gen).to(device), cent, max_iter=WARM_ITERS,
                               tol=max(tol, WARM_TOL), history=None, bounds=bounds)
        logger.debug("warm start: %d passes on %d rows", w_it, warm)
    if rows is None:
        cent, it, dist = _lloyd(x, cent, max_iter=max_iter, tol=tol, history=history,
                                bounds=bounds)
    else:
        cent, it = _lloyd_plain(x, cent, max_iter=max_iter, tol=tol, history=history, rows=rows)
        dist = None
    logger.debug("full data: %d passes on %d rows", it, n)
    if dist is None:
        _, dist = assign(x, cent) if rows is None else assign_streamed(x, cent, rows)
    inertia = dist.double().mean(1).float()
    if squeeze:
        return cent[0], inertia[0]
    return cent, inertia
