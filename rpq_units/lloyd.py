"""Batched k-means (Lloyd) on torch: one code path for CPU and GPU.

``G`` independent problems (the M sub-quantizers of PQ/RPQ) are solved together:
``x: (G, N, d)`` -> ``centroids: (G, K, d)``. Nearest centroid by
``argmin_k ||x||^2 - 2 x c_k^T + ||c_k||^2`` (the ``||x||^2`` term is constant per row).

Reference implementation; see :func:`fit_kmeans` for the contract.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def _chunk_rows(n: int, d: int, k: int, budget: int = 1 << 26) -> int:
    """Rows per chunk so a (chunk, K) score block stays under ``budget`` floats."""
    return max(1, min(n, budget // max(k, 1)))


@torch.no_grad()
def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per row.

    x: (G, N, d), centroids: (G, K, d) -> codes (G, N) int64, squared distances (G, N) float32.
    """
    g, n, d = x.shape
    k = centroids.shape[1]
    c_sq = (centroids * centroids).sum(-1)  # (G, K)
    codes = torch.empty(g, n, dtype=torch.long, device=x.device)
    dist = torch.empty(g, n, dtype=torch.float32, device=x.device)
    step = _chunk_rows(n, d, k * g)
    for s in range(0, n, step):
        xc = x[:, s : s + step]
        scores = torch.baddbmm(c_sq.unsqueeze(1), xc, centroids.transpose(1, 2), alpha=-2.0)
        best, idx = scores.min(dim=2)
        codes[:, s : s + step] = idx
        dist[:, s : s + step] = (best + (xc * xc).sum(-1)).clamp_min_(0.0)
    return codes, dist


@torch.no_grad()
def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007) for each of G problems. x: (G, N, d)."""
    g, n, d = x.shape
    idx = torch.randint(n, (g,), generator=generator).to(x.device)
    cent = torch.empty(g, k, d, dtype=x.dtype, device=x.device)
    ar = torch.arange(g, device=x.device)
    cent[:, 0] = x[ar, idx]
    closest = ((x - cent[:, :1]) ** 2).sum(-1)  # (G, N)
    for j in range(1, k):
        w = closest.clamp_min(0).double().cpu()
        w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
        pick = torch.multinomial(w, 1, generator=generator).squeeze(1).to(x.device)
        cent[:, j] = x[ar, pick]
        closest = torch.minimum(closest, ((x - cent[:, j : j + 1]) ** 2).sum(-1))
    return cent


@torch.no_grad()
def fit_kmeans(
    x: torch.Tensor,
    k: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on G problems at once.

    x: (G, N, d) float32 (or (N, d), treated as G = 1) -> (centroids (G, K, d), inertia (G,)),
    inertia being the mean squared distance to the nearest centroid. Stops when the relative
    change of the objective falls under ``tol`` or after ``max_iter`` passes; empty clusters
    are re-seeded with the farthest points. Deterministic for a given ``seed``.
    """
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    g, n, d = x.shape
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    cent = kmeans_plusplus(x, k, gen)
    prev = None
    ar = torch.arange(g, device=x.device).unsqueeze(1)
    for it in range(max_iter):
        codes, dist = assign(x, cent)
        obj = dist.mean(1)
        sums = torch.zeros(g, k, d, dtype=x.dtype, device=x.device)
        sums.index_put_((ar.expand(g, n), codes), x, accumulate=True)
        counts = torch.zeros(g, k, dtype=x.dtype, device=x.device)
        counts.index_put_((ar.expand(g, n), codes), torch.ones_like(dist), accumulate=True)
        new = sums / counts.clamp_min(1).unsqueeze(-1)
        empty = counts == 0
        if bool(empty.any()):
            for gi in range(g):
                ne = int(empty[gi].sum())
                if ne:
                    far = dist[gi].topk(ne).indices
                    new[gi, empty[gi]] = x[gi, far]
        cent = torch.where(empty.unsqueeze(-1), new, new)
        if prev is not None:
            rel = ((prev - obj).abs() / prev.clamp_min(1e-12)).max()
            logger.debug("iter %d objective %s rel %.2e", it, obj.tolist(), float(rel))
            if float(rel) < tol:
                break
        prev = obj
    _, dist = assign(x, cent)
    inertia = dist.mean(1)
    if squeeze:
        return cent[0], inertia[0]
    return cent, inertia
