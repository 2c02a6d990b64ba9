"""K-means, PQ and RPQ quantizers: determinism, round trips, the reported distortion, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpq_units import QuantizerError, load_quantizer, make_quantizer, save_codebook
from rpq_units.quant.pq import pq_blocks, rpq_subsets

K = 8


def mixture(n: int = 800, d: int = 12, comps: int = 16, seed: int = 0) -> np.ndarray:
    """A seeded Gaussian mixture (N, D) float32 with an offset mean, like SSL features."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(comps, d)) * 3.0 + 1.5
    z = rng.integers(comps, size=n)
    return (means[z] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return mixture()


def build(method: str, **kw):
    base = {"codebook_size": K, "seed": 0, "max_iter": 50}
    if method != "kmeans":
        base["num_codebooks"] = 3
    base.update(kw)
    return make_quantizer(method, **base)


def numpy_decode_mse(x: np.ndarray, q, codes: np.ndarray) -> float:
    """Reference reconstruction in plain numpy from the public analysis surface."""
    cb = q.codebooks.cpu().numpy()
    acc = np.zeros_like(x, dtype=np.float64)
    cover = np.zeros(x.shape[1])
    for m, s in enumerate(q.subspace_indices()):
        s = s.cpu().numpy()
        acc[:, s] += cb[m][codes[:, m]][:, : len(s)]
        cover[s] += 1
    rec = acc / np.maximum(cover, 1)
    if (cover == 0).any():
        rec[:, cover == 0] = q.dim_mean.cpu().numpy()[cover == 0]
    return float(((x.astype(np.float64) - rec) ** 2).sum(1).mean())


def numpy_codes(x: np.ndarray, q) -> np.ndarray:
    """Nearest sub-centroid per sub-vector, brute force in float64."""
    cb = q.codebooks.cpu().numpy().astype(np.float64)
    out = []
    for m, s in enumerate(q.subspace_indices()):
        s = s.cpu().numpy()
        sub = x[:, s].astype(np.float64)
        d2 = ((sub[:, None, :] - cb[m][None, :, : len(s)]) ** 2).sum(-1)
        out.append(d2.argmin(1))
    return np.stack(out, 1)


@pytest.mark.parametrize("method", ["kmeans", "pq", "rpq"])
def test_codes_shape_range_and_determinism(method, x):
    q1 = build(method).fit(x)
    q2 = build(method).fit(x)
    c1, c2 = q1.encode(x), q2.encode(x)
    m = 1 if method == "kmeans" else 3
    assert isinstance(c1, np.ndarray) and c1.shape == (len(x), m) and c1.dtype == np.int64
    assert c1.min() >= 0 and c1.max() < K
    np.testing.assert_array_equal(c1, c2)
    assert torch.equal(q1.codebooks, q2.codebooks)
    # torch in, torch out
    ct = q1.encode(torch.from_numpy(x))
    assert isinstance(ct, torch.Tensor) and torch.equal(ct, torch.from_numpy(c1))
    # codes are the true nearest sub-centroids
    np.testing.assert_array_equal(c1, numpy_codes(x, q1))


@pytest.mark.parametrize("method", ["kmeans", "pq", "rpq"])
def test_decode_error_equals_reported_distortion(method, x):
    q = build(method).fit(x)
    codes = q.encode(x)
    x_hat = q.decode(codes)
    assert x_hat.shape == x.shape and x_hat.dtype == np.float32
    mse = float(((x.astype(np.float64) - x_hat) ** 2).sum(1).mean())
    ref = numpy_decode_mse(x, q, codes)
    assert mse == pytest.approx(ref, rel=1e-5)
    assert q.distortion(x) == pytest.approx(mse, rel=1e-5)
    reported = float(q.inertia[0]) if method == "kmeans" else q.train_distortion
    assert reported == pytest.approx(mse, rel=1e-4)
    if method != "rpq":  # disjoint blocks: full error = sum of the sub-quantizers' inertias
        assert float(q.inertia.sum()) == pytest.approx(mse, rel=1e-4)
    # sub-decode gives each sub-quantizer's own reconstruction error = its inertia
    for m, (s, rec) in enumerate(zip(q.subspace_indices(), q.sub_decode(codes), strict=True)):
        err = ((torch.from_numpy(x)[:, s] - rec) ** 2).sum(1).mean()
        assert float(err) == pytest.approx(float(q.inertia[m]), rel=1e-4)


def test_pq_with_one_block_equals_kmeans(x):
    km = build("kmeans").fit(x)
    pq = build("pq", num_codebooks=1).fit(x)
    assert torch.equal(km.codebooks, pq.codebooks)
    np.testing.assert_array_equal(km.encode(x), pq.encode(x))
    np.testing.assert_array_equal(km.decode(km.encode(x)), pq.decode(pq.encode(x)))


def test_pq_dimension_not_divisible():
    x = mixture(d=10)
    q = build("pq", num_codebooks=4).fit(x)
    sizes = [len(s) for s in q.subspace_indices()]
    assert sizes == [3, 3, 2, 2]
    assert torch.equal(torch.cat(q.subspace_indices()).cpu(), torch.arange(10))
    assert q.codebooks.shape == (4, K, 3)
    # padded columns of the narrow blocks stay zero
    assert float(q.codebooks[2:, :, 2].abs().max()) == 0.0
    codes = q.encode(x)
    mse = float(((x - q.decode(codes)) ** 2).sum(1).mean())
    assert mse == pytest.approx(float(q.inertia.sum()), rel=1e-4)
    np.testing.assert_array_equal(codes, numpy_codes(x, q))
    assert [len(b) for b in pq_blocks(7, 7)] == [1] * 7
    with pytest.raises(QuantizerError, match="exceeds the feature dimension"):
        pq_blocks(3, 4)


def test_rpq_subsets_from_seed_saved_and_reloaded(x, tmp_path):
    q = build("rpq", num_codebooks=4, dims_ratio=0.5).fit(x)
    subsets = q.subspace_indices()
    d = x.shape[1]
    assert len(subsets) == 4 and all(len(s) == 6 for s in subsets)
    for s in subsets:
        assert len(set(s.tolist())) == len(s) and 0 <= int(s.min()) and int(s.max()) < d
    # reproducible from the seed alone
    g = torch.Generator().manual_seed(0 + 2)
    again = rpq_subsets(d, 4, 6, g)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(subsets, again, strict=True))
    # independent across subsets (not all equal), and a different seed draws different sets
    assert not all(torch.equal(subsets[0], s) for s in subsets[1:])
    other = build("rpq", num_codebooks=4, dims_ratio=0.5, seed=1).fit(x)
    assert not all(torch.equal(a, b) for a, b in zip(subsets, other.subspace_indices(), strict=True))
    # saved and reloaded, not redrawn
    path = tmp_path / "rpq.pt"
    save_codebook(q, path)
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["dims_ratio"] == 0.5
    q2 = load_quantizer(path)
    assert all(torch.equal(a, b) for a, b in zip(subsets, q2.subspace_indices(), strict=True))


def test_rpq_default_ratio_and_decode_rule(x):
    q = build("rpq", num_codebooks=3).fit(x)
    assert q.dims_ratio == pytest.approx(1 / 3)
    assert all(len(s) == 4 for s in q.subspace_indices())  # round(12 / 3)
    # decode: mean of covering sub-codewords; uncovered dims get the training mean
    codes = q.encode(x[:5])
    rec = q.decode(codes)
    subs = q.subspace_indices()
    parts = q.sub_decode(codes)
    for dim in range(x.shape[1]):
        cov = [(m, (s == dim).nonzero().item()) for m, s in enumerate(subs) if bool((s == dim).any())]
        if cov:
            want = torch.stack([parts[m][:, j] for m, j in cov]).mean(0).numpy()
        else:
            want = np.full(5, x[:, dim].mean(), dtype=np.float32)
        np.testing.assert_allclose(rec[:, dim], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["kmeans", "pq", "rpq"])
def test_save_load_round_trip(method, x, tmp_path):
    q = build(method).fit(x)
    q.meta = {"upstream": "fbank", "layer": -1}
    path = tmp_path / "sub" / "codebook.pt"
    save_codebook(q, path)
    assert not path.with_name("codebook.pt.tmp").exists()
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["method"] == method and blob["config"]["max_iter"] == 50
    q2 = load_quantizer(path)
    assert type(q2) is type(q) and q2.meta == q.meta and q2.config() == q.config()
    np.testing.assert_array_equal(q.encode(x), q2.encode(x))
    np.testing.assert_array_equal(q.decode(q.encode(x)), q2.decode(q2.encode(x)))


def test_max_frames_subsample(x):
    q = build("kmeans", max_frames=200).fit(x)
    q2 = build("kmeans", max_frames=200).fit(x)
    assert torch.equal(q.codebooks, q2.codebooks)
    assert q.config()["max_frames"] == 200
    with pytest.raises(QuantizerError, match="fewer than codebook_size"):
        build("kmeans", max_frames=4).fit(x)


@pytest.mark.parametrize("method", ["kmeans", "pq", "rpq"])
def test_bad_input(method, x):
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(QuantizerError, match="NaN or Inf"):
        build(method).fit(bad)
    bad[3, 2] = np.inf
    with pytest.raises(QuantizerError, match="NaN or Inf"):
        build(method).fit(bad)
    with pytest.raises(QuantizerError, match="fewer than codebook_size"):
        build(method).fit(x[: K - 1])
    q = build(method).fit(x)
    with pytest.raises(QuantizerError, match="dimension 11 but the .* trained on dimension 12"):
        q.encode(x[:, :11])
    with pytest.raises(QuantizerError, match="NaN or Inf"):
        q.encode(bad)
    with pytest.raises(QuantizerError, match="values outside"):
        q.decode(np.full((2, q.num_codebooks), K))
    with pytest.raises(QuantizerError, match="not fitted"):
        build(method).encode(x)


def test_bad_config():
    with pytest.raises(QuantizerError, match="unknown quantization method 'vq'"):
        make_quantizer("vq", codebook_size=4)
    with pytest.raises(QuantizerError, match="single codebook"):
        make_quantizer("kmeans", num_codebooks=2)
    with pytest.raises(QuantizerError, match="dims_ratio"):
        make_quantizer("rpq", num_codebooks=2, dims_ratio=1.5)
    with pytest.raises(QuantizerError, match="codebook_size"):
        make_quantizer("pq", codebook_size=1)


@pytest.mark.parametrize("method, kw", [
    ("kmeans", {"codebook_size": 64}),
    ("pq", {"num_codebooks": 3, "codebook_size": 32}),
    ("rpq", {"num_codebooks": 3, "codebook_size": 32}),
    ("rvq", {"num_codebooks": 2, "codebook_size": 16, "beam_width": 3, "max_iter": 10}),
    ("avq", {"num_codebooks": 2, "codebook_size": 8, "beam_width": 2, "num_iters": 1,
             "max_iter": 10}),
    ("random_projection", {"num_codebooks": 2, "codebook_size": 64, "proj_dim": 8}),
])
def test_utterances_quantized_together_equal_one_at_a_time(method, kw):
    """Codes of many utterances encoded as one array (with their lengths) equal, bit for bit,
    those of each utterance encoded alone, short utterances (1-15 frames) included: the
    pipeline's batched quantization (steps.encode, quantize_frames) relies on it."""
    x = mixture(n=1500, d=40, comps=40, seed=3)
    q = make_quantizer(method, seed=0, **kw).fit(x)
    lengths = [1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 15, 16, 17, 40, 100, 333, 4, 8, 13]
    z = mixture(n=sum(lengths), d=40, comps=40, seed=4)
    together = q.encode(z, lengths)
    starts = np.cumsum([0, *lengths])
    alone = np.concatenate([q.encode(z[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)])
    assert together.dtype == alone.dtype and np.array_equal(together, alone)
