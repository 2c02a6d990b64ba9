"""Mixed-precision upstream forward: ``FeatureExtractor(autocast="bf16")`` and
``rpq-units dump_feats/encode --autocast bf16`` stay close to fp32 on a WavLM-shaped model."""

from __future__ import annotations

import numpy as np
import pytest

from rpq_units import cli
from rpq_units.pipeline.features import FeatureError, FeatureExtractor
from rpq_units.pipeline.shards import FeatureShards


def test_bf16_features_close_to_fp32(tiny_wavlm):
    wav = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    f32 = FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm, layer=2)
    bf16 = FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm, layer=2, autocast="bf16")
    a, b = f32.extract(wav), bf16.extract(wav)
    assert a.shape == b.shape and b.dtype == np.float32
    rel = np.linalg.norm(b - a) / np.linalg.norm(a)
    assert 0 < rel < 0.05  # bf16 really ran (not bit-equal) and stays close
    assert bf16.describe()["autocast"] == "bf16" and f32.describe()["autocast"] is None


def test_bad_autocast_named():
    with pytest.raises(FeatureError, match="autocast must be one of"):
        FeatureExtractor(upstream="fbank_no_cmvn", autocast="fp8")


def test_cli_autocast_dump_feats(tiny_data, tiny_wavlm, tmp_path):
    """--autocast bf16 with length-sorted batches: the same utterances and frame counts as
    fp32 one at a time, features within bf16 error, recorded in feats.json."""
    base = ["dump_feats", "--portion", "1", "--data_dir", str(tiny_data), "--upstream", "wavlm_local",
            "--upstream_ckpt", str(tiny_wavlm), "--layer", "2"]
    assert cli.main([*base, "--out_dir", str(tmp_path / "f32")]) == 0
    assert cli.main([*base, "--out_dir", str(tmp_path / "bf16"), "--autocast", "bf16",
                     "--batch_size", "3"]) == 0
    a, b = FeatureShards(tmp_path / "f32"), FeatureShards(tmp_path / "bf16")
    assert a.ids == b.ids and a.lens == b.lens
    assert b.info["autocast"] == "bf16"
    for (k, fa), (_, fb) in zip(a.utterances(), b.utterances(), strict=True):
        # padded batches change the last frames; compare the rest
        rel = np.linalg.norm(fb[:-3] - fa[:-3]) / np.linalg.norm(fa[:-3])
        assert rel < 0.1, k
