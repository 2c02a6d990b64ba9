"""Codebook files written by earlier versions keep loading and give the codes they gave then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from rpq_units import load_quantizer, make_quantizer, save_codebook

V1 = Path(__file__).parents[1] / "data" / "codebooks_v1"
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
    save_codebook(q, tmp_path / "again.pt")
    assert torch.equal(load_quantizer(tmp_path / "again.pt").encode(x, lengths), want)


ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.glob("conf/units/*.yaml")) + sorted(ROOT.glob("egs/*/conf/units/*.yaml"))
V1_CONFIGS = sorted((Path(__file__).parents[1] / "data" / "conf_units_v1").glob("*.yaml"))


def _build(path: Path):
    cfg = yaml.safe_load(path.read_text())
    return make_quantizer(cfg.pop("method"), **cfg)


@pytest.mark.parametrize("path", CONFIGS + V1_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_units_config_builds_a_quantizer(path):
    q = _build(path)
    assert q.trainer in q.trainers


@pytest.mark.parametrize("path", V1_CONFIGS, ids=lambda p: p.name)
def test_v1_config_means_what_todays_config_of_that_name_means(path):
    """conf/units/*.yaml as written before the ``trainer:`` key (``method: nsvq`` with
    ``base: pq``, RVQ's ``trainer: lloyd`` meaning progressive k-means) build the quantizer
    that today's file of the same name builds."""
    assert _build(path).config() == _build(ROOT / "conf" / "units" / path.name).config()
