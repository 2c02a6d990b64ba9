"""Triton kernels behind :mod:`rpq_units.quant.search` on CUDA (importing this module needs triton).

* :func:`prepare`: rows centred on a given centre, divided by their norm and rounded to
  fp16/bf16 in one pass, with the norm of the rounding residual of every row (the certificate
  of :func:`rpq_units.quant.search.assign_fused` uses it instead of a worst-case bound).
* :func:`top2`: fused nearest-codeword search (not the default: four of its tiles gave
  wrong codes on an H200 and are no longer used, see :data:`WRONG_TILES`). Per block of
  rows, the products with one tile of codewords at a time (fp16/bf16 inputs, fp32 accumulation, ``tl.dot``), the scores
  ``||c'_j||^2 - scale_i <x^_i, c^_j>`` formed in registers, and a running best, second best
  and third-best score per row: the ``(N, K)`` score matrix never exists. Tile sizes, warps
  and pipeline stages are chosen by ``triton.autotune`` per (K, d) on the first call of at least
  :data:`TUNE_MIN_ROWS` rows.
* :func:`top2_gemm`: the same results with the products from the vendor GEMM (cuBLAS, fp32
  output) and a Triton scan of the score block for the top-3 (an alternative measured by
  bench/gpu_run.py).
* :func:`pair_dist`: exact fp32 squared distances ``||x_r - c_j||^2`` of given rows to a few
  given codewords each (the rescoring of uncertain rows, and the distances of the winners),
  computed from the differences: no cancellation, no ``(N, d)`` temporary.
* :func:`segment_sum`: per-cluster row sums for the Lloyd update: rows visited in the order of
  their sorted codes, one program per (cluster, column block), float64 accumulation.
  Deterministic (no atomics) and reads every row once.

All run on CPU under ``TRITON_INTERPRET=1`` (the tests do), with the same results.
Written by hand: neither torch nor faiss offers an argmin fused into a low-precision GEMM with
the top-3 a certificate needs.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
#: the codeword count is padded to a multiple of this (padding scores are +inf), and ...
PAD_K = 256
#: ... the feature dimension to a multiple of this (zeros), so the kernel needs no masks there.
PAD_D = 64
#: in the interpreter (tests): few, large blocks, since it pays per block
INTERP_BLOCKS = {"BM": 64, "BN": 32, "BK": 32}


#: calls with fewer rows use :data:`SMALL_CONFIG` (BM, BN, BK, warps, stages) instead of the
#: autotuned tiles (a tuning run costs about a second per codebook shape)
TUNE_MIN_ROWS = 1 << 17
SMALL_CONFIG = (128, 128, 64, 4, 4)
#: tiles (BM, BN, BK, warps, stages) that compiled to wrong codes on an H200 (triton 3.6.0,
#: torch 2.11, fp16 and bf16 alike: 1.5 % of the codes right, best-score errors up to 6.7e3;
#: bench/gpu_run.py --parts tiles) and are therefore neither tried by the autotuner nor the
#: small-call tile. The kernel's logic does not depend on the tile: in Triton's interpreter
#: every one of them gives the exact top-3 with row, codeword and dimension tails and exact
#: ties (tests/quant/test_search.py::test_every_tile_exact_in_the_interpreter), so the fault is
#: in what these layouts compile to, not in the masks, tails or loops of the source. What
#: the wrong tiles share: one 16-row slice of the accumulator per warp (BM / warps along M =
#: 16: BM 128 on 8 warps, BM 64 on 4 or 8) where each of the right ones but (128, 256, 64, 8, 3)
#: has two (BM 128 on 4 warps, BM 256 on 8).
WRONG_TILES = ((128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (64, 256, 64, 8, 4),
               (128, 128, 64, 8, 4))


def padded(k: int, d: int) -> tuple[int, int]:
    """(K, d) padded for :func:`top2`."""
    if INTERPRET:
        return triton.cdiv(k, INTERP_BLOCKS["BN"]) * INTERP_BLOCKS["BN"], triton.cdiv(
            d, INTERP_BLOCKS["BK"]) * INTERP_BLOCKS["BK"]
    return triton.cdiv(k, PAD_K) * PAD_K, triton.cdiv(d, PAD_D) * PAD_D


@triton.jit
def _program_rows(n, B: tl.constexpr):
    """The B row indices of this program (the blocks of B rows over the grid's first axis)
    and which of them are below n."""
    rows = tl.program_id(0) * B + tl.arange(0, B)
    return rows, rows < n


@triton.jit
def _prep_kernel(X, MU, XH, NRM, RES, n, stride_x, stride_h,
                 d: tl.constexpr, dp: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr):
    rows, rmask = _program_rows(n, BR)
    cols = tl.arange(0, BD)
    cmask = cols < d
    m = rmask[:, None] & cmask[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=m, other=0.0)
    mu = tl.load(MU + cols, mask=cmask, other=0.0)
    xc = tl.where(m, x - mu[None, :], 0.0)
    nrm = tl.maximum(tl.sqrt(tl.sum(xc * xc, axis=1)), 1e-30)
    xn = xc / nrm[:, None]
    xh = xn.to(XH.dtype.element_ty)
    r = xn - xh.to(tl.float32)
    tl.store(XH + rows[:, None] * stride_h + cols[None, :], xh,
             mask=rmask[:, None] & (cols[None, :] < dp))
    tl.store(NRM + rows, nrm, mask=rmask)
    tl.store(RES + rows, tl.sqrt(tl.sum(r * r, axis=1)), mask=rmask)


def prepare(x: torch.Tensor, mu: torch.Tensor, dtype: torch.dtype, dp: int,
            out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (n, d) float32, mu (d,) float32 -> xh (n, dp) ``dtype`` = (x - mu) / ||x - mu||
    rounded (columns d..dp zero), norms (n,) float32 (at least 1e-30) and residual norms
    ``||(x - mu) / ||x - mu|| - xh||`` (n,) float32. ``out``: an (n, dp) buffer for xh."""
    n, d = x.shape
    if x.stride(1) != 1:
        x = x.contiguous()
    xh = torch.empty(n, dp, dtype=dtype, device=x.device) if out is None else out
    nrm = torch.empty(n, dtype=torch.float32, device=x.device)
    res = torch.empty(n, dtype=torch.float32, device=x.device)
    if n:
        bd = triton.next_power_of_2(dp)
        br = max(1, min(16, 8192 // bd))
        _prep_kernel[(triton.cdiv(n, br),)](x, mu.float().contiguous(), xh, nrm, res, n,
                                            x.stride(0), xh.stride(0), d=d, dp=dp, BR=br, BD=bd)
    return xh, nrm, res


@triton.jit
def _merge_top3(s, lane, n0, b1, b2, b3, j1, j2):
    """Merge the three best scores of the tile s (BM, BN) (columns n0 + lane) into the running
    best b1 <= b2 <= b3 with the indices j1, j2 of the first two; ties: lowest index."""
    m1, a1 = tl.min(s, axis=1, return_indices=True)
    s = tl.where(lane[None, :] == a1[:, None], float("inf"), s)
    m2, a2 = tl.min(s, axis=1, return_indices=True)
    s = tl.where(lane[None, :] == a2[:, None], float("inf"), s)
    m3 = tl.min(s, axis=1)
    a1 = a1 + n0
    a2 = a2 + n0
    # merge the sorted (b1, b2, b3) and (m1, m2, m3); on equal scores the earlier tile wins
    t1 = m1 < b1
    t2a = m2 < b1  # used when t1
    t2b = m1 < b2  # used when not t1
    n1 = tl.where(t1, m1, b1)
    k1 = tl.where(t1, a1, j1)
    n2 = tl.where(t1, tl.where(t2a, m2, b1), tl.where(t2b, m1, b2))
    k2 = tl.where(t1, tl.where(t2a, a2, j1), tl.where(t2b, a1, j2))
    n3 = tl.where(t1, tl.where(t2a, tl.minimum(b1, m3), tl.minimum(b2, m2)),
                  tl.where(t2b, tl.minimum(b2, m2), tl.minimum(b3, m1)))
    return n1, n2, n3, k1, k2


@triton.jit
def _row_block(SCALE, n, BM: tl.constexpr):
    """This program's BM rows, their mask and scales, and an empty running top-3 (best, second
    and third score +inf, the indices of the best two 0)."""
    rows, rmask = _program_rows(n, BM)
    scale = tl.load(SCALE + rows, mask=rmask, other=0.0)
    inf = tl.full([BM], float("inf"), tl.float32)
    zero = tl.zeros([BM], tl.int32)
    return rows, rmask, scale, inf, inf, inf, zero, zero


@triton.jit
def _merge_products(dots, CN, scale, lane, n0, b1, b2, b3, j1, j2):
    """The scores ``cn_j - scale_i <x_i, c_j>`` of the products ``dots`` (BM, BN) of the rows
    with the codewords ``n0 + lane``, merged into the running top-3 (:func:`_merge_top3`)."""
    cn = tl.load(CN + n0 + lane)
    return _merge_top3(cn[None, :] - scale[:, None] * dots, lane, n0, b1, b2, b3, j1, j2)


@triton.jit
def _store_top3(I1, I2, V1, V2, V3, rows, rmask, b1, b2, b3, j1, j2):
    """Write the rows' top-3: the indices of the best two, the three scores."""
    tl.store(I1 + rows, j1, mask=rmask)
    tl.store(I2 + rows, j2, mask=rmask)
    tl.store(V1 + rows, b1, mask=rmask)
    tl.store(V2 + rows, b2, mask=rmask)
    tl.store(V3 + rows, b3, mask=rmask)


@triton.jit
def _top2_kernel(
    X, C, CN, SCALE, I1, I2, V1, V2, V3,
    n, stride_x, stride_c,
    k: tl.constexpr, d: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    # k and d are compile-time constants and multiples of BN and BK (the codebook is padded,
    # padding scores +inf): the loops over them are pipelined and unmasked
    rows, rmask, scale, b1, b2, b3, j1, j2 = _row_block(SCALE, n, BM)
    lane = tl.arange(0, BN)
    ks0 = tl.arange(0, BK)
    xp = X + rows[:, None] * stride_x + ks0[None, :]
    for n0 in range(0, k, BN):
        cols = n0 + lane
        cp = C + cols[None, :] * stride_c + ks0[:, None]
        acc = tl.zeros([BM, BN], tl.float32)
        for k0 in range(0, d, BK):
            a = tl.load(xp + k0, mask=rmask[:, None], other=0.0)
            b = tl.load(cp + k0)
            acc = tl.dot(a, b, acc)
        b1, b2, b3, j1, j2 = _merge_products(acc, CN, scale, lane, n0, b1, b2, b3, j1, j2)
    _store_top3(I1, I2, V1, V2, V3, rows, rmask, b1, b2, b3, j1, j2)


#: tiles (BM, BN, BK, warps, stages) tried by the autotuner (every BN divides PAD_K, every BK
#: divides PAD_D); each was exact on an H200 (bench/gpu_run.py --parts tiles)
TUNED_TILES = ((128, 128, 64, 4, 4), (128, 64, 64, 4, 4), (128, 256, 64, 8, 3),
               (256, 128, 64, 8, 3), (128, 128, 32, 4, 5))


def tiles(wrong: bool = False) -> list[tuple[int, int, int, int, int]]:
    """Every tile the kernel may run with on a GPU: :data:`SMALL_CONFIG` and the autotuner's
    (``wrong``: also :data:`WRONG_TILES`, for the per-tile checks)."""
    out = [SMALL_CONFIG, *TUNED_TILES, *(WRONG_TILES if wrong else ())]
    return list(dict.fromkeys(out))


def _configs() -> list:
    """The autotuner's :class:`triton.Config` of each of :data:`TUNED_TILES`."""
    return [triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in TUNED_TILES]


_top2_tuned = triton.autotune(configs=_configs(), key=["k", "d"])(_top2_kernel)


def top2(
    xh: torch.Tensor, ch: torch.Tensor, cn: torch.Tensor, scale: torch.Tensor,
    tile: tuple[int, int, int, int, int] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Fused search. xh: (n, d) fp16/bf16 rows, ch: (K, d) same dtype codewords, cn: (K,)
    fp32, scale: (n,) fp32 -> best index i1 (n,) int32, second i2 (n,) int32, and the best,
    second and third scores v1, v2, v3 (n,) fp32 of ``cn_j - scale_i <xh_i, ch_j>``
    (``inf`` where K has fewer codewords). (K, d) must be padded as :func:`padded` says
    (rows of ch beyond the codebook: zeros with ``cn = inf``).

    Failed the H200 check of bench/gpu_run.py (triton 3.6.0, N = 2M, d = 1024, K = 2000,
    autotuned tile BM 64, BN 256, BK 64, 8 warps, 4 stages): codes equal to fp32 on only
    23 % of the rows after certification, the certificate failing on every row; that tile
    and three more are :data:`WRONG_TILES`, left out since. Hence
    :data:`rpq_units.quant.search.FUSED_KERNEL` is "gemm" (:func:`top2_gemm`); this kernel stays
    selectable (``kernel="triton"``) for measurements. ``tile``: force (BM, BN, BK, warps,
    stages) instead of the autotuner's or the interpreter's choice (the per-tile check of
    bench/gpu_run.py ``--parts tiles``; BN must divide K, BK d)."""
    n, d = xh.shape
    k = ch.shape[0]
    if (k, d) != padded(k, d):
        raise ValueError(f"top2: codebook shape {(k, d)} is not padded to {padded(k, d)}")
    if xh.stride(1) != 1:
        xh = xh.contiguous()
    ch = ch.contiguous()
    cn, scale = cn.float().contiguous(), scale.float().contiguous()
    dev = xh.device
    i1 = torch.empty(n, dtype=torch.int32, device=dev)
    i2 = torch.empty(n, dtype=torch.int32, device=dev)
    v1 = torch.empty(n, dtype=torch.float32, device=dev)
    v2 = torch.empty(n, dtype=torch.float32, device=dev)
    v3 = torch.empty(n, dtype=torch.float32, device=dev)
    if n == 0:
        return i1, i2, v1, v2, v3
    args = (xh, ch, cn, scale, i1, i2, v1, v2, v3, n, xh.stride(0), ch.stride(0))
    compiled = not INTERPRET and dev.type == "cuda"
    if tile is None and compiled and n < TUNE_MIN_ROWS:
        tile = SMALL_CONFIG  # small calls (one utterance): a fixed tile, no tuning runs
    if tile is not None:
        bm, bn, bk, w, s = tile
        if k % bn or d % bk:
            raise ValueError(f"top2: tile BN {bn} / BK {bk} does not divide the padded {(k, d)}")
        _top2_kernel[(triton.cdiv(n, bm),)](*args, k=k, d=d, BM=bm, BN=bn, BK=bk,
                                            num_warps=w, num_stages=s)
    elif not compiled:
        bm = INTERP_BLOCKS["BM"]
        _top2_kernel[(triton.cdiv(n, bm),)](*args, k=k, d=d, **INTERP_BLOCKS)
    else:
        _top2_tuned[lambda meta: (triton.cdiv(n, meta["BM"]),)](*args, k=k, d=d)
    return i1, i2, v1, v2, v3


@triton.jit
def _scan_kernel(S, CN, SCALE, I1, I2, V1, V2, V3, n, stride_s,
                 k: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    rows, rmask, scale, b1, b2, b3, j1, j2 = _row_block(SCALE, n, BM)
    lane = tl.arange(0, BN)
    for n0 in range(0, k, BN):
        cols = n0 + lane
        dots = tl.load(S + rows[:, None] * stride_s + cols[None, :], mask=rmask[:, None], other=0.0)
        b1, b2, b3, j1, j2 = _merge_products(dots, CN, scale, lane, n0, b1, b2, b3, j1, j2)
    _store_top3(I1, I2, V1, V2, V3, rows, rmask, b1, b2, b3, j1, j2)


#: rows per product block of :func:`top2_gemm` (its fp32 (rows, K) block: 1 GiB at K = 2048)
GEMM_BLOCK_BYTES = 1 << 30


def top2_gemm(
    xh: torch.Tensor, ch: torch.Tensor, cn: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """:func:`top2` in two steps: the products of a block of rows with the codebook by the
    vendor GEMM (cuBLAS; fp16/bf16 inputs, fp32 accumulation and output: the same products
    and error bound as the fused kernel), then a Triton scan of the (rows, K) fp32 block for
    the same top-3. Same arguments and results as :func:`top2`; costs one (rows, K) fp32
    block of memory traffic per row block instead of nothing."""
    n, d = xh.shape
    k = ch.shape[0]
    if (k, d) != padded(k, d):
        raise ValueError(f"top2_gemm: codebook shape {(k, d)} is not padded to {padded(k, d)}")
    dev = xh.device
    cn, scale = cn.float().contiguous(), scale.float().contiguous()
    out = [torch.empty(n, dtype=torch.int32, device=dev) for _ in range(2)]
    out += [torch.empty(n, dtype=torch.float32, device=dev) for _ in range(3)]
    if n == 0:
        return tuple(out)
    step = max(1, min(n, GEMM_BLOCK_BYTES // (4 * k)))
    buf = torch.empty(step, k, dtype=torch.float32, device=dev)
    bm, bn = (64, 32) if INTERPRET else (64, 128)
    old = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    try:
        for s0 in range(0, n, step):
            e = min(n, s0 + step)
            sc = buf[: e - s0]
            if dev.type == "cuda":
                try:
                    torch.mm(xh[s0:e], ch.t(), torch.float32, out=sc)
                except (TypeError, RuntimeError):  # a torch without out= for out_dtype
                    sc.copy_(torch.mm(xh[s0:e], ch.t(), torch.float32))
            else:  # products of fp16/bf16 values are exact in fp32, as on the GPU
                torch.mm(xh[s0:e].float(), ch.float().t(), out=sc)
            _scan_kernel[(triton.cdiv(e - s0, bm),)](
                sc, cn, scale[s0:e], *(o[s0:e] for o in out), e - s0, sc.stride(0),
                k=k, BM=bm, BN=bn)
    finally:
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = old
    return tuple(out)


@triton.jit
def _pair_dist_kernel(X, ROWS, C, CAND, OUT, u, stride_x, stride_c,
                      t: tl.constexpr, d: tl.constexpr, BR: tl.constexpr, BD: tl.constexpr):
    i, imask = _program_rows(u, BR)
    row = tl.load(ROWS + i, mask=imask, other=0)
    for j in tl.static_range(t):
        cj = tl.load(CAND + i * t + j, mask=imask, other=0)
        acc = tl.zeros([BR, BD], tl.float32)
        for k0 in range(0, d, BD):
            ks = k0 + tl.arange(0, BD)
            m = imask[:, None] & (ks[None, :] < d)
            x = tl.load(X + row[:, None] * stride_x + ks[None, :], mask=m, other=0.0)
            c = tl.load(C + cj[:, None] * stride_c + ks[None, :], mask=m, other=0.0)
            diff = x - c
            acc += diff * diff
        tl.store(OUT + i * t + j, tl.sum(acc, axis=1), mask=imask)


def pair_dist(x: torch.Tensor, rows: torch.Tensor | None, c: torch.Tensor,
              cand: torch.Tensor) -> torch.Tensor:
    """Squared distances ``||x[rows_i] - c[cand_ij]||^2`` in fp32 from the differences:
    x (n, d) float32, rows (u,) int64 (None: all n rows), c (K, d) float32, cand (u, t) int
    -> (u, t) float32."""
    d = x.shape[1]
    if x.stride(1) != 1:
        x = x.contiguous()
    c = c.contiguous()
    cand = cand.to(torch.int64).contiguous()
    u, t = cand.shape
    if rows is None:
        rows = torch.arange(u, device=x.device)
    out = torch.empty(u, t, dtype=torch.float32, device=x.device)
    if u:
        br, bd = (16, 64) if INTERPRET else (16, 128)
        _pair_dist_kernel[(triton.cdiv(u, br),)](x, rows.to(torch.int64).contiguous(), c, cand,
                                                 out, u, x.stride(0), c.stride(0),
                                                 t=t, d=d, BR=br, BD=bd)
    return out


@triton.jit
def _segment_sum_kernel(
    X, ORDER, START, OUT, d, stride_x,
    BR: tl.constexpr, BD: tl.constexpr,
):
    c = tl.program_id(0)
    pd = tl.program_id(1)
    lo = tl.load(START + c)
    hi = tl.load(START + c + 1)
    dims = pd * BD + tl.arange(0, BD)
    dmask = dims < d
    acc = tl.zeros([BR, BD], tl.float64)
    r0 = lo
    while r0 < hi:  # a while loop: the bounds are data (and range() over them fails in the
        pos = r0 + tl.arange(0, BR)  # interpreter of triton 3.5 with numpy >= 2.4)
        pmask = pos < hi
        row = tl.load(ORDER + pos, mask=pmask, other=0)
        v = tl.load(X + row[:, None] * stride_x + dims[None, :],
                    mask=pmask[:, None] & dmask[None, :], other=0.0)
        acc += v.to(tl.float64)
        r0 += BR
    tl.store(OUT + c * d + dims, tl.sum(acc, axis=0), mask=dmask)


_segment_sum_tuned = triton.autotune(
    configs=[triton.Config({"BR": br, "BD": bd}, num_warps=w)
             for br, bd, w in [(32, 128, 4), (64, 128, 8), (16, 256, 4), (64, 64, 4),
                               (128, 64, 8), (32, 256, 8)]],
    key=["d"],
)(_segment_sum_kernel)


def segment_sum(x: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums: x (n, d) float32, codes (n,), counts (K,) = bincount(codes) ->
    (K, d) float64."""
    n, d = x.shape
    x = x.contiguous()
    order = torch.argsort(codes, stable=True).to(torch.int64)
    start = torch.zeros(k + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(counts, 0, out=start[1:])
    out = torch.empty(k, d, dtype=torch.float64, device=x.device)
    args = (x, order, start, out, d, x.stride(0))
    if INTERPRET or x.device.type != "cuda":
        br, bd = 16, 32
        _segment_sum_kernel[(k, triton.cdiv(d, bd))](*args, BR=br, BD=bd)
    else:
        _segment_sum_tuned[lambda meta: (k, triton.cdiv(d, meta["BD"]))](*args)
    return out
