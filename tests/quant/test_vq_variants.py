"""RVQ, additive VQ, NSVQ/STE-trained codebooks and the BEST-RQ random-projection quantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpq_units import QuantizerError, load_quantizer, make_quantizer, save_codebook
from rpq_units.quant.nsvq import GradientTrainer, nsvq_output
from rpq_units.quant.random_projection import RandomProjectionQuantizer
from rpq_units.quant.search import sum_codewords

N, D, K = 1200, 8, 16


def correlated(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    """Seeded correlated Gaussian frames (N, D) float32 with an offset mean."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(2.0, 0.2, d)[:, None]
    return (rng.normal(size=(n, d)) @ mix + 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return correlated()


def mse(x: np.ndarray, q) -> float:
    rec = q.decode(q.encode(x))
    return float(((x.astype(np.float64) - rec) ** 2).sum(1).mean())


FAST_TRAIN = {"epochs": 3, "batch_size": 256}
CASES = {
    "rvq": ("rvq", {"num_codebooks": 3, "codebook_size": K, "max_iter": 20}),
    "rvq_plain_kmeans": ("rvq", {"num_codebooks": 3, "codebook_size": K, "max_iter": 20,
                                 "progressive_dim": 0}),
    "rvq_beam": ("rvq", {"num_codebooks": 2, "codebook_size": K, "max_iter": 10, "beam_width": 2,
                         "progressive_dim": 2}),
    "rvq_nsvq": ("rvq", {"num_codebooks": 3, "codebook_size": K, "trainer": "nsvq",
                         "trainer_conf": FAST_TRAIN}),
    "rvq_ste": ("rvq", {"num_codebooks": 3, "codebook_size": K, "trainer": "ste",
                        "trainer_conf": FAST_TRAIN}),
    "avq": ("avq", {"num_codebooks": 2, "codebook_size": 8, "beam_width": 2, "num_iters": 1,
                    "max_iter": 10}),
    "nsvq_pq": ("pq", {"trainer": "nsvq", "max_iter": 1, "num_codebooks": 3, "codebook_size": K,
                       "trainer_conf": FAST_TRAIN}),
    "ste_rpq": ("rpq", {"trainer": "ste", "max_iter": 1, "num_codebooks": 3, "codebook_size": K,
                        "dims_ratio": 0.5, "trainer_conf": FAST_TRAIN}),
    "nsvq_kmeans": ("kmeans", {"trainer": "nsvq", "max_iter": 1, "num_codebooks": 1,
                               "codebook_size": K, "trainer_conf": FAST_TRAIN}),
    "ste_avq": ("avq", {"trainer": "ste", "num_codebooks": 2, "codebook_size": 8,
                        "beam_width": 2, "max_iter": 10, "trainer_conf": FAST_TRAIN}),
    "random_projection": ("random_projection", {"num_codebooks": 2, "codebook_size": 64,
                                                "proj_dim": 4, "stack_frames": 4}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_contract(case: str, x: np.ndarray, tmp_path) -> None:
    method, kw = CASES[case]
    q = make_quantizer(method, seed=3, **kw).fit(x)
    m = kw["num_codebooks"]
    codes = q.encode(x)
    assert isinstance(codes, np.ndarray) and codes.shape == (N, m) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < kw["codebook_size"]
    rec = q.decode(codes)
    assert rec.shape == (N, D) and rec.dtype == np.float32 and np.isfinite(rec).all()
    # torch in, torch out
    assert torch.equal(q.encode(torch.from_numpy(x)), torch.from_numpy(codes))
    # determinism: same seed and data, same codes
    q2 = make_quantizer(method, seed=3, **kw).fit(x)
    np.testing.assert_array_equal(q2.encode(x), codes)
    # save / load round trip through the public loader
    save_codebook(q, tmp_path / "cb.pt")
    assert not (tmp_path / "cb.pt.tmp").exists()
    q3 = load_quantizer(tmp_path / "cb.pt")
    assert q3.method == method and q3.config() == q.config()
    np.testing.assert_array_equal(q3.encode(x), codes)
    np.testing.assert_array_equal(q3.decode(codes), rec)
    with pytest.raises(QuantizerError, match="dimension"):
        q3.encode(x[:, :-1])


def test_rvq_error_never_increases_with_stages(x: np.ndarray) -> None:
    q = make_quantizer("rvq", num_codebooks=6, codebook_size=K, max_iter=20).fit(x)
    t = torch.from_numpy(x)
    codes = torch.from_numpy(q.encode(x))
    errs = [float(t.pow(2).sum(1).mean())]
    for m in range(1, 7):
        rec = sum_codewords(q.codebooks[:m], codes[:, :m])
        errs.append(float((t - rec).pow(2).sum(1).mean()))
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.5 * errs[1]
    assert errs[-1] == pytest.approx(mse(x, q), rel=1e-4)


def test_progressive_dim_kmeans_is_a_kmeans_solution(x: np.ndarray) -> None:
    from rpq_units.quant.lloyd import assign, fit_kmeans
    from rpq_units.quant.rvq import progressive_dim_kmeans

    t = torch.from_numpy(x)
    cent = progressive_dim_kmeans(t, K, steps=4, max_iter=30)
    codes, dist = assign(t.unsqueeze(0), cent.unsqueeze(0))
    # a Lloyd fixed point (up to the tolerance): each centroid is the mean of its cell
    for c in codes[0].unique()[:5]:
        torch.testing.assert_close(cent[c], t[codes[0] == c].mean(0), atol=0.05, rtol=0.0)
    _, plain = fit_kmeans(t, K, max_iter=30)
    assert float(dist.mean()) < 1.05 * float(plain)


def test_rvq_beam_no_worse_than_greedy(x: np.ndarray) -> None:
    greedy = make_quantizer("rvq", num_codebooks=4, codebook_size=K, max_iter=20).fit(x)
    from rpq_units.quant.rvq import residual_beam_encode

    t = torch.from_numpy(x)
    beam = residual_beam_encode(t, greedy.codebooks, beam_width=8)
    e_beam = float((t - sum_codewords(greedy.codebooks, beam)).pow(2).sum(1).mean())
    assert e_beam <= mse(x, greedy) * (1 + 1e-6)


def test_rvq_beam_training_auto_refits_the_better_mode(x: np.ndarray, caplog) -> None:
    """"all" and "best" beam training really differ; "auto" picks one of them on held-out
    frames and refits it on all frames, so its codebooks equal that mode's fit exactly."""
    import logging

    kw = {"num_codebooks": 2, "codebook_size": K, "max_iter": 15, "beam_width": 4}
    books = {bt: make_quantizer("rvq", beam_training=bt, **kw).fit(x).codebooks
             for bt in ("all", "best")}
    assert not torch.allclose(books["all"], books["best"])
    with caplog.at_level(logging.INFO, logger="rpq_units.quant.rvq"):
        auto = make_quantizer("rvq", **kw).fit(x).codebooks
    chosen = [m.split(": ")[-1] for m in caplog.messages if "held-out MSE" in m]
    assert chosen in (["all"], ["best"])
    assert torch.equal(auto, books[chosen[0]])
    with pytest.raises(QuantizerError, match="beam_training"):
        make_quantizer("rvq", beam_training="some")


def test_avq_beats_greedy_rvq_on_correlated_data() -> None:
    x, held_out = correlated(n=600), correlated(n=600, seed=1)
    rvq = make_quantizer("rvq", num_codebooks=3, codebook_size=8, max_iter=20).fit(x)
    avq = make_quantizer("avq", num_codebooks=3, codebook_size=8, beam_width=4, num_iters=3,
                         max_iter=20).fit(x)
    assert mse(x, avq) <= mse(x, rvq)
    assert mse(held_out, avq) <= mse(held_out, rvq)


def test_nsvq_output_has_the_hard_quantization_error_norm() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 7, generator=g)
    q = (z + 0.3 * torch.randn(500, 7, generator=g)).requires_grad_(True)
    out = nsvq_output(z, q, torch.Generator().manual_seed(1))
    torch.testing.assert_close((out - z).norm(dim=1), (q - z).norm(dim=1), rtol=1e-5, atol=1e-6)
    # the noise direction is random, not the quantization error's direction
    cos = torch.nn.functional.cosine_similarity((out - z).detach(), (q - z).detach(), dim=1)
    assert float(cos.abs().mean()) < 0.6
    # the gradient reaches the codeword through ||z - q||
    (out - z).pow(2).sum().backward()
    torch.testing.assert_close(q.grad, 2 * (q - z).detach())


def test_dead_codewords_are_replaced_by_perturbed_copies() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=g)
    books = torch.randn(1, 16, 4, generator=g)
    books[0, 8:] += 100.0  # half the codewords are far away: nobody picks them
    trainer = GradientTrainer(method="nsvq", epochs=2, batch_size=200, replace_every=5, seed=0)
    trained = trainer.train_product(x.unsqueeze(0), books)[0]
    assert trainer.replaced >= 8
    assert float(trained.abs().max()) < 20.0  # the far codewords moved into the data
    pair = torch.cdist(trained, trained) + torch.eye(16) * 1e9
    assert float(pair.min()) > 1e-3  # copies were perturbed, none coincides with another
    # direct check of one replacement round
    usage = torch.tensor([[5.0, 0.0, 3.0, 0.0]])
    b = torch.tensor([[[0.0, 0.0], [9.0, 9.0], [1.0, 1.0], [7.0, 7.0]]])
    n = GradientTrainer(method="ste", replace_noise=0.1).replace_dead(
        b, usage, torch.tensor([2.0]), torch.Generator().manual_seed(0)
    )
    assert n == 2
    for i in (1, 3):
        src = torch.cdist(b[0, i : i + 1], b[0, [0, 2]]).min()
        assert 1e-4 < float(src) < 1.0  # near a used codeword, but not an exact copy


def test_gradient_training_lowers_the_error(x: np.ndarray) -> None:
    for trainer in ("nsvq", "ste"):
        seeds = make_quantizer("pq", trainer=trainer, max_iter=1, num_codebooks=2,
                               codebook_size=K, trainer_conf={"epochs": 0}).fit(x)
        trained = make_quantizer("pq", trainer=trainer, max_iter=1, num_codebooks=2,
                                 codebook_size=K, trainer_conf={"epochs": 4}).fit(x)
        assert mse(x, trained) < mse(x, seeds)


def test_former_nsvq_and_ste_methods_are_pq_rpq_kmeans_with_a_trainer(x: np.ndarray) -> None:
    """``method: nsvq|ste`` with ``base``/``base_conf``/``init_iter`` (configs of earlier
    versions) builds the structure with that trainer: same config, same codes."""
    old = make_quantizer("ste", base="rpq", num_codebooks=2, codebook_size=K, init_iter=2,
                         base_conf={"dims_ratio": 0.5}, trainer_conf={"epochs": 1}, seed=1)
    new = make_quantizer("rpq", trainer="ste", num_codebooks=2, codebook_size=K, max_iter=2,
                         dims_ratio=0.5, trainer_conf={"epochs": 1}, seed=1)
    assert old.method == "rpq" and old.config() == new.config()
    np.testing.assert_array_equal(old.fit(x).encode(x), new.fit(x).encode(x))
    assert make_quantizer("nsvq", num_codebooks=2, codebook_size=K).method == "pq"  # base: pq


def test_ste_trained_additive_codebooks(x: np.ndarray) -> None:
    """The additive structure with the STE trainer: from the same residual initialisation,
    gradient steps through the free-order beam search lower the error, and every codebook
    moves (each learns from x minus the other codewords)."""
    kw = {"num_codebooks": 2, "codebook_size": 8, "beam_width": 4, "max_iter": 10, "seed": 2}
    init = make_quantizer("avq", trainer="ste", trainer_conf={"epochs": 0}, **kw).fit(x)
    ste = make_quantizer("avq", trainer="ste", trainer_conf={"epochs": 6, "lr": 1e-2}, **kw).fit(x)
    assert mse(x, ste) < mse(x, init)
    for m in range(2):
        assert not torch.equal(ste.codebooks[m], init.codebooks[m])
    assert ste.config()["trainer"] == "ste" and ste.config()["trainer_conf"]["epochs"] == 6


def test_random_projection_matches_hand_computed_case() -> None:
    # D = 1, S = 2 stacked frames, p = 2, K = 3, mean 1, std 2.
    q = RandomProjectionQuantizer(num_codebooks=1, codebook_size=3, proj_dim=2, stack_frames=2)
    q.dim = 1
    q._load_state({
        "mean": torch.tensor([1.0]), "std": torch.tensor([2.0]),
        "projection": torch.tensor([[[1.0, 1.0], [1.0, -1.0]]]),
        "codebook": torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]]),
        "scale": torch.tensor([1.0]),
    })
    x = np.array([[3.0], [5.0], [-1.0]], dtype=np.float32)
    # z = (x - 1) / 2 = [1, 2, -1]; stacked windows [1, 2], [2, -1], [-1, -1] (last repeated)
    # P s = [3, -1], [1, 3], [-2, 0]; after L2 normalisation the nearest unit codeword is the
    # one with the largest dot product: (3, -1, -3) -> 0, (1, 3, -1) -> 1, (-2, 0, 2) -> 2.
    np.testing.assert_array_equal(q.encode(x), [[0], [1], [2]])


def test_random_projection_matches_its_formula_in_numpy() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 5)) * [1, 2, 3, 4, 5] + 7).astype(np.float32)
    q = make_quantizer("random_projection", num_codebooks=2, codebook_size=32, proj_dim=3,
                       stack_frames=4, seed=1).fit(x)
    mean, std = x.mean(0), x.std(0, ddof=1)
    z = (x - mean) / std
    idx = np.minimum(np.arange(300)[:, None] + np.arange(4), 299)
    s = z[idx].reshape(300, 20)
    for m in range(2):
        p = q.projection[m].numpy().astype(np.float64)
        c = q.codebook[m].numpy().astype(np.float64)
        # frozen Xavier-uniform projection and unit-norm codebook
        assert np.abs(p).max() <= np.sqrt(6.0 / (20 + 3)) + 1e-6
        np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
        y = s @ p.T
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        want = ((y[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        assert (q.encode(x)[:, m] == want).mean() > 0.99  # float32 vs float64 near-ties


def test_random_projection_decode_is_a_deterministic_pre_image() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    q = make_quantizer("random_projection", num_codebooks=3, codebook_size=128, proj_dim=4,
                       stack_frames=4).fit(x)
    codes = q.encode(x)
    a, b = q.decode(codes), q.decode(codes.copy())
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert float(((a - x) ** 2).sum(1).mean()) < 3.0 * float(((x - x.mean(0)) ** 2).sum(1).mean())
    np.testing.assert_array_equal(a, b)
    # one codebook, no stacking, p <= D: the projection has full row rank, so the
    # pseudo-inverse pre-image projects exactly onto the chosen codeword and re-encodes to it
    # (up to float32 near-ties between codewords)
    q1 = make_quantizer("random_projection", num_codebooks=1, codebook_size=32, proj_dim=3,
                        stack_frames=1).fit(x)
    c1 = q1.encode(x)
    c2 = q1.encode(q1.decode(c1))
    assert (c2 == c1).mean() > 0.95
    for m in range(1):
        torch.testing.assert_close(q1.codebook[m][c2[:, m]], q1.codebook[m][c1[:, m]],
                                   atol=1e-3, rtol=0)


def test_bad_options() -> None:
    with pytest.raises(QuantizerError, match="base"):
        make_quantizer("nsvq", base="avq")
    with pytest.raises(QuantizerError, match="trainer"):
        make_quantizer("rvq", trainer="adam")
    with pytest.raises(QuantizerError, match="unknown trainer 'lloyd'"):
        make_quantizer("random_projection", trainer="lloyd")
    with pytest.raises(QuantizerError, match="trainer_conf"):
        make_quantizer("pq", trainer_conf={"epochs": 1})
    with pytest.raises(TypeError, match="epoch"):
        make_quantizer("pq", trainer="nsvq", trainer_conf={"epoch": 1})
    with pytest.raises(QuantizerError, match="beam_width"):
        make_quantizer("avq", beam_width=0)
