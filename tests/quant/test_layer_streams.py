"""Units of several layers side by side (``method: layers``): each layer's slice of a frame is
fit, encoded and decoded by its own quantizer, exactly as that quantizer alone would do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpq_units.errors import QuantizerError
from rpq_units.pipeline.codebooks import load_quantizer, save_codebook
from rpq_units.quant.base import make_quantizer, reconstruction_mse


def _frames(n=2500, dims=(8, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    # two "layers" with different scales, so that a slice mix-up shows in the codes
    return torch.cat([torch.randn(n, d, generator=g) * (i + 1) for i, d in enumerate(dims)], 1)


@pytest.mark.parametrize("inner,conf", [("kmeans", {"codebook_size": 16}),
                                        ("pq", {"num_codebooks": 2, "codebook_size": 16}),
                                        ("rpq", {"num_codebooks": 2, "codebook_size": 16, "dims_ratio": 0.5})])
def test_each_layer_is_its_own_quantizer(inner, conf):
    x = _frames()
    q = make_quantizer("layers", inner=inner, inner_conf=conf, layer_dims=[8, 12], seed=5).fit(x)
    alone = [make_quantizer(inner, seed=5 + i, **conf).fit(xs)
             for i, xs in enumerate((x[:, :8], x[:, 8:]))]
    m = alone[0].num_codebooks
    assert (q.num_codebooks, q.codebook_size, q.dim) == (2 * m, 16, 20)
    codes = q.encode(x)
    want = torch.cat([alone[0].encode(x[:, :8]), alone[1].encode(x[:, 8:])], 1)
    assert torch.equal(codes, want)
    rec = q.decode(codes)
    assert torch.allclose(rec, torch.cat([alone[0].decode(codes[:, :m]),
                                          alone[1].decode(codes[:, m:])], 1))
    # the error is the layers' errors added up
    total = reconstruction_mse(q, x.numpy())
    parts = [reconstruction_mse(a, xs.numpy()) for a, xs in zip(alone, (x[:, :8], x[:, 8:]), strict=True)]
    assert total == pytest.approx(sum(parts), rel=1e-5)


def test_codebook_file_round_trip(tmp_path):
    x = _frames(dims=(6, 6))
    q = make_quantizer("layers", inner="pq", layer_dims=[6, 6],
                       inner_conf={"num_codebooks": 3, "codebook_size": 8}).fit(x)
    q.meta = {"layer": [1, 2]}
    save_codebook(q, tmp_path / "cb.pt")
    q2 = load_quantizer(tmp_path / "cb.pt")
    assert q2.method == "layers" and q2.inner == "pq" and q2.layer_dims == [6, 6]
    assert (q2.num_codebooks, q2.codebook_size) == (6, 8) and q2.meta == {"layer": [1, 2]}
    assert torch.equal(q2.encode(x), q.encode(x))
    assert torch.equal(q2.decode(q.encode(x)), q.decode(q.encode(x)))
    # a numpy input comes back as numpy, as for every quantizer
    assert isinstance(q2.encode(x.numpy()), np.ndarray)


def test_bad_settings_say_what_is_wrong():
    with pytest.raises(QuantizerError, match="two layers or more"):
        make_quantizer("layers", inner="kmeans", layer_dims=[8])
    with pytest.raises(QuantizerError, match="cannot itself be 'layers'"):
        make_quantizer("layers", inner="layers", layer_dims=[4, 4])
    with pytest.raises(QuantizerError, match="not in inner_conf"):
        make_quantizer("layers", inner="kmeans", layer_dims=[4, 4], inner_conf={"seed": 1})
    with pytest.raises(QuantizerError, match="unknown quantization method"):
        make_quantizer("layers", inner="nope", layer_dims=[4, 4])
    q = make_quantizer("layers", inner="kmeans", layer_dims=[8, 8], inner_conf={"codebook_size": 4})
    with pytest.raises(QuantizerError, match="dimension 12"):
        q.fit(_frames(dims=(8, 4)))
    q.fit(_frames(dims=(8, 8)))
    with pytest.raises(QuantizerError, match="dimension 12"):
        q.encode(_frames(dims=(8, 4)))
    with pytest.raises(QuantizerError, match=r"expected shape \(N, 2\)"):
        q.decode(torch.zeros(3, 1, dtype=torch.long))
