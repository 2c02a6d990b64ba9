"""BEST-RQ's stacked windows stay inside one utterance: fit statistics, encode, decode, the
analysis and the command-line fit all take utterance lengths and never stack frames of two
utterances into one window."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rpq_units import QuantizerError, load_quantizer, make_quantizer
from rpq_units.cli import main
from rpq_units.evaluation.analyze import analyze
from rpq_units.pipeline.shards import FeatureShards, FeatureShardWriter, write_feats_json
from rpq_units.quant.base import reconstruct
from rpq_units.quant.random_projection import stack_frames, window_index

S = 4
LENS = [7, 3, 1, 12, 5]  # utterances shorter and longer than a window


def utterances(seed: int = 0, dim: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # each utterance has its own offset, so a window that crossed a boundary would look different
    return [(rng.normal(size=(n, dim)) + 5.0 * i).astype(np.float32) for i, n in enumerate(LENS)]


def rp(**kw):
    return make_quantizer("random_projection", num_codebooks=2, codebook_size=64, proj_dim=4,
                          stack_frames=S, seed=3, **kw)


def test_window_index_clamps_to_each_utterance():
    idx = window_index(sum(LENS), S, LENS)
    ends = np.cumsum(LENS)
    starts = ends - np.array(LENS)
    for t in range(sum(LENS)):
        u = int(np.searchsorted(ends, t, side="right"))
        want = np.minimum(np.arange(t, t + S), ends[u] - 1)
        np.testing.assert_array_equal(idx[t].numpy(), want)
        assert idx[t].min() >= starts[u]
    # one utterance (no lengths): the old behaviour, clamped to the last frame of all
    np.testing.assert_array_equal(window_index(5, 3)[-1].numpy(), [4, 4, 4])
    z = torch.arange(6.0).reshape(6, 1)
    np.testing.assert_array_equal(stack_frames(z, 2, [2, 4])[1].numpy(), [1.0, 1.0])


def test_encode_and_decode_of_a_batch_equal_per_utterance_results():
    utts = utterances()
    x = np.concatenate(utts)
    q = rp().fit(x, LENS)
    batch = q.encode(x, LENS)
    alone = np.concatenate([q.encode(u) for u in utts])
    np.testing.assert_array_equal(batch, alone)
    # without lengths the last windows of each utterance reach into the next one
    assert (q.encode(x) != batch).any()
    np.testing.assert_allclose(q.decode(batch, LENS),
                               np.concatenate([q.decode(q.encode(u)) for u in utts]), atol=1e-5)


def test_fit_statistics_come_from_windows_inside_utterances():
    utts = utterances()
    x = np.concatenate(utts)
    q = rp().fit(x, LENS)
    # the mean projection norm, computed window by window inside each utterance
    z = [(torch.from_numpy(u) - q.mean) / q.std for u in utts]
    windows = torch.cat([stack_frames(zu, S) for zu in z])
    want = torch.einsum("mpe,ne->mnp", q.projection, windows).norm(dim=2).mean(1)
    torch.testing.assert_close(q.scale, want)
    assert not torch.allclose(rp().fit(x).scale, want)  # pooled frames give another scale
    with pytest.raises(QuantizerError, match="lengths"):
        rp().fit(x, [3, 4])


def test_frame_wise_quantizers_ignore_lengths():
    x = np.concatenate(utterances())
    q = make_quantizer("pq", num_codebooks=2, codebook_size=4, seed=0, max_iter=5).fit(x, LENS)
    np.testing.assert_array_equal(q.encode(x, LENS), q.encode(x))
    assert q.context_frames == 1 and rp().context_frames == S


def write_feats(d, utts):
    with FeatureShardWriter(d, 0) as w:
        for i, u in enumerate(utts):
            w.add(f"utt{i:03d}", u)
    write_feats_json(d, {"dim": utts[0].shape[1], "nshard": 1, "upstream": "toy", "layer": 1,
                         "frame_rate": 25.0})


def test_utterance_sample_keeps_whole_contiguous_utterances(tmp_path):
    utts = utterances()
    write_feats(tmp_path / "f", utts)
    shards = FeatureShards(tmp_path / "f")
    x, lens = shards.utterance_frames()
    assert lens == LENS
    np.testing.assert_array_equal(x, np.concatenate(utts))
    x, lens = shards.utterance_frames(max_frames=10, seed=1)
    assert sum(lens) == 10 == x.shape[0]
    # every chosen run is the start of one utterance, in storage order
    off = 0
    for n in lens:
        match = [u for u in utts if u.shape[0] >= n and np.array_equal(u[:n], x[off:off + n])]
        assert match, "a sampled run is not a contiguous piece of one utterance"
        off += n


def test_analyze_and_cli_fit_use_utterance_windows(tmp_path):
    utts = utterances()
    x = np.concatenate(utts)
    write_feats(tmp_path / "f", utts)
    cfg = tmp_path / "rp.yaml"
    cfg.write_text("method: random_projection\nnum_codebooks: 2\ncodebook_size: 64\n"
                   "proj_dim: 4\nstack_frames: 4\nseed: 3\n")
    assert main(["fit", "--feats_dir", str(tmp_path / "f"), "--config", str(cfg),
                 "--out", str(tmp_path / "cb.pt")]) == 0
    q = load_quantizer(tmp_path / "cb.pt")
    torch.testing.assert_close(q.scale, rp().fit(x, LENS).scale)
    codes, sq = reconstruct(q, x, LENS)
    per_utt = np.concatenate([q.encode(u) for u in utts])
    np.testing.assert_array_equal(codes, per_utt)
    rep = analyze(codebook=tmp_path / "cb.pt", feats_dir=tmp_path / "f", out_dir=tmp_path / "a")
    assert rep["mse"] == pytest.approx(float(sq.mean()), rel=1e-6)
    metrics = json.loads((tmp_path / "cb.metrics.json").read_text())
    assert metrics["distortion"] == pytest.approx(float(sq.mean()), rel=1e-5)
