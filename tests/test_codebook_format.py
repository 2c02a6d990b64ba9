"""Codebook files written by earlier versions keep loading and give the codes they gave then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rpq_units import load_quantizer

V1 = Path(__file__).parent / "data" / "codebooks_v1"
EXPECTED = torch.load(V1 / "expected_codes.pt", weights_only=True)
NAMES = sorted(p.stem for p in V1.glob("*.pt") if p.stem != "expected_codes")


def test_every_v1_file_is_checked():
    assert set(NAMES) == set(EXPECTED) - {"x", "lengths"}
    assert len(NAMES) >= 10


@pytest.mark.parametrize("name", NAMES)
def test_v1_codebook_loads_and_encodes_as_before(name, tmp_path):
    q = load_quantizer(V1 / f"{name}.pt")
    x, lengths = EXPECTED["x"], EXPECTED["lengths"].tolist()
    want = EXPECTED[name].long()
    codes = q.encode(x, lengths)
    assert torch.equal(codes, want)
    x_hat = q.decode(codes, lengths)
    assert x_hat.shape == x.shape and bool(torch.isfinite(x_hat).all())
    # saved again by today's code, it still loads and codes the same
    q.save(tmp_path / "again.pt")
    assert torch.equal(load_quantizer(tmp_path / "again.pt").encode(x, lengths), want)
