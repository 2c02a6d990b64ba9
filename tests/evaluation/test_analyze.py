"""Codebook analysis: mse equals the decode(encode(x)) distortion, usage, perplexity, rho."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rpq_units import QuantizerError, load_quantizer, make_quantizer, save_codebook
from rpq_units.evaluation.analyze import (
    RHO_DEFINITIONS,
    analyze,
    bound_holds,
    code_stats,
    dim_correlation,
    ensemble_terms,
    error_correlation,
    rho_codes,
    rho_energy,
    rho_ensemble,
    rho_shared,
)
from rpq_units.pipeline.shards import FeatureShardWriter, write_feats_json
from rpq_units.quant.base import reconstruct, reconstruction_mse

K = 8


def correlated_frames(n=1500, d=16, seed=0) -> np.ndarray:
    """Frames with correlated dimensions (a low-rank mixture plus noise)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    mix = rng.normal(size=(4, d))
    return (z @ mix + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def x():
    return correlated_frames()


@pytest.fixture(scope="module")
def fitted(x):
    out = {}
    for method, kw in (
        ("kmeans", {}),
        ("pq", {"num_codebooks": 4}),
        ("rpq", {"num_codebooks": 4, "dims_ratio": 0.5}),
    ):
        out[method] = make_quantizer(method, codebook_size=K, seed=0, max_iter=30, **kw).fit(x)
    return out


def write_feats(d, x, dim=None):
    with FeatureShardWriter(d, 0) as w:
        for i in range(0, x.shape[0], 300):
            w.add(f"utt{i:05d}", x[i : i + 300])
    write_feats_json(
        d,
        {"dim": dim or x.shape[1], "nshard": 1, "upstream": "toy", "layer": 3, "frame_rate": 50.0},
    )


@pytest.mark.parametrize("method", ["kmeans", "pq", "rpq"])
def test_mse_equals_decode_encode_distortion(fitted, x, tmp_path, method):
    q = fitted[method]
    direct = float(((x.astype(np.float64) - q.decode(q.encode(x))) ** 2).sum(1).mean())
    assert reconstruction_mse(q, x) == pytest.approx(direct, rel=1e-6)
    assert q.distortion(x) == pytest.approx(direct, rel=1e-5)
    # under a memory budget of 100 frames the blocks are smaller: the same codes and errors
    codes, sq = reconstruct(q, x)
    codes_b, sq_b = reconstruct(q, x, memory_budget=4 * x.shape[1] * 100)
    np.testing.assert_array_equal(codes_b, codes)
    np.testing.assert_allclose(sq_b, sq, rtol=1e-6)
    assert x.shape[0] > 100
    save_codebook(q, tmp_path / "cb.pt")
    write_feats(tmp_path / "feats", x)
    rep = analyze(codebook=tmp_path / "cb.pt", feats_dir=tmp_path / "feats", out_dir=tmp_path / "a")
    assert rep["mse"] == pytest.approx(direct, rel=1e-6)
    assert rep["mse_per_dim"] == pytest.approx(direct / x.shape[1], rel=1e-6)
    assert 0 < rep["relative_mse"] < 1
    m = q.num_codebooks
    assert rep["bits_per_frame"] == pytest.approx(m * math.log2(K))
    assert rep["bits_per_second"] == pytest.approx(50 * m * math.log2(K))
    assert len(rep["per_codebook"]) == m
    on_disk = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert on_disk["mse"] == rep["mse"]
    assert (tmp_path / "a" / "dim_correlation.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "a" / "analysis.txt").read_text()
    assert "mse" in text
    for name in RHO_DEFINITIONS:  # every rho reported by its definition's name
        assert f"rho {name}" in text
    assert ("bound           eps" in text) == (method == "rpq")


def test_code_stats_known_histogram():
    codes = np.array([[0, 1], [0, 1], [1, 1], [2, 1]])  # stream 0: 1/2,1/4,1/4; stream 1: all 1
    s = code_stats(codes, 4)
    assert s[0]["usage"] == 0.75 and s[0]["used"] == 3
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert s[0]["perplexity"] == pytest.approx(math.exp(h))
    assert s[0]["entropy_bits"] == pytest.approx(1.5)
    assert s[1]["usage"] == 0.25 and s[1]["perplexity"] == pytest.approx(1.0)


def test_rho_definitions(fitted, x):
    km = error_correlation(fitted["kmeans"], x, fitted["kmeans"].encode(x))
    assert km["rho"] is None and km["rho_shared"] is None  # one codebook
    pq = error_correlation(fitted["pq"], x, fitted["pq"].encode(x))
    assert pq["rho_shared"] is None and pq["shared_dims"] == 0  # disjoint blocks
    assert -1 <= pq["rho"] <= 1
    pairs = np.array(pq["rho_pairs"])
    assert pairs.shape == (4, 4) and np.allclose(np.diag(pairs), 1) and np.allclose(pairs, pairs.T)
    assert pq["rho"] == pytest.approx(pairs[np.triu_indices(4, 1)].mean(), abs=1e-6)
    q = fitted["rpq"]
    rp = error_correlation(q, x, q.encode(x))
    assert rp["shared_dims"] > 0 and -1 <= rp["rho_shared"] <= 1 and -1 <= rp["rho"] <= 1
    # rho_shared by hand for the first pair that shares a dimension
    subsets = [s.numpy() for s in q.subspace_indices()]
    codes = q.encode(x)
    recs = [r.numpy() for r in q.sub_decode(codes)]
    vals = []
    for i in range(4):
        for j in range(i + 1, 4):
            for d in np.intersect1d(subsets[i], subsets[j]):
                ei = x[:, d] - recs[i][:, list(subsets[i]).index(d)]
                ej = x[:, d] - recs[j][:, list(subsets[j]).index(d)]
                vals.append(np.corrcoef(ei, ej)[0, 1])
    assert rp["rho_shared"] == pytest.approx(float(np.mean(vals)), abs=1e-5)


def test_rho_of_identical_sub_quantizers_is_one():
    """dims_ratio=1 puts all dims in every sub-vector; with the second codebook made a copy of
    the first, the two sub-quantizers are identical and their errors perfectly correlated."""
    x = correlated_frames(n=600, d=6, seed=1)
    q = make_quantizer(
        "rpq", num_codebooks=2, codebook_size=K, dims_ratio=1.0, seed=0, max_iter=20
    ).fit(x)
    q.codebooks[1] = q.codebooks[0]
    codes = q.encode(x)
    np.testing.assert_array_equal(codes[:, 0], codes[:, 1])
    r = error_correlation(q, x, codes)
    assert r["rho"] == pytest.approx(1.0) and r["rho_shared"] == pytest.approx(1.0)
    assert r["shared_dims"] == 6
    assert set(r["rho_definitions"]) == set(RHO_DEFINITIONS)
    for name, v in r["rho_definitions"].items():
        assert v == pytest.approx(1.0), name
    # the ensemble bound eps_rpq >= rho * eps_sub is tight: equality at rho = 1
    b = r["ensemble_bound"]
    assert b["holds"] and b["eps"] == pytest.approx(b["eps_sub"], rel=1e-9)
    assert b["eps_pred"] == pytest.approx(b["eps"], rel=1e-9)


def test_rho_of_independent_sub_vectors_is_zero():
    """PQ on frames whose blocks are independent: the sub-quantizers' errors and codes are
    independent, so rho (energy, codes) is 0 up to sampling noise (about 1/sqrt(N))."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 8)).astype(np.float32)
    q = make_quantizer("pq", num_codebooks=4, codebook_size=K, seed=0, max_iter=20).fit(x)
    r = error_correlation(q, x, q.encode(x))
    assert abs(r["rho_definitions"]["energy"]) < 0.04
    assert abs(r["rho_definitions"]["codes"]) < 0.01
    assert r["rho_definitions"]["shared"] is None and r["rho_definitions"]["ensemble"] is None


@pytest.mark.parametrize("r", [0.0, 0.6, 1.0])
def test_rho_definitions_on_constructed_errors(r):
    """Two sub-quantizers covering the same 3 dims with errors e2 = r e1 + sqrt(1 - r^2) z
    (Gaussian, zero mean, unit variance): shared and ensemble rho are r, energy rho is the
    correlation of two chi-square(3) energies, r^2."""
    rng = np.random.default_rng(0)
    e1 = rng.normal(size=(200_000, 3))
    e2 = r * e1 + math.sqrt(1 - r * r) * rng.normal(size=e1.shape)
    subsets = [np.arange(3), np.arange(3)]
    assert rho_shared([e1, e2], subsets) == (pytest.approx(r, abs=0.01), 3)
    terms = ensemble_terms([e1, e2], subsets, 3)
    assert rho_ensemble(terms) == pytest.approx(r, abs=0.01)
    assert rho_energy([e1, e2])[0] == pytest.approx(r * r, abs=0.01)
    # the identity behind the bound: the mean of the two errors has s2 (rho + (1 - rho) / 2)
    mean_err = ((e1 + e2) / 2) ** 2
    np.testing.assert_allclose(terms["pred"], mean_err.mean(0), rtol=1e-9)


def test_ensemble_terms_cover_and_uncovered_dims():
    rng = np.random.default_rng(1)
    e = [rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))]
    t = ensemble_terms(e, [np.array([0, 1]), np.array([1, 2])], 4)
    np.testing.assert_array_equal(t["cover"], [1, 2, 1, 0])
    assert np.isnan(t["rho"][[0, 2, 3]]).all() and np.isfinite(t["rho"][1])
    assert t["pred"][0] == pytest.approx((e[0][:, 0] ** 2).mean()) and np.isnan(t["pred"][3])


def test_rho_codes_known_cases():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 16, 50_000)
    perm = rng.permutation(16)
    assert rho_codes(np.stack([a, perm[a]], 1), 16) == pytest.approx(1.0)  # relabelled copy
    b = rng.integers(0, 16, 50_000)
    assert rho_codes(np.stack([a, b], 1), 16) == pytest.approx(0.0, abs=0.005)
    assert rho_codes(a[:, None], 16) is None


def test_rpq_error_equals_ensemble_decomposition(fitted, x):
    """RPQ's decoder averages the covering sub-codewords, so its MSE is exactly
    sum_d s2_d (rho_d + (1 - rho_d) / c_d) (uncovered dims: their own error), and the bound
    eps_rpq >= rho_ensemble * eps_sub holds."""
    q = fitted["rpq"]
    r = error_correlation(q, x, q.encode(x))
    b = r["ensemble_bound"]
    assert b["eps"] == pytest.approx(reconstruction_mse(q, x), rel=1e-5)
    assert b["eps_pred"] == pytest.approx(b["eps"], rel=1e-9)
    assert b["holds"] and r["rho_ensemble"] < 1
    assert b["eps"] >= r["rho_ensemble"] * b["eps_sub"]


def test_bound_holds():
    assert bound_holds(1.0, 0.5, 2.0) is True and bound_holds(0.9, 0.5, 2.0) is False
    assert bound_holds(1.0, None, 2.0) is None


def test_dim_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 1))
    x = np.hstack([a, -2 * a, rng.normal(size=(500, 1)), np.ones((500, 1))]).astype(np.float32)
    c = dim_correlation(x)
    assert c.shape == (4, 4) and np.allclose(np.diag(c), 1)
    assert c[0, 1] == pytest.approx(-1.0, abs=1e-6) and abs(c[0, 2]) < 0.2 and c[0, 3] == 0


def test_dimension_mismatch_is_a_clear_error(fitted, x, tmp_path):
    save_codebook(fitted["pq"], tmp_path / "cb.pt")
    write_feats(tmp_path / "feats", np.ascontiguousarray(x[:, :10]))
    with pytest.raises(QuantizerError, match="trained on 16-dim features but .* holds 10-dim"):
        analyze(codebook=tmp_path / "cb.pt", feats_dir=tmp_path / "feats", out_dir=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert load_quantizer(tmp_path / "cb.pt").dim == 16
