"""s3prl feature path on a tiny random-weight ``wavlm_local`` checkpoint and on ``fbank``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from asset_helpers import make_tiny_hubert_checkpoint, sine_speech

from rpq_units.pipeline.features import FeatureError, FeatureExtractor, available_upstreams


@pytest.fixture(scope="module")
def wavlm_last(tiny_wavlm):
    return FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=-1)


def test_compat_lets_s3prl_upstreams_import():
    import torchaudio

    from rpq_units.pipeline import s3prl_compat

    s3prl_compat.install()
    # byol_s calls torchaudio.set_audio_backend at import time (removed in torchaudio 2.9)
    import s3prl.upstream.byol_s.hubconf  # noqa: F401

    with pytest.raises(RuntimeError, match="removed in torchaudio"):
        torchaudio.sox_effects.apply_effects_tensor(torch.zeros(1, 10), 16000, [])
    assert "wavlm_local" in available_upstreams() and "fbank" in available_upstreams()


@pytest.mark.slow
def test_s3prl_hub_imports_after_compat():
    """``import s3prl.hub`` (every upstream; most of a minute on a small CPU)."""
    code = (
        "import rpq_units.pipeline.s3prl_compat\nimport s3prl.hub as h\nassert 'wavlm_large' in h.options()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=600)


def test_wavlm_local_layers_dims_and_frame_rate(tiny_wavlm, wavlm_last):
    fx = wavlm_last
    assert fx.num_layers == 4  # 3 transformer layers: input of each + encoder output
    assert fx.layer == 3 and fx.dim == 32 and fx.stride == 320 and fx.frame_rate == 50.0
    for n in (16000, 12345, 800, 401):
        f = fx.extract(sine_speech(n / 16000))
        assert f.shape == ((n - 1) // 320 + 1, 32) and f.dtype == np.float32
        assert abs(f.shape[0] - n / 320) < 1
        assert np.isfinite(f).all()
    first = FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=0)
    w = sine_speech(1.0)
    assert not np.allclose(first.extract(w), fx.extract(w))  # layers differ
    same = FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=3)
    np.testing.assert_array_equal(same.extract(w), fx.extract(w))  # -1 is the last


def test_chunked_long_utterance_matches_unchunked(tiny_wavlm, wavlm_last):
    w = sine_speech(4.3, seed=5)
    # CNN + positional-conv layer: local, so windows stitched at frame boundaries are exact
    full0 = FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=0)
    chunk0 = FeatureExtractor(
        upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=0, chunk_s=1.5, overlap_s=0.5
    )
    assert len(chunk0._windows(w.size)) > 3
    a, b = full0.extract(w), chunk0.extract(w)
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, atol=1e-4)
    # transformer output: limited context across window edges, close but not identical
    chunk = FeatureExtractor(
        upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=-1, chunk_s=1.5, overlap_s=0.5
    )
    a, b = wavlm_last.extract(w), chunk.extract(w)
    assert a.shape == b.shape
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_fbank_chunked_is_exact_and_100hz():
    w = sine_speech(5.0, seed=1)
    full = FeatureExtractor(upstream="fbank")
    assert full.dim == 240 and full.frame_rate == 100.0 and full.num_layers == 1
    a = full.extract(w)
    assert a.shape == (500, 240)
    b = FeatureExtractor(upstream="fbank", chunk_s=1.5, overlap_s=0.5).extract(w)
    np.testing.assert_allclose(b, a, atol=1e-5)  # utterance CMVN over the whole utterance


def test_batch_matches_shapes_and_long_items_are_chunked(tiny_wavlm):
    fx = FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=1, chunk_s=2.0)
    wavs = [sine_speech(s, seed=i) for i, s in enumerate((0.5, 1.1, 3.2))]
    batch = fx.extract_batch(wavs)
    single = [fx.extract(w) for w in wavs]
    assert [b.shape for b in batch] == [s.shape for s in single]
    np.testing.assert_array_equal(batch[2], single[2])  # the long one alone, chunked
    # padded items: the frames well inside agree closely
    assert np.abs(batch[1][:10] - single[1][:10]).max() < 0.5 * np.abs(single[1]).max()


def test_hubert_local(tmp_path):
    ckpt = make_tiny_hubert_checkpoint(tmp_path / "hubert.pt", layers=2, dim=32)
    fx = FeatureExtractor(upstream="hubert_local", ckpt=str(ckpt), layer=-1)
    assert fx.num_layers == 3 and fx.dim == 32 and fx.frame_rate == 50.0
    assert fx.extract(sine_speech(1.0)).shape == (50, 32)


def test_errors(tiny_wavlm, tmp_path):
    with pytest.raises(FeatureError, match="unknown s3prl upstream 'wavlm_larg'.*wavlm_large"):
        FeatureExtractor(upstream="wavlm_larg")
    with pytest.raises(FeatureError, match="available_upstreams"):
        FeatureExtractor(upstream="no_such_model")
    with pytest.raises(FeatureError, match="needs a checkpoint"):
        FeatureExtractor(upstream="wavlm_local")
    with pytest.raises(FeatureError, match="no such checkpoint"):
        FeatureExtractor(upstream="wavlm_local", ckpt=str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(FeatureError, match="cannot load s3prl upstream wavlm_local"):
        FeatureExtractor(upstream="wavlm_local", ckpt=str(bad))
    with pytest.raises(FeatureError, match="layer 4 out of range.*4 hidden states"):
        FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=4)
    fx = FeatureExtractor(upstream="fbank")
    with pytest.raises(FeatureError, match="empty"):
        fx.extract(np.zeros(0, np.float32))
    with pytest.raises(FeatureError, match="NaN"):
        fx.extract(np.full(1600, np.nan, np.float32))
    with pytest.raises(FeatureError, match="1-D"):
        fx.extract(np.zeros((2, 1600), np.float32))


UPSTREAM_CONFS = sorted((Path(__file__).resolve().parents[2] / "egs").glob("mini_*/conf/upstream/*.yaml"))


@pytest.mark.parametrize("conf", UPSTREAM_CONFS, ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_demo_upstream_configs_load_with_their_frame_rate(conf):
    """Every feature config the demo ships loads through s3prl's ``baseline_local`` entry and
    gives 80 log-mel dims at the frame rate its ``hop_ms`` names (50/s for mel_20ms, 25/s for
    mel_40ms)."""
    import yaml

    hop_ms = yaml.safe_load(conf.read_text())["hop_ms"]
    fx = FeatureExtractor(upstream="baseline_local", ckpt=str(conf))
    assert fx.frame_rate == pytest.approx(1000 / hop_ms)
    f = fx.extract(sine_speech(2.0))
    assert f.shape[1] == 80
    assert abs(f.shape[0] - 2000 / hop_ms) <= 2


def test_upstream_built_without_random_init(tiny_wavlm, monkeypatch):
    """The upstream is built with the random initialisers switched off and the checkpoint
    memory-mapped: the features equal those of a model built with its own initialisation,
    and the initialisers are restored afterwards."""
    import rpq_units.pipeline.features as features

    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    checks: list[bool] = []
    real = features._all_loaded

    def spy(model, loaded):
        checks.append(real(model, loaded))
        return checks[-1]

    monkeypatch.setattr(features, "_all_loaded", spy)
    fast = FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=2).extract(wav)
    assert checks == [True]  # every weight came from the checkpoint: no rebuild
    assert torch.nn.init.normal_.__name__ == "normal_" and torch.Tensor.normal_.__name__ == "normal_"
    monkeypatch.setattr(features, "_all_loaded", lambda model, loaded: False)  # the rebuild path
    slow = FeatureExtractor(upstream="wavlm_local", ckpt=str(tiny_wavlm), layer=2).extract(wav)
    np.testing.assert_array_equal(fast, slow)
    # a module whose second layer is never loaded is detected
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    with features._load_without_init() as loaded:
        net[0].load_state_dict(torch.nn.Linear(3, 3).state_dict())
    assert not real(net, loaded) and real(net[0], loaded)
