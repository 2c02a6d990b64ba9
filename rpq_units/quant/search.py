"""Nearest-codeword search: the one search every quantizer calls.

Squared Euclidean distance ``||x - c||^2 = ||x||^2 - 2 x c^T + ||c||^2`` from one matrix product
per row block, so the ``(N, K)`` score matrix never exists in memory as a whole:

* :func:`assign`: nearest codeword of each row for ``G`` problems at once,
  ``x: (G, N, d)``, ``codebooks: (G, K, d)`` -> codes ``(G, N)``, squared distances ``(G, N)``.
  On CPU an fp32 product; on CUDA a certified reduced-precision search whose codes equal
  those of an exact search: :func:`assign_fused` with the kernels of
  :mod:`rpq_units.quant.search_triton` (fp16 products with fp32 accumulation by cuBLAS, a Triton
  scan keeping the top-3 per row; :data:`FUSED_KERNEL`) when triton is importable, else
  :func:`assign_lowp` (fp16 product per row block in torch).
  Repeated searches of the same rows (Lloyd passes) prepare them once
  (:func:`prepare_rows`: centred, scaled, rounded) and pass them as ``prepared``.
* :class:`Top2Search`: nearest and second-nearest distances (Hamerly's bounds in
  :mod:`rpq_units.quant.lloyd`).
* :func:`topk`: the ``k`` nearest codewords of each row (beam searches of RVQ and AVQ).
* :func:`assign_cosine`: largest cosine similarity, i.e. nearest codeword after normalising
  rows and codewords (BEST-RQ's random-projection quantizer).
* :func:`sum_codewords`: sum of one codeword per codebook (RVQ / AVQ decoding).
* :func:`cluster_sums`: per-cluster sums of rows for the Lloyd update (on CUDA a sorted
  segment sum, no atomics and no ``(N, K)`` one-hot matrix).

Certification (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, ch. 3: the error
of a dot product of rounded inputs is at most ``(2u + d u_acc) ||a|| ||b||``): rows and
codewords are centred on the codeword mean, scaled to at most unit norm and rounded to
fp16/bf16; a candidate is accepted when the gap to the runner-up exceeds twice the proven
error bound, the two best are rescored exactly when it does not, and the remaining rows are
searched again in fp32. The codes are those of an exact search (fp32 ties aside).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: rows per block in :func:`assign` (CPU): the (block, K) scores stay cache-sized.
CPU_BLOCK_ROWS = 4096
#: relative slack on squared distances from the ``||x||^2 - 2xc + ||c||^2`` expansion in fp32.
BOUND_EPS = 1e-5
#: on CUDA, :func:`assign` uses a certified reduced-precision search ...
GPU_LOWP = True
#: ... with the fused Triton kernel when triton imports (False: :func:`assign_lowp` in torch) ...
GPU_FUSED = True
#: ... for codebooks of at least this many centroids. Below it the fixed per-row work of the
#: torch certified search outweighs the cheaper product: on one H100 with N = 2M, D = 1024 it
#: was slower than the fp32 product at K = 500 and faster at K = 1000 and K = 2000
#: (bench/RESULTS.md). The fused kernel has no such fixed cost and is used for every K.
LOWP_MIN_K = 768
#: error of one reduced-precision dot product, per unit ``||x|| ||c||``: rounding of both
#: inputs and of the output (3u) plus fp32 accumulation, times a safety margin of 4/3.
LOWP_EPS = {torch.float16: 4 * 2.0**-11, torch.bfloat16: 4 * 2.0**-8}
#: error of fp32 accumulation per product term, per unit ``||x^|| ||c^||`` (tensor cores may
#: truncate instead of rounding: 2^-23, not 2^-24)
ACC_EPS = 2.0**-23
#: safety factor on the per-row error bound of :func:`assign_fused`
FUSED_MARGIN = 1.25
#: :func:`assign` certifies the fused search's codes (tiers 2 and 3). False: tier 1 only, the
#: best approximate codeword of every row ("uncertified fast mode"; not exact, see
#: bench/RESULTS.md for the measured share of codes equal to fp32).
GPU_CERTIFY = True
#: products of the fused search: "gemm" (cuBLAS fp32-output GEMM per row block + a Triton
#: top-3 scan, :func:`search_triton.top2_gemm`; correct and the fastest on one H200) or
#: "triton" (one fused kernel, :func:`search_triton.top2`; its autotuned tile gave wrong
#: codes on an H200, see :func:`search_triton.top2`)
FUSED_KERNEL = "gemm"
#: absolute error per feature dimension from inputs that fall in the subnormal range
#: (fp16 only: bf16 has the fp32 exponent range), for inputs scaled to |x| <= 1, |c| <= 2.
LOWP_TINY = {torch.float16: 2.0**-23, torch.bfloat16: 0.0}


#: on CPU every matrix product of the searches has at least this many rows (zero rows are
#: appended to smaller blocks), so that the result for a row does not depend on the rows
#: around it: MKL computes products of fewer than 12 rows (4 and 8 aside) by another method
#: whose last bits differ (measured on an AMD EPYC, MKL 2024.2: rows 1-3, 5-7, 9-11), while
#: from 12 rows on each row's result is the same for any block size and offset. This is what
#: makes units of utterances quantized together equal to units quantized one at a time
#: (tests/quant/test_search.py::test_search_rows_do_not_depend_on_the_block).
MIN_GEMM_ROWS = 16


def pad_rows(x: torch.Tensor) -> torch.Tensor:
    """x (..., n, d) with zero rows appended up to :data:`MIN_GEMM_ROWS` when it is on CPU and
    has fewer (else x itself); the caller keeps the first n rows of the product."""
    n = x.shape[-2]
    if x.device.type != "cpu" or n >= MIN_GEMM_ROWS:
        return x
    return torch.cat([x, x.new_zeros(*x.shape[:-2], MIN_GEMM_ROWS - n, x.shape[-1])], dim=-2)


def _chunk_rows(n: int, k: int, budget: int = 1 << 26) -> int:
    """Rows per chunk so a (chunk, K) score block stays under ``budget`` floats."""
    return max(1, min(n, budget // max(k, 1)))


def block_rows(x: torch.Tensor, k: int) -> int:
    """Rows per block of a search of x (G, N, d) against ``k`` codewords in all."""
    if x.device.type == "cpu":
        return max(1, min(CPU_BLOCK_ROWS, (1 << 22) // max(k, 1) * 4))
    return _chunk_rows(x.shape[-2], k * x.shape[0])


def fused_available(device: torch.device) -> bool:
    """Whether :func:`assign_fused` can run on ``device`` (CUDA and triton importable)."""
    if device.type != "cuda" or not GPU_FUSED:
        return False
    try:
        from rpq_units.quant import search_triton  # noqa: F401
    except ImportError:
        return False
    return True


def uses_fused(device: torch.device) -> bool:
    """Whether :func:`assign` on ``device`` runs :func:`assign_fused`."""
    return GPU_LOWP and not torch.backends.cuda.matmul.allow_tf32 and fused_available(device)


@torch.no_grad()
def assign(
    x: torch.Tensor,
    centroids: torch.Tensor,
    *,
    prepared: PreparedRows | None = None,
    need_dist: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Nearest centroid per row.

    x: (G, N, d), centroids: (G, K, d) -> codes (G, N) int64, squared distances (G, N) float32.
    Works on row blocks (no (N, K) matrix); ties go to the lowest index. On CUDA devices the
    certified reduced-precision search is used (same codes): :func:`assign_fused` when triton
    imports, else :func:`assign_lowp` for K >= :data:`LOWP_MIN_K` (``GPU_LOWP = False``
    forces the plain fp32 product). Where the caller allowed TF32
    (``torch.backends.cuda.matmul.allow_tf32 = True``) the plain product runs in TF32 instead:
    not exact (99.97 % of codes equal to fp32 in bench/RESULTS.md).

    ``prepared``: x prepared by :func:`prepare_rows` (used by the fused search, ignored by the
    others). ``need_dist=False`` lets the fused search skip the distances (returned as None).
    """
    global GPU_FUSED
    if uses_fused(x.device):
        try:
            return assign_fused(x, centroids, prepared=prepared, need_dist=need_dist,
                                certify=GPU_CERTIFY)
        except Exception:  # e.g. a GPU or driver the Triton build cannot compile for
            logger.warning("fused Triton search failed; using the torch certified search "
                           "from now on", exc_info=True)
            GPU_FUSED = False
    if x.is_cuda and GPU_LOWP and not torch.backends.cuda.matmul.allow_tf32 \
            and centroids.shape[1] >= LOWP_MIN_K:
        return assign_lowp(x, centroids)
    return assign_exact(x, centroids)


@torch.no_grad()
def assign_exact(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`assign` with the plain fp32 product on row blocks, on any device."""
    g, n, d = x.shape
    k = centroids.shape[1]
    c_sq = (centroids * centroids).sum(-1).unsqueeze(1)  # (G, 1, K)
    c_t = centroids.transpose(1, 2)  # (G, d, K)
    codes = torch.empty(g, n, dtype=torch.long, device=x.device)
    dist = torch.empty(g, n, dtype=torch.float32, device=x.device)
    step = block_rows(x, k * g)
    buf = torch.empty(g, min(step, n), k, dtype=torch.float32, device=x.device)
    for s in range(0, n, step):
        xc = x[:, s : s + step]
        b = xc.shape[1]
        xp = pad_rows(xc)
        if xp is xc:
            scores = buf[:, :b]
            torch.baddbmm(c_sq, xc, c_t, alpha=-2.0, out=scores)
        else:
            scores = torch.baddbmm(c_sq, xp, c_t, alpha=-2.0)[:, :b]
        best, idx = scores.min(dim=2)
        codes[:, s : s + step] = idx
        dist[:, s : s + step] = (best + (xc * xc).sum(-1)).clamp_min_(0.0)
    return codes, dist


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


def _fallback_rows(xc: torch.Tensor, cc: torch.Tensor, cc_sq: torch.Tensor) -> torch.Tensor:
    """Tier 3 of the certified searches: fp32 product on the centred rows xc (r, d) against the
    centred codewords cc (K, d), cc_sq (K,) -> codes (r,)."""
    out = torch.empty(xc.shape[0], dtype=torch.long, device=xc.device)
    step = _chunk_rows(xc.shape[0], cc.shape[0])
    for s in range(0, xc.shape[0], step):
        out[s : s + step] = torch.addmm(cc_sq, xc[s : s + step], cc.t(), alpha=-2.0).argmin(dim=1)
    return out


def _rescore(
    xu: torch.Tensor, cand: torch.Tensor, cc: torch.Tensor, cc_sq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tier 2: exact fp32 scores ``||c'||^2 - 2 x' c'`` (elementwise, never TF32) of the
    candidates cand (u, t) of the centred rows xu (u, d) -> (best score (u,), best code (u,)).
    Equal scores go to the lowest index, as in the fp32 search."""
    cand = cand.sort(dim=1).values
    exact = cc_sq[cand] - 2.0 * (cc[cand] * xu.unsqueeze(1)).sum(-1)
    best, j = exact.min(dim=1)
    return best, cand.gather(1, j.unsqueeze(1)).squeeze(1)


def _tiers_2_3(
    xc: torch.Tensor, nrm: torch.Tensor, code: torch.Tensor, unsure: torch.Tensor,
    cand: torch.Tensor, limit: torch.Tensor, cc: torch.Tensor, cc_sq: torch.Tensor,
) -> int:
    """Tiers 2 and 3 of the certified searches, in place on ``code`` (b,): the ``unsure`` rows
    (u,) of the centred block xc (b, d) (norms nrm (b,)) take the best of their candidates
    cand (u, t) rescored exactly, kept when its score is below ``limit`` (u,) (the next
    approximate score minus its error bound, in score units); the others are searched again
    in fp32 on the centred rows (less cancellation). Returns how many were searched again."""
    best, pick = _rescore(xc.index_select(0, unsure), cand, cc, cc_sq)
    code[unsure] = pick
    nrm_u = nrm.index_select(0, unsure)
    slack = BOUND_EPS * (nrm_u * nrm_u + cc_sq.max())
    bad = unsure[~(best + slack < limit)]
    if bad.numel():
        code[bad] = _fallback_rows(xc.index_select(0, bad), cc, cc_sq)
    return int(bad.numel())


def _store(codes: torch.Tensor, code: torch.Tensor, xc: torch.Tensor, cc: torch.Tensor) -> torch.Tensor:
    """Write ``code`` into ``codes``; the squared distances ``||x' - c'_code||^2`` computed
    directly (xc, the centred rows, is overwritten)."""
    codes.copy_(code)
    return torch.linalg.vector_norm(xc.sub_(cc.index_select(0, code)), dim=1).square_()


def _count(stats: dict | None, rows: int, rescored: int, fallback: int) -> None:
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + rows
        stats["rescored"] = stats.get("rescored", 0) + rescored
        stats["fallback"] = stats.get("fallback", 0) + fallback


@torch.no_grad()
def _candidates(
    sc: torch.Tensor, unsure: torch.Tensor, i1: torch.Tensor, i2: torch.Tensor, v2: torch.Tensor,
    t: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``t`` best approximate centroids ``(U, t)`` of the ``unsure`` rows of the scores
    ``sc`` (b, K; the best ``i1`` already set to inf, ``i2`` / ``v2`` the second best) and the
    approximate score after them ``(U,)``."""
    sub = sc.index_select(0, unsure)
    cand = [i1.index_select(0, unsure), i2.index_select(0, unsure)]
    nxt = v2.index_select(0, unsure)
    for _ in range(t - 1):
        sub.scatter_(1, cand[-1].unsqueeze(1), float("inf"))
        nxt, i_next = sub.min(dim=1)
        cand.append(i_next)
    return torch.stack(cand[:t], dim=1), nxt


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
    step = max(1, min(n, block_rows or (1 << 18 if x.is_cuda else 4096)))
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
                    cand, nxt = _candidates(sc, unsure, i1, i2, v2, t)
                    code = i1.clone()
                    limit = (nxt.float() - err.index_select(0, unsure)) * (a * beta)
                    fallback += _tiers_2_3(xc, nrm, code, unsure, cand, limit, cc, cc_sq)
                dist[gi, s:e] = _store(codes[gi, s:e], code, xc, cc)
    _count(stats, g * n, rescored, fallback)
    return codes, dist


@dataclass
class PreparedRows:
    """Rows prepared once for repeated fused searches (:func:`prepare_rows`).

    ``mu`` (G, d) float32: the centre; ``xh`` (G, N, dp) ``dtype``: the centred rows divided by
    their norms and rounded (dp: d padded for the kernel, zero columns); ``nrm`` (G, N): the
    norms ``||x - mu||``; ``res`` (G, N): the norms of the rounding residuals."""

    mu: torch.Tensor
    xh: torch.Tensor
    nrm: torch.Tensor
    res: torch.Tensor
    dtype: torch.dtype


@torch.no_grad()
def prepare_rows(
    x: torch.Tensor, *, dtype: torch.dtype = torch.float16, centre: torch.Tensor | None = None
) -> PreparedRows:
    """Prepare x (G, N, d) float32 for :func:`assign_fused` (``prepared=``): centred on
    ``centre`` (G, d) (default: the mean of the rows, which does not change between Lloyd
    passes), divided by the row norms, rounded to ``dtype``, in one pass of a Triton kernel.
    Costs ``N dp`` elements of ``dtype`` on x's device."""
    from rpq_units.quant import search_triton

    g, n, d = x.shape
    mu = (x.mean(1) if centre is None else centre).float().reshape(g, d)
    dp = search_triton.padded(1, d)[1]
    xh = torch.empty(g, n, dp, dtype=dtype, device=x.device)
    nrm = torch.empty(g, n, dtype=torch.float32, device=x.device)
    res = torch.empty(g, n, dtype=torch.float32, device=x.device)
    for gi in range(g):
        _, nrm[gi], res[gi] = search_triton.prepare(x[gi], mu[gi], dtype, dp, out=xh[gi])
    return PreparedRows(mu, xh, nrm, res, dtype)


def fused_codebook(
    c: torch.Tensor, mu: torch.Tensor, dtype: torch.dtype, kp: int, dp: int
) -> tuple[torch.Tensor, ...]:
    """Codebook side of :func:`assign_fused`: c (K, d) float32, centre mu (d,) -> centred
    codewords cc (K, d), their squared norms cc_sq (K,), ``beta = max ||cc_j||`` (0-dim),
    the rounded unit-scale codebook ch (kp, dp) ``dtype`` padded with zeros, the kernel's
    norms (kp,) padded with +inf, and ``rho``, the largest rounding residual norm (0-dim)."""
    k, d = c.shape
    cc = c - mu
    cc_sq = (cc * cc).sum(1)
    beta = cc_sq.max().sqrt().clamp_min(1e-30)
    cn = cc / beta
    ch = torch.zeros(kp, dp, dtype=dtype, device=c.device)
    ch[:k, :d] = cn.to(dtype)
    rho = torch.linalg.vector_norm(cn - ch[:k, :d].float(), dim=1).max()
    cnp = torch.full((kp,), float("inf"), device=c.device)
    cnp[:k] = cc_sq
    return cc, cc_sq, beta, ch, cnp, rho


def fused_error(
    scale: torch.Tensor, res: torch.Tensor, rho: torch.Tensor, cmax: torch.Tensor, dp: int
) -> torch.Tensor:
    """Bound on the error of the fused kernel's scores (see :func:`assign_fused`): scale
    ``2 s_i beta`` (n,), residual norms res (n,), rho and ``cmax = beta^2`` (0-dim), padded
    dimension dp -> (n,)."""
    u_acc = dp * ACC_EPS
    return (scale * ((res + rho + res * rho) + u_acc * (1.0 + res) * (1.0 + rho)) * FUSED_MARGIN
            + 2.0**-20 * cmax + 2.0**-22 * scale)


class _Timer:
    """Wall time per phase into ``stats["t_<phase>"]`` when ``stats["timing"]`` is true (with a
    device synchronisation at each phase end, so only for measurements)."""

    def __init__(self, stats: dict | None, device: torch.device):
        self.stats = stats if stats is not None and stats.get("timing") else None
        self.cuda = device.type == "cuda"
        self.t = self._now() if self.stats is not None else 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def __call__(self, phase: str) -> None:
        if self.stats is not None:
            now = self._now()
            key = f"t_{phase}"
            self.stats[key] = self.stats.get(key, 0.0) + now - self.t
            self.t = now


@torch.no_grad()
def assign_fused(
    x: torch.Tensor,
    centroids: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float16,
    block_rows: int | None = None,
    stats: dict | None = None,
    prepared: PreparedRows | None = None,
    certify: bool = True,
    need_dist: bool = True,
    kernel: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`assign` with the fused Triton kernel (:mod:`rpq_units.quant.search_triton`), certified.

    Rows and codewords are centred on ``mu`` (the centre of ``prepared``, else the codeword
    mean); row ``i`` is divided by its own norm ``s_i = ||x'_i||`` and the codewords by
    ``beta = max_j ||c'_j||`` before rounding to ``dtype`` (no overflow; unit vectors
    ``x^_i``, ``c^_j`` of norm <= 1 up to the rounding residuals ``r_i`` = ``||x^_i - x'_i /
    s_i||`` and ``rho = max_j ||c^_j - c'_j / beta||``, both measured). The kernel forms
    ``score_ij = ||c'_j||^2 - 2 s_i beta <x^_i, c^_j>`` tile by tile (fp32 accumulation) and
    keeps per row the two best codewords and the third-best score. By Cauchy-Schwarz the
    error of a score is at most ``E_i = 2 s_i beta m (r_i + rho + r_i rho + dp a (1 + r_i)(1 +
    rho)) + 2^-20 ||c'||^2_max + 2^-22 2 s_i beta`` (rounded inputs, fp32 accumulation with
    ``a`` = :data:`ACC_EPS` over ``dp`` terms, margin ``m`` = :data:`FUSED_MARGIN`, fp32
    norms and epilogue). Tier 1 accepts the best when the runner-up is more than ``2 E_i``
    above it; tier 2 computes the exact distances to the two best (:func:`search_triton.
    pair_dist`) and accepts the nearer when its score is below the third-best score minus
    ``E_i``; tier 3 searches the remaining rows in fp32. ``certify=False`` stops after tier
    1 (not exact). Same contract as :func:`assign` (``need_dist=False``: distances None);
    ``stats`` as in :func:`assign_lowp`, plus with ``stats["timing"] = True`` the seconds
    per phase ``t_prep``, ``t_kernel``, ``t_rescore``, ``t_fallback``, ``t_dist``.
    ``kernel``: "triton" or "gemm" (default :data:`FUSED_KERNEL`). Runs on CPU under
    ``TRITON_INTERPRET=1`` (tests).
    """
    from rpq_units.quant import search_triton as st

    top2 = _fused_top2(kernel or FUSED_KERNEL)
    g, n, d = x.shape
    k = centroids.shape[1]
    if prepared is not None:
        dtype = prepared.dtype
    kp, dp = st.padded(k, d)
    step = max(1, n) if prepared is not None else _fused_block_rows(x, dp, dtype, block_rows)
    codes = torch.empty(g, n, dtype=torch.long, device=x.device)
    dist = torch.empty(g, n, dtype=torch.float32, device=x.device) if need_dist else None
    rescored = fallback = 0
    timer = _Timer(stats, x.device)
    buf = None
    for gi in range(g):
        c = centroids[gi].float()
        mu = prepared.mu[gi] if prepared is not None else c.mean(0)
        cc, cc_sq, beta, ch, cnp, rho = fused_codebook(c, mu, dtype, kp, dp)
        cmax = beta.square()
        for s in range(0, n, step):
            e = min(n, s + step)
            xb = x[gi, s:e]
            if prepared is not None:
                xh, nrm, res = prepared.xh[gi, s:e], prepared.nrm[gi, s:e], prepared.res[gi, s:e]
            else:
                if buf is None:
                    buf = torch.empty(min(step, n), dp, dtype=dtype, device=x.device)
                xh, nrm, res = st.prepare(xb, mu, dtype, dp, out=buf[: e - s])
            timer("prep")
            scale = 2.0 * beta * nrm  # (b,)
            i1, i2, v1, v2, v3 = top2(xh, ch, cnp, scale)
            timer("kernel")
            code = i1.long()
            if certify:
                err = fused_error(scale, res, rho, cmax, dp)
                unsure = (v2 - v1 <= 2.0 * err).nonzero().squeeze(1)
                rescored += int(unsure.numel())
                fallback += _fused_tiers_2_3(xb, unsure, code, (i1, i2, v3), err, nrm, c,
                                             (mu, cc, cc_sq, cmax), timer)
            codes[gi, s:e] = code
            if dist is not None:
                dist[gi, s:e] = st.pair_dist(xb, None, c, code.unsqueeze(1)).squeeze(1)
                timer("dist")
    _count(stats, g * n, rescored, fallback)
    return codes, dist


def _fused_top2(kernel: str) -> Callable[..., Any]:
    """The top-2 search of :func:`assign_fused`'s ``kernel``: "triton" or "gemm"."""
    from rpq_units.quant import search_triton as st

    if kernel not in ("triton", "gemm"):
        raise ValueError(f"assign_fused: unknown kernel {kernel!r} (triton or gemm)")
    return st.top2 if kernel == "triton" else st.top2_gemm


def _fused_block_rows(
    x: torch.Tensor, dp: int, dtype: torch.dtype, block_rows: int | None
) -> int:
    """Rows per block of :func:`assign_fused`: ``block_rows``, else on CUDA at least 256 MiB
    of rounded rows (and at least TUNE_MIN_ROWS rows: the kernel's autotuned tiles), on CPU
    4096."""
    from rpq_units.quant import search_triton as st

    n = x.shape[1]
    elem = torch.finfo(dtype).bits // 8
    default = max(st.TUNE_MIN_ROWS, (1 << 28) // (dp * elem)) if x.is_cuda else 4096
    return max(1, min(n, block_rows or default))


def _fused_tiers_2_3(
    xb: torch.Tensor, unsure: torch.Tensor, code: torch.Tensor,
    top: tuple[torch.Tensor, torch.Tensor, torch.Tensor], err: torch.Tensor, nrm: torch.Tensor,
    c: torch.Tensor, book: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    timer: _Timer,
) -> int:
    """Tiers 2 and 3 of :func:`assign_fused` for the ``unsure`` rows of the block ``xb``:
    exact distances to the two best (``top``: i1, i2 and the third-best score v3), accepted
    below the third-best score minus ``err``; the others searched in fp32 (``book``: mu, the
    centred codewords cc, their squared norms and the largest). Sets ``code`` in place;
    returns the number of rows of tier 3."""
    from rpq_units.quant import search_triton as st

    if not unsure.numel():
        return 0
    i1, i2, v3 = top
    mu, cc, cc_sq, cmax = book
    cand = torch.stack([i1.index_select(0, unsure), i2.index_select(0, unsure)], 1).long()
    pd = st.pair_dist(xb, unsure, c, cand)  # (u, 2) exact squared distances
    second = (pd[:, 1] < pd[:, 0]) | ((pd[:, 1] == pd[:, 0]) & (cand[:, 1] < cand[:, 0]))
    pick = second.long().unsqueeze(1)
    best = pd.gather(1, pick).squeeze(1)
    code[unsure] = cand.gather(1, pick).squeeze(1)
    nu2 = nrm.index_select(0, unsure).square()
    slack = 2.0**-18 * (best + nu2 + cmax)
    limit = v3.index_select(0, unsure) - err.index_select(0, unsure)
    bad = unsure[~(best - nu2 + slack < limit)]
    timer("rescore")
    if not bad.numel():
        return 0
    code[bad] = _fallback_rows(xb.index_select(0, bad) - mu, cc, cc_sq)
    timer("fallback")
    return int(bad.numel())


class Top2Search:
    """Exact nearest and second-nearest centroid search for one problem, on row blocks.

    ``search(rows)`` -> codes, ``d1`` (squared distance to the nearest centroid) and ``d2``
    (squared distance to the second nearest), for ``x[rows]`` (all rows when ``rows`` is
    None), from the scores ``||c||^2 - 2 x c^T`` of one fp32 product per block; the rows are
    gathered block by block, never copied as a whole. x (n, d), x_sq (n,), cent (K, d).
    """

    def __init__(self, x: torch.Tensor, x_sq: torch.Tensor, cent: torch.Tensor):
        self.x, self.x_sq = x, x_sq
        self.c_sq = (cent * cent).sum(1)
        self.c_t = cent.t()
        self.block = block_rows(x.unsqueeze(0), cent.shape[0])

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


@torch.no_grad()
def topk(
    x: torch.Tensor, codebook: torch.Tensor, k: int, x_sq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest codewords of every row, nearest first.

    x: (N, d), codebook: (K, d), x_sq: (N,) the ``||x||^2`` term to use (default computed)
    -> squared distances (N, k) float32 and indices (N, k) int64 (k <= K). Exact fp32 product
    on row blocks (a beam search needs the scores of several candidates, not a certificate).
    """
    n = x.shape[0]
    kk = codebook.shape[0]
    if x_sq is None:
        x_sq = (x * x).sum(1)
    c_sq = (codebook * codebook).sum(1)
    vals = torch.empty(n, k, dtype=torch.float32, device=x.device)
    idx = torch.empty(n, k, dtype=torch.long, device=x.device)
    step = block_rows(x.unsqueeze(0), kk)
    for s in range(0, n, step):
        xb = x[s : s + step]
        sc = torch.addmm(c_sq, pad_rows(xb), codebook.t(), alpha=-2.0)[: xb.shape[0]]
        sc += x_sq[s : s + step].unsqueeze(1)
        v, i = sc.topk(k, dim=1, largest=False)
        vals[s : s + step], idx[s : s + step] = v, i
    return vals, idx


@torch.no_grad()
def assign_cosine(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Codeword of largest cosine similarity: x (N, d), codebook (K, d) -> codes (N,) int64.

    The nearest codeword after normalising rows and codewords to unit length
    (``||u - v||^2 = 2 - 2 cos``), found by :func:`assign`.
    """
    y = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = codebook / codebook.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return assign(y.unsqueeze(0), u.unsqueeze(0))[0][0]


def sum_codewords(codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """codebooks: (M, K, D), codes: (N, M) -> (N, D) sum of the chosen codewords."""
    out = torch.zeros(codes.shape[0], codebooks.shape[2], device=codebooks.device)
    for m in range(codes.shape[1]):
        out += codebooks[m][codes[:, m]]
    return out


@torch.no_grad()
def cluster_sums(
    x: torch.Tensor, codes: torch.Tensor, k: int, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums and counts of rows: x (n, d), codes (n,) -> sums (K, d), counts (K,).

    The sums are added into ``out`` (K, d) when given (its dtype), else into zeros of x's
    dtype. On CUDA with triton the rows are summed per cluster in sorted order by
    :func:`rpq_units.quant.search_triton.segment_sum` (float64 accumulation, deterministic, no
    atomics, no temporary beyond the sort); elsewhere by ``index_add_`` in row order, so
    consecutive row chunks summed into the same ``out`` give the bits of one call.
    """
    counts = torch.bincount(codes, minlength=k)
    if out is None:
        out = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    if fused_available(x.device):
        from rpq_units.quant import search_triton

        out += search_triton.segment_sum(x, codes, counts, k).to(out.dtype)
    else:
        out.index_add_(0, codes, x if x.dtype == out.dtype else x.to(out.dtype))
    return out, counts
