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
   only by the largest remaining move (see :class:`_BoundedPasses`). Cluster sums are
   float64 and updated only from the rows that changed cluster. The passes follow the same
   assignments as plain Lloyd at a fraction of the distance computations.
4. **Final assignment** of all rows to the final centroids (one more pass of the same kind),
   which gives the reported inertia.

Steps 2 and 3 are one loop, :func:`lloyd_loop`, over either kind of assignment passes
(:class:`_PlainPasses`, batched and optionally streamed, or :class:`_BoundedPasses`), with one
empty-cluster rule and a :class:`LloydStats` record per pass (objective, re-seeded clusters,
changed assignments, rows searched, time).

The nearest-centroid searches and cluster sums are those of :mod:`rpq_units.quant.search`: on CUDA
a fused Triton fp16 search whose result is certified exact by an error bound (uncertified
rows are rescored or searched again in fp32) and a sorted segment sum. With
``memory_budget``, frames larger than the budget stay in host memory and every pass streams
them to the device (:func:`host_chunks`).

Empty clusters are re-seeded with the rows farthest from their centroids. Everything is
seeded by ``seed`` through a CPU ``torch.Generator``: same seed and data, same centroids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterator

import torch

from rpq_units.quant import search
from rpq_units.quant.search import (  # noqa: F401  (assign, assign_lowp, LOWP_*: re-exported)
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


def subsample(
    x: torch.Tensor, max_rows: int | None, generator: torch.Generator, *, dim: int = 0
) -> torch.Tensor:
    """At most ``max_rows`` rows of x along ``dim`` (x (N, D) or, with ``dim=1``, the same
    rows of every problem of x (G, N, d)), drawn without replacement from ``generator`` and
    kept in their order; x itself when it has no more rows (or ``max_rows`` is None or 0)."""
    n = x.shape[dim]
    if max_rows is None or max_rows <= 0 or n <= max_rows:
        return x
    idx = torch.randperm(n, generator=generator)[:max_rows].sort().values
    return x.index_select(dim, idx.to(x.device))


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


@dataclasses.dataclass
class LloydStats:
    """One full-data Lloyd pass (the per-iteration record of faiss ``contrib/clustering.py``).

    ``objective``: per problem (G floats), the mean squared distance of the rows to the mean
    of their cluster, for the assignment that the pass's update starts from (non-increasing
    over passes); ``reseeded``: empty clusters re-seeded by the update; ``changed``: rows
    whose cluster changed in the assignment to the updated centroids; ``searched``: rows of
    that assignment searched against all K centroids (all of them for plain passes, the
    ambiguous ones for bounded passes); ``seconds``: wall time of the pass.
    """

    iteration: int
    objective: list[float]
    reseeded: int
    changed: int
    searched: int
    seconds: float


def _means(
    sums: torch.Tensor, counts: torch.Tensor, sq_total: torch.Tensor, n: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the clusters (G, K, d) and the objective of the codes at those means,
    ``(sum ||x||^2 - sum_k ||S_k||^2 / n_k) / N`` (G,)."""
    c = counts.clamp_min(1).to(sums.dtype).unsqueeze(-1)
    cent = (sums / c).to(dtype)
    obj = (sq_total - (sums.double() ** 2 / c.double()).sum((1, 2))) / n
    return cent, obj


def _reseed_empty(cent: torch.Tensor, counts: torch.Tensor, passes: _PlainPasses | _BoundedPasses) -> int:
    """The one empty-cluster rule: the centroids of the empty clusters of problem g (in index
    order) move onto the rows farthest from the centroid they were assigned to (farthest
    first). cent (G, K, d) is changed in place; returns how many were re-seeded."""
    total = 0
    for gi in range(cent.shape[0]):
        empty = (counts[gi] == 0).nonzero().squeeze(1)
        if empty.numel():
            rows = passes.farthest(gi, int(empty.numel()))
            cent[gi, empty[: rows.shape[0]]] = rows.to(cent.dtype)
            total += int(empty.numel())
    return total


class _PlainPasses:
    """Plain batched assignment passes of x (G, N, d) to centroids on ``device``.

    With ``rows``, x stays where it is (host memory) and every pass streams it to the device
    in chunks of ``rows`` (:func:`host_chunks`): the same assignments and sums (in row order)
    with only two chunks on the device. After :meth:`assign`: ``sums`` (G, K, d), ``counts``
    (G, K), ``codes`` and squared distances ``dist`` (G, N) (host side when streamed)."""

    def __init__(self, x: torch.Tensor, device: torch.device, rows: int | None = None) -> None:
        g, n, _ = x.shape
        self.x, self.device, self.n, self.rows = x, device, n, rows or n
        sq_rows = torch.empty(g, n, dtype=torch.float32, device=x.device)
        for s, e, xd in host_chunks(x, self.rows, device):
            sq_rows[:, s:e] = (xd * xd).sum(-1).to(x.device)
        self.sq_total = sq_rows.double().sum(-1).to(device)  # (G,)
        self.codes: torch.Tensor | None = None
        self.dist: torch.Tensor | None = None
        # where assign runs the fused search on rows held on the device, the rows are prepared
        # for it once (centred on their mean, scaled, rounded to fp16) instead of in every pass
        self.prep = None
        if self.rows >= n and x.device == device and search.uses_fused(device):
            try:
                self.prep = search.prepare_rows(x)
            except torch.OutOfMemoryError:
                logger.info("k-means: no device memory for the prepared fp16 rows; preparing "
                            "them in every pass")

    def assign(self, cent: torch.Tensor) -> tuple[int, int]:
        """Assign every row to its nearest centroid of cent (G, K, d) -> (changed, searched)."""
        g, n, d = self.x.shape
        k = cent.shape[1]
        # float64 where cluster_sums sums in float64 (CUDA with triton), else the rows' dtype
        # (the same bits as one index_add_)
        dtype = torch.float64 if fused_available(self.device) else self.x.dtype
        sums = torch.zeros(g, k, d, dtype=dtype, device=self.device)
        counts = torch.zeros(g, k, dtype=torch.long, device=self.device)
        codes = torch.empty(g, n, dtype=torch.long, device=self.x.device)
        dist = torch.empty(g, n, dtype=torch.float32, device=self.x.device)
        for s, e, xd in host_chunks(self.x, self.rows, self.device):
            c, dd = assign(xd, cent, prepared=self.prep)
            for gi in range(g):
                counts[gi] += cluster_sums(xd[gi], c[gi], k, out=sums[gi])[1]
            codes[:, s:e], dist[:, s:e] = c.to(self.x.device), dd.to(self.x.device)
        changed = g * n if self.codes is None else int((codes != self.codes).sum())
        self.codes, self.dist, self.sums, self.counts = codes, dist, sums, counts
        return changed, g * n

    def farthest(self, gi: int, m: int) -> torch.Tensor:
        """The m rows of problem gi farthest from their centroid, farthest first: (m, d)."""
        far = self.dist[gi].topk(min(m, self.n)).indices
        return self.x[gi].index_select(0, far).to(self.device)

    def final_dist(self) -> torch.Tensor:
        """Squared distances (G, N) of the rows to the centroids of the last assignment."""
        return self.dist


class _BoundedPasses:
    """Exact assignment passes of one problem, x (n, d), that skip provably unchanged rows.

    Per row: ``upper`` >= distance to its centroid, ``lower`` <= distance to every other
    centroid (Hamerly, 2010). After centroids move by ``delta`` (K,), Hamerly lowers every
    ``lower`` by ``max(delta)``; in high dimension a few centroids move far while most do not
    move at all, so instead the ``m`` largest movers B are measured exactly for all rows (an
    (n, d) x (d, m) product) and ``lower`` drops only by the largest move outside B. ``m`` is
    picked each pass to minimise predicted work. Rows with ``upper > lower`` get their upper
    bound tightened, then, if still ambiguous, a full top-2 search. Cluster sums are float64
    and updated only for rows that changed cluster. The passes give the codes of plain
    passes; the interface is :class:`_PlainPasses`' with G = 1.

    Small tensor ops run on one thread, the large products on ``gemm_threads`` (see
    :func:`_threads`).
    """

    def __init__(self, x: torch.Tensor, gemm_threads: int | None) -> None:
        self.x, self.n = x, x.shape[0]
        self.gemm_threads = gemm_threads
        self.x_sq = (x * x).sum(1)
        self.sq_total = self.x_sq.double().sum().reshape(1)
        self.block = block_rows(x.unsqueeze(0), 1)
        self.cent: torch.Tensor | None = None  # (K, d) of the last assignment

    def assign(self, cent: torch.Tensor) -> tuple[int, int]:
        """Assign the rows to cent (1, K, d) -> (changed, searched)."""
        with _threads(1 if self.x.device.type == "cpu" else None):
            if self.cent is None:
                return self._first(cent[0])
            return self._update(cent[0])

    def _first(self, cent: torch.Tensor) -> tuple[int, int]:
        x, n, k = self.x, self.n, cent.shape[0]
        with _threads(self.gemm_threads):
            codes, d1, d2 = Top2Search(x, self.x_sq, cent).search(None)
        c_norm_max = float((cent * cent).sum(1).max().sqrt())
        self.slack = BOUND_EPS * (self.x_sq.sqrt() + c_norm_max) ** 2  # rounding slack, squared
        self.upper = (d1 + self.slack).clamp_min_(0.0).sqrt_()
        self.lower = (d2 - self.slack).clamp_min_(0.0).sqrt_()
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
        for s in range(0, n, 2048):
            sums.index_add_(0, codes[s : s + 2048], x[s : s + 2048].double())
        self.sums, self.counts = sums.unsqueeze(0), torch.bincount(codes, minlength=k).double().unsqueeze(0)
        self.codes, self.cent, self.block = codes, cent, block_rows(x.unsqueeze(0), k)
        return n, n

    def _update(self, new: torch.Tensor) -> tuple[int, int]:
        x, n, k = self.x, self.n, new.shape[0]
        codes, upper, lower, slack = self.codes, self.upper, self.lower, self.slack
        delta = (new - self.cent).pow(2).sum(1).sqrt()
        cent = self.cent = new
        # ---- choose B: the m largest movers, measured exactly ------------------------------
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
            buf = torch.empty(min(self.block, n), best_m, dtype=torch.float32, device=x.device)
            with _threads(self.gemm_threads):
                for s in range(0, n, self.block):
                    e = min(n, s + self.block)
                    dist = buf[: e - s]
                    torch.addmm(cb_sq, x[s:e], cb.t(), alpha=-2.0, out=dist)
                    dist += self.x_sq[s:e].unsqueeze(1)
                    own = pos[codes[s:e]]
                    rows = (own >= 0).nonzero().squeeze(1)
                    if rows.numel():
                        o = own[rows]
                        upper[s + rows] = (dist[rows, o] + slack[s + rows]).clamp_min_(0.0).sqrt_()
                        dist[rows, o] = float("inf")
                    near = (dist.amin(1) - slack[s:e]).clamp_min_(0.0).sqrt_()
                    torch.minimum(lower[s:e], near, out=lower[s:e])
        # ---- rows that may change: tighten, then full search -------------------------------
        cand = (upper > lower).nonzero().squeeze(1)
        need = cand[:0]
        if cand.numel():
            exact = _sqdist_rows(x, cand, cent, codes[cand]).sqrt_().mul_(1 + BOUND_EPS)
            upper[cand] = exact
            need = cand[exact > lower[cand]]
        if need.numel() == 0:
            return 0, 0
        with _threads(self.gemm_threads if need.numel() >= 1024 else None):
            new_codes, nd1, nd2 = Top2Search(x, self.x_sq, cent).search(need)
        sl = slack[need]
        upper[need] = (nd1 + sl).clamp_min_(0.0).sqrt_()
        lower[need] = (nd2 - sl).clamp_min_(0.0).sqrt_()
        old_codes = codes[need]
        moved = (new_codes != old_codes).nonzero().squeeze(1)
        if moved.numel():
            xm = x.index_select(0, need[moved]).double()
            sums, counts = self.sums[0], self.counts[0]
            sums.index_add_(0, old_codes[moved], xm, alpha=-1.0)
            sums.index_add_(0, new_codes[moved], xm)
            counts -= torch.bincount(old_codes[moved], minlength=k).double()
            counts += torch.bincount(new_codes[moved], minlength=k).double()
            codes[need] = new_codes
        return int(moved.numel()), int(need.numel())

    def farthest(self, gi: int, m: int) -> torch.Tensor:
        """The m rows farthest from their centroid (exact distances), farthest first: (m, d)."""
        far = self.final_dist()[0].topk(min(m, self.n)).indices
        return self.x.index_select(0, far)

    def final_dist(self) -> torch.Tensor:
        """Squared distances (1, n) of the rows to their centroid, as ``||x - c||^2`` directly."""
        return _sqdist_rows(self.x, None, self.cent, self.codes).unsqueeze(0)


def lloyd_loop(
    passes: _PlainPasses | _BoundedPasses, cent: torch.Tensor, *, max_iter: int, tol: float,
    stats: list[LloydStats] | None = None, final_assign: bool = True,
) -> tuple[torch.Tensor, int]:
    """The Lloyd loop (Lloyd, 1982) over assignment ``passes`` from cent (G, K, d).

    Each iteration moves the centroids to the means of their clusters, re-seeds the empty
    clusters (:func:`_reseed_empty`) and assigns the rows to the new centroids. It stops when
    the relative change of the objective falls under ``tol`` (largest over the G problems)
    or after ``max_iter`` iterations; the last assignment (skipped with ``final_assign=False``)
    leaves in ``passes`` the codes of the returned centroids. Returns (centroids,
    iterations); ``stats`` receives one :class:`LloydStats` per iteration."""
    t0 = time.perf_counter()
    passes.assign(cent)
    prev = None
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        cent, obj = _means(passes.sums, passes.counts, passes.sq_total, passes.n, cent.dtype)
        reseeded = _reseed_empty(cent, passes.counts, passes)
        done = it == max_iter or (
            prev is not None and float(((prev - obj) / prev.clamp_min(1e-30)).abs().max()) < tol
        )
        prev = obj
        changed = searched = 0
        if final_assign or not done:
            changed, searched = passes.assign(cent)
        rec = LloydStats(it, obj.tolist(), reseeded, changed, searched, time.perf_counter() - t0)
        t0 = time.perf_counter()
        logger.debug("pass %d: objective %s, %d re-seeded, %d of %d rows searched, %d changed",
                     it, [f"{v:.6g}" for v in rec.objective], reseeded, searched,
                     passes.n * cent.shape[0], changed)
        if stats is not None:
            stats.append(rec)
        if done:
            break
    return cent, it


def _merge_stats(per_problem: list[list[LloydStats]]) -> list[LloydStats]:
    """One record per iteration from the records of problems run one by one (a problem that
    stopped earlier keeps its last objective)."""
    out = []
    for i in range(max(len(h) for h in per_problem)):
        recs = [h[i] for h in per_problem if i < len(h)]
        out.append(LloydStats(
            i + 1, [h[min(i, len(h) - 1)].objective[0] for h in per_problem],
            sum(r.reseeded for r in recs), sum(r.changed for r in recs),
            sum(r.searched for r in recs), sum(r.seconds for r in recs),
        ))
    return out


def _lloyd(
    x: torch.Tensor, cent: torch.Tensor, *, max_iter: int, tol: float,
    stats: list[LloydStats] | None, bounds: bool, rows: int | None = None,
    final_assign: bool = True,
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """:func:`lloyd_loop` on x (G, N, d) from cent (G, K, d): bounded passes per problem, or
    plain batched passes (streamed in chunks of ``rows`` when given). Returns (centroids,
    passes, squared distances (G, N) of the rows to their final centroids, or None without
    ``final_assign``)."""
    if not bounds:
        passes = _PlainPasses(x, cent.device, rows)
        cent, it = lloyd_loop(passes, cent, max_iter=max_iter, tol=tol, stats=stats,
                              final_assign=final_assign)
        return cent, it, passes.final_dist() if final_assign else None
    threads = torch.get_num_threads() if x.device.type == "cpu" else None
    outs, dists, hists = [], [], []
    for gi in range(x.shape[0]):
        passes = _BoundedPasses(x[gi], threads)
        h: list[LloydStats] = []
        c, _ = lloyd_loop(passes, cent[gi : gi + 1], max_iter=max_iter, tol=tol, stats=h,
                          final_assign=final_assign)
        outs.append(c[0])
        hists.append(h)
        if final_assign:
            dists.append(passes.final_dist()[0])
    merged = _merge_stats(hists)
    if stats is not None:
        stats.extend(merged)
    return torch.stack(outs), len(merged), torch.stack(dists) if final_assign else None


@torch.no_grad()
def _initial_centroids(
    x: torch.Tensor, k: int, init: str | torch.Tensor, init_frames: int | None,
    warm_frames: int | None, gen: torch.Generator, device: torch.device,
) -> tuple[torch.Tensor, int]:
    """Initial centroids (G, K, d) on ``device`` for :func:`fit_kmeans` and the rows of its
    warm start (0: none): ``init`` as given, or k-means++ seeds on a subset of x (G, N, d)."""
    g, n, d = x.shape
    if isinstance(init, torch.Tensor):
        return init.reshape(g, k, d).to(device, x.dtype).clone(), 0
    if init != "k-means++":
        raise ValueError(f"k-means: unknown init {init!r} (use 'k-means++' or a tensor)")
    n0 = min(n, init_frames or max(INIT_FRAMES_PER_CENTROID * k, 1024))
    cent = kmeans_plusplus(subsample(x, n0, gen, dim=1).to(device), k, gen, proj_dim=SEED_PROJ_DIM)
    return cent, WARM_FRAMES_PER_CENTROID * k if warm_frames is None else warm_frames


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
    stats: list[LloydStats] | None = None,
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
    ``stats`` (a list that receives a :class:`LloydStats` per full-data pass: objective per
    problem, non-increasing, re-seeded clusters, changed assignments, time), ``device``
    (where to compute; default x's), ``memory_budget`` (bytes: when x is larger, it stays in
    host memory and the full-data passes stream it to the device in chunks, see
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
    cent, warm = _initial_centroids(x, k, init, init_frames, warm_frames, gen, device)
    if bounds is None:
        bounds = device.type == "cpu" and rows is None
    elif bounds and rows is not None:
        raise ValueError("k-means: bounds=True needs the data in memory (no memory_budget)")
    if 0 < warm < n and max_iter > 1:
        cent, w_it, _ = _lloyd(subsample(x, warm, gen, dim=1).to(device), cent, max_iter=WARM_ITERS,
                               tol=max(tol, WARM_TOL), stats=None, bounds=bounds,
                               final_assign=False)
        logger.debug("warm start: %d passes on %d rows", w_it, warm)
    stats = [] if stats is None else stats
    first = len(stats)
    cent, it, dist = _lloyd(x, cent, max_iter=max_iter, tol=tol, stats=stats, bounds=bounds,
                            rows=rows)
    inertia = dist.double().mean(1).float()
    run = stats[first:]
    logger.info("k-means K=%d on %d x %d rows: %d passes, %d clusters re-seeded, %d rows "
                "searched, %.1f s; inertia %s", k, g, n, it, sum(r.reseeded for r in run),
                sum(r.searched for r in run), sum(r.seconds for r in run),
                [round(v, 6) for v in inertia.tolist()])
    if squeeze:
        return cent[0], inertia[0]
    return cent, inertia
