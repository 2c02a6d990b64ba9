"""Batched Lloyd k-means: exact assignment, bounded passes equal plain Lloyd, objective
monotone and close to scikit-learn, empty clusters re-seeded, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpq_units.quant import lloyd, search


def blobs(n: int = 3000, d: int = 16, comps: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(comps, d, generator=g) * 2.0 + 5.0
    z = torch.randint(comps, (n,), generator=g)
    return means[z] + torch.randn(n, d, generator=g)


def brute(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 nearest centroid: x (N, d), c (K, d)."""
    d2 = ((x.double()[:, None, :] - c.double()[None]) ** 2).sum(-1)
    v, i = d2.min(1)
    return i, v


def test_assign_matches_brute_force_batched():
    x = torch.stack([blobs(seed=s)[:1000] for s in range(3)])  # (3, 1000, 16)
    c = torch.stack([blobs(seed=10 + s)[:37] for s in range(3)])
    codes, dist = lloyd.assign(x, c)
    assert codes.shape == (3, 1000) and codes.dtype == torch.long and dist.shape == (3, 1000)
    for g in range(3):
        i, v = brute(x[g], c[g])
        assert (codes[g] == i).float().mean() == 1.0
        torch.testing.assert_close(dist[g].double(), v, rtol=1e-4, atol=1e-3)


def test_assign_small_cpu_blocks(monkeypatch):
    monkeypatch.setattr(search, "CPU_BLOCK_ROWS", 7)
    x, c = blobs()[:100].unsqueeze(0), blobs(seed=3)[:9].unsqueeze(0)
    codes, _ = lloyd.assign(x, c)
    assert torch.equal(codes[0], brute(x[0], c[0])[0])


@pytest.mark.parametrize("bounds", [True, False])
def test_objective_non_increasing_and_inertia_exact(bounds):
    x = blobs()
    stats: list = []
    cent, inertia = lloyd.fit_kmeans(x, 25, tol=0.0, max_iter=15, seed=1, bounds=bounds,
                                     stats=stats)
    obj = [s.objective[0] for s in stats]
    assert len(obj) >= 2
    assert [s.iteration for s in stats] == list(range(1, len(stats) + 1))
    assert all(s.seconds >= 0 and 0 <= s.changed <= s.searched <= 3000 for s in stats)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(obj, obj[1:], strict=False))
    _, v = brute(x, cent)
    assert float(inertia) == pytest.approx(float(v.mean()), rel=1e-5)


def test_bounded_passes_equal_plain_lloyd():
    """The pruned passes must follow exactly the plain Lloyd trajectory."""
    x = blobs(n=2500, d=24, comps=60)
    init = x[torch.randperm(2500, generator=torch.Generator().manual_seed(5))[:30]]
    h1: list = []
    h2: list = []
    c1, i1 = lloyd.fit_kmeans(x, 30, init=init, tol=0.0, max_iter=15, bounds=True, stats=h1)
    c2, i2 = lloyd.fit_kmeans(x, 30, init=init, tol=0.0, max_iter=15, bounds=False, stats=h2)
    assert len(h1) == len(h2) == 15
    np.testing.assert_allclose([s.objective for s in h1], [s.objective for s in h2], rtol=1e-5)
    # the same assignments: the same rows change cluster, with far fewer rows searched
    assert [s.changed for s in h1] == [s.changed for s in h2]
    assert h1[0].changed > 0 and h2[-1].searched == 2500
    assert sum(s.searched for s in h1[1:]) < sum(s.searched for s in h2[1:]) / 2
    torch.testing.assert_close(c1, c2, rtol=1e-4, atol=1e-4)
    assert float(i1) == pytest.approx(float(i2), rel=1e-5)


def test_batched_groups_independent():
    x = torch.stack([blobs(seed=s) for s in range(3)])
    cent, inertia = lloyd.fit_kmeans(x, 12, seed=4)
    assert cent.shape == (3, 12, 16) and inertia.shape == (3,)
    for g in range(3):
        _, v = brute(x[g], cent[g])
        assert float(inertia[g]) == pytest.approx(float(v.mean()), rel=1e-5)


def test_deterministic_and_seed_dependent():
    x = blobs()
    a = lloyd.fit_kmeans(x, 20, seed=7)[0]
    b = lloyd.fit_kmeans(x, 20, seed=7)[0]
    c = lloyd.fit_kmeans(x, 20, seed=8)[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("bounds", [True, False])
def test_empty_cluster_reseeded(bounds):
    """A centroid far from all data owns no row after the first assignment."""
    x = blobs(n=2000, d=8, comps=10)
    init = x[:10].clone()
    init[3] = 1e4  # never nearest to anything
    stats: list = []
    cent, inertia = lloyd.fit_kmeans(x, 10, init=init, tol=0.0, max_iter=20, bounds=bounds,
                                     stats=stats)
    assert stats[0].reseeded == 1 and sum(s.reseeded for s in stats[1:]) == 0
    assert bool(torch.isfinite(cent).all())
    codes, v = brute(x, cent)
    counts = torch.bincount(codes, minlength=10)
    assert int(counts.min()) > 0, counts  # the far centroid was moved onto the data
    assert float(cent[3].abs().max()) < 1e3
    # and the result is as good as a fit without the bad centroid
    good = x[:10].clone()
    _, ref = lloyd.fit_kmeans(x, 10, init=good, tol=0.0, max_iter=20, bounds=bounds)
    assert float(inertia) <= float(ref) * 1.5


def test_one_empty_cluster_rule_for_both_kinds_of_passes():
    """Plain and bounded passes re-seed an empty cluster onto the same (farthest) row."""
    x = blobs(n=2000, d=8, comps=10)
    init = x[:10].clone()
    init[[3, 6]] = 1e4
    c1, i1 = lloyd.fit_kmeans(x, 10, init=init, tol=0.0, max_iter=2, bounds=True)
    c2, i2 = lloyd.fit_kmeans(x, 10, init=init, tol=0.0, max_iter=2, bounds=False)
    torch.testing.assert_close(c1, c2, rtol=1e-5, atol=1e-5)
    # after the first update, the two empty clusters sit on the two farthest rows
    _, d0 = brute(x, init)
    far = d0.topk(2).indices
    h: list = []
    c, _ = lloyd.fit_kmeans(x, 10, init=init, tol=0.0, max_iter=1, bounds=False, stats=h)
    assert h[0].reseeded == 2
    assert torch.equal(c[3], x[far[0]]) and torch.equal(c[6], x[far[1]])


def test_close_to_sklearn_lloyd():
    """Mean objective over seeds within 1% of scikit-learn's Lloyd KMeans (k-means++ init)."""
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x = blobs(n=2000, d=16, comps=40)
    seeds = range(4)
    ours = [float(lloyd.fit_kmeans(x, 20, seed=s)[1]) for s in seeds]
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):  # small problem: threads only add overhead
        ref = [
            sklearn_cluster.KMeans(20, algorithm="lloyd", n_init=1, random_state=s, tol=1e-6)
            .fit(x.double().numpy())
            .inertia_ / len(x)
            for s in seeds
        ]
    assert np.mean(ours) <= np.mean(ref) * 1.01


def test_kmeans_plusplus_picks_distinct_rows():
    x = blobs(n=500).unsqueeze(0)
    for proj in (None, 4):
        g = torch.Generator().manual_seed(0)
        c = lloyd.kmeans_plusplus(x, 40, g, proj_dim=proj)
        assert c.shape == (1, 40, 16)
        rows = {tuple(r.tolist()) for r in c[0]}
        assert len(rows) == 40
        data = {tuple(r.tolist()) for r in x[0]}
        assert rows <= data
    # greedy seeding beats uniform picks on clustered data
    g = torch.Generator().manual_seed(0)
    c = lloyd.kmeans_plusplus(x, 40, g)
    rnd = x[:, torch.randperm(500, generator=torch.Generator().manual_seed(0))[:40]]
    assert float(lloyd.assign(x, c)[1].mean()) < float(lloyd.assign(x, rnd)[1].mean())


def test_duplicate_rows_and_too_few_rows():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]).repeat(50, 1)
    cent, inertia = lloyd.fit_kmeans(x, 3, seed=0)
    assert float(inertia) == pytest.approx(0.0, abs=1e-6)
    cent, inertia = lloyd.fit_kmeans(x, 5, seed=0)  # more clusters than distinct rows
    assert bool(torch.isfinite(cent).all()) and float(inertia) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="fewer than k"):
        lloyd.fit_kmeans(x[:4], 5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("candidates", [1, 2])
def test_certified_lowp_assign_is_exact(dtype, candidates):
    """The reduced-precision search used by ``assign`` on CUDA, run on CPU: same codes as an
    exact float64 search, including rows it must hand back to the fp32 product."""
    g = torch.Generator().manual_seed(0)
    # offset, unnormalised rows and many near-equidistant centroids: hard for bf16/fp16
    x = torch.randn(2, 1500, 64, generator=g) * 3.0 + 10.0
    c = x[:, :150] + 0.3 * torch.randn(2, 150, 64, generator=g)
    stats: dict = {}
    codes, dist = lloyd.assign_lowp(x, c, dtype=dtype, candidates=candidates, block_rows=512,
                                    stats=stats)
    ref_codes, ref_dist = lloyd.assign(x, c)
    for gi in range(2):
        i, v = brute(x[gi], c[gi])
        assert torch.equal(codes[gi], i)
        torch.testing.assert_close(dist[gi].double(), v, rtol=1e-4, atol=1e-2)
    assert torch.equal(codes, ref_codes)
    assert stats["rows"] == 3000
    # all three tiers ran: certified from the approximate scores alone, rescored, searched again
    assert 0 < stats["rescored"] < stats["rows"]
    if dtype == torch.bfloat16:
        assert stats["fallback"] > 0


def test_lowp_assign_rows_at_the_centroid_mean():
    """Rows far closer to the centroid mean than the centroids are (tiny ``a``, large bias
    column): the fp16 scaling must neither overflow nor lose the exact answer."""
    g = torch.Generator().manual_seed(3)
    c = torch.randn(1, 200, 32, generator=g) * 1e3
    x = c.mean(1, keepdim=True) + 1e-3 * torch.randn(1, 700, 32, generator=g)
    codes, dist = lloyd.assign_lowp(x, c, block_rows=256)
    i, v = brute(x[0], c[0])
    assert torch.equal(codes[0], i)
    torch.testing.assert_close(dist[0].double(), v, rtol=1e-5, atol=1e-3)


def test_lowp_error_bound_holds():
    """The product error stays inside LOWP_EPS * ||x|| ||c|| (the certificate's premise)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 256, generator=g)
    c = torch.randn(300, 256, generator=g)
    xn = x / x.norm(dim=1, keepdim=True)
    cn = c / c.norm(dim=1).max()
    exact = xn.double() @ cn.double().t()
    for dtype, eps in lloyd.LOWP_EPS.items():
        approx = torch.mm(xn.to(dtype), cn.to(dtype).t()).double()
        bound = eps * cn.double().norm(dim=1).unsqueeze(0)
        assert bool(((approx - exact).abs() <= bound).all()), dtype
