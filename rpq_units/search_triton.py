"""Triton kernels behind :mod:`rpq_units.search` on CUDA (importing this module needs triton).

* :func:`top2`: fused nearest-codeword search. Per block of rows, the products with one tile of
  codewords at a time (fp16/bf16 inputs, fp32 accumulation, ``tl.dot``), the scores
  ``||c'_j||^2 - scale_i <x^_i, c^_j>`` formed in registers, and a running best, second best
  and third-best score per row: the ``(N, K)`` score matrix never exists. The certificate on
  its output is applied by :func:`rpq_units.search.assign_fused`.
* :func:`segment_sum`: per-cluster row sums for the Lloyd update: rows visited in the order of
  their sorted codes, one program per (cluster, column block), float64 accumulation.
  Deterministic (no atomics) and reads every row once.

Both run on CPU under ``TRITON_INTERPRET=1`` (the tests do), with the same results.
Written by hand: neither torch nor faiss offers an argmin fused into a low-precision GEMM with
the top-3 a certificate needs.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _top2_kernel(
    X, C, CN, SCALE, I1, I2, V1, V2, V3,
    n, stride_x, stride_c,
    k: tl.constexpr, d: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    # k and d are compile-time constants: the loops over them are pipelined, and the kernel is
    # compiled once per codebook shape
    pid = tl.program_id(0)
    rows = pid * BM + tl.arange(0, BM)
    rmask = rows < n
    scale = tl.load(SCALE + rows, mask=rmask, other=0.0)
    lane = tl.arange(0, BN)
    b1 = tl.full([BM], float("inf"), tl.float32)
    b2 = tl.full([BM], float("inf"), tl.float32)
    b3 = tl.full([BM], float("inf"), tl.float32)
    j1 = tl.zeros([BM], tl.int32)
    j2 = tl.zeros([BM], tl.int32)
    for n0 in range(0, k, BN):
        cols = n0 + lane
        cmask = cols < k
        acc = tl.zeros([BM, BN], tl.float32)
        for k0 in range(0, d, BK):
            ks = k0 + tl.arange(0, BK)
            kmask = ks < d
            a = tl.load(X + rows[:, None] * stride_x + ks[None, :],
                        mask=rmask[:, None] & kmask[None, :], other=0.0)
            b = tl.load(C + cols[None, :] * stride_c + ks[:, None],
                        mask=cmask[None, :] & kmask[:, None], other=0.0)
            acc = tl.dot(a, b, acc)
        cn = tl.load(CN + cols, mask=cmask, other=0.0)
        s = cn[None, :] - scale[:, None] * acc
        s = tl.where(cmask[None, :], s, float("inf"))
        # the tile's three best (ties: lowest index)
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
        b1, b2, b3, j1, j2 = n1, n2, n3, k1, k2
    tl.store(I1 + rows, j1, mask=rmask)
    tl.store(I2 + rows, j2, mask=rmask)
    tl.store(V1 + rows, b1, mask=rmask)
    tl.store(V2 + rows, b2, mask=rmask)
    tl.store(V3 + rows, b3, mask=rmask)


_top2_tuned = triton.autotune(
    configs=[
        triton.Config({"BM": 128, "BN": 128, "BK": 64}, num_warps=8, num_stages=3),
        triton.Config({"BM": 128, "BN": 64, "BK": 64}, num_warps=4, num_stages=4),
        triton.Config({"BM": 64, "BN": 128, "BK": 64}, num_warps=4, num_stages=4),
        triton.Config({"BM": 128, "BN": 256, "BK": 64}, num_warps=8, num_stages=3),
    ],
    key=["k", "d"],
)(_top2_kernel)


def top2(
    xh: torch.Tensor, ch: torch.Tensor, cn: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Fused search. xh: (n, d) fp16/bf16 rows, ch: (K, d) same dtype codewords, cn: (K,)
    fp32, scale: (n,) fp32 -> best index i1 (n,) int32, second i2 (n,) int32, and the best,
    second and third scores v1, v2, v3 (n,) fp32 of ``cn_j - scale_i <xh_i, ch_j>``
    (``inf`` where K has fewer codewords)."""
    n, d = xh.shape
    k = ch.shape[0]
    xh, ch = xh.contiguous(), ch.contiguous()
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
    if INTERPRET or dev.type != "cuda":
        bm, bn, bk = 64, 32, 32  # few, large blocks: the interpreter pays per block
        _top2_kernel[(triton.cdiv(n, bm),)](*args, k=k, d=d, BM=bm, BN=bn, BK=bk)
    else:
        _top2_tuned[lambda meta: (triton.cdiv(n, meta["BM"]),)](*args, k=k, d=d)
    return i1, i2, v1, v2, v3


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


def segment_sum(x: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster sums: x (n, d) float32, codes (n,), counts (K,) = bincount(codes) ->
    (K, d) float64."""
    n, d = x.shape
    x = x.contiguous()
    order = torch.argsort(codes, stable=True).to(torch.int64)
    start = torch.zeros(k + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(counts, 0, out=start[1:])
    out = torch.empty(k, d, dtype=torch.float64, device=x.device)
    if INTERPRET or x.device.type != "cuda":
        br, bd = 16, 32
    else:
        br, bd = 32, 128
    _segment_sum_kernel[(k, triton.cdiv(d, bd))](x, order, start, out, d, x.stride(0), BR=br, BD=bd)
    return out
