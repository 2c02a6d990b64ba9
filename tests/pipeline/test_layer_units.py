"""Several layers of one upstream as unit streams (``--layer 1,3``), on the tiny random-weight
WavLM: the features are the layers side by side; ``fit`` gives each layer its own discretizer;
``encode`` writes one unit tuple per frame whose streams are each layer's own units;
deduplication takes the whole tuple; a codebook of other layers stops ``encode``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rpq_units.cli import main
from rpq_units.pipeline.codebooks import load_quantizer
from rpq_units.pipeline.data import load_audio, load_data_dir
from rpq_units.pipeline.features import FeatureError, FeatureExtractor, parse_layer
from rpq_units.pipeline.unit_text import dedup_frames
from rpq_units.pipeline.units import read_units

FIT = ["--method", "pq", "--num_codebooks", "2", "--codebook_size", "8", "--max_iter", "10",
       "--log_level", "WARNING"]


def _cli(*argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        return e.code


def test_parse_layer():
    assert parse_layer("21") == 21 and parse_layer(-1) == -1
    assert parse_layer("1,3,7") == [1, 3, 7] and parse_layer([2, -1]) == [2, -1]
    assert parse_layer([4]) == 4  # one layer is one layer, however given
    with pytest.raises(FeatureError, match="integers joined by commas"):
        parse_layer("1;3")


def test_layers_side_by_side_from_one_forward(tiny_wavlm, tiny_data):
    wav = load_audio(load_data_dir(tiny_data)[0])
    one = {v: FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm, layer=v).extract(wav)
           for v in (1, 3)}
    fx = FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm, layer="3,-3")
    assert fx.layer == [3, 1] and fx.layer_dims == [32, 32] and fx.dim == 64
    info = fx.describe()
    assert info["layer"] == [3, 1] and info["layer_dims"] == [32, 32] and info["dim"] == 64
    np.testing.assert_array_equal(fx.extract(wav), np.concatenate([one[3], one[1]], 1))
    assert "layer_dims" not in FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm,
                                                layer=2).describe()
    with pytest.raises(FeatureError, match="named twice"):
        FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm, layer="1,-3")
    with pytest.raises(FeatureError, match="layer 9 out of range"):
        FeatureExtractor(upstream="wavlm_local", ckpt=tiny_wavlm, layer=[1, 9])


@pytest.fixture(scope="module")
def two_layers(tiny_wavlm, tiny_data, tmp_path_factory):
    """Features of layers 1 and 3 together and of each alone; a PQ fit on each dump."""
    root = tmp_path_factory.mktemp("layers")
    for name, layer in (("both", "1,3"), ("l1", "1"), ("l3", "3")):
        assert _cli("dump_feats", "--portion", "1", "--data_dir", tiny_data, "--out_dir",
                    root / f"feats_{name}", "--upstream", "wavlm_local", "--upstream_ckpt",
                    tiny_wavlm, "--layer", layer, "--log_level", "WARNING") == 0
    # layer i of the pair is seeded seed + i: the single-layer fits use those seeds
    for name, seed in (("both", 4), ("l1", 4), ("l3", 5)):
        assert _cli("fit", "--feats_dir", root / f"feats_{name}", "--out",
                    root / f"units_{name}" / "codebook.pt", "--seed", seed, *FIT) == 0
    return root


def test_fit_gives_each_layer_its_own_discretizer(two_layers):
    info = json.loads((two_layers / "feats_both" / "feats.json").read_text())
    assert info["layer"] == [1, 3] and info["layer_dims"] == [32, 32] and info["dim"] == 64
    q = load_quantizer(two_layers / "units_both" / "codebook.pt")
    assert q.method == "layers" and q.inner == "pq" and q.layer_dims == [32, 32]
    assert (q.num_codebooks, q.codebook_size) == (4, 8) and q.meta["layer"] == [1, 3]
    # the frame's tuple is each layer's own PQ code, as a PQ fit on that layer alone gives
    x = np.load(two_layers / "feats_both" / "feats.0.npy")
    for i, name in enumerate(("l1", "l3")):
        alone = load_quantizer(two_layers / f"units_{name}" / "codebook.pt")
        np.testing.assert_array_equal(q.encode(x)[:, 2 * i: 2 * i + 2],
                                      alone.encode(x[:, 32 * i: 32 * i + 32]))


def test_encode_writes_the_layers_tuples(two_layers, tiny_data, tmp_path):
    for name in ("both", "l1", "l3"):
        assert _cli("encode", "--data_dir", tiny_data, "--codebook",
                    two_layers / f"units_{name}" / "codebook.pt", "--out", tmp_path / name,
                    "--log_level", "WARNING") == 0
    both, l1, l3 = (read_units(tmp_path / n) for n in ("both", "l1", "l3"))
    assert both.keys() == l1.keys() == l3.keys()
    for u in both:  # unit ids: stream * K + code, K = 8
        t, a, b = (np.array(line.split(), int) for line in (both[u], l1[u], l3[u]))
        t = t.reshape(-1, 4)
        np.testing.assert_array_equal(t[:, :2], a.reshape(-1, 2))
        np.testing.assert_array_equal(t[:, 2:], b.reshape(-1, 2) + 2 * 8)  # streams 2, 3
        # a frame is removed only when all four codes repeat
        assert dedup_frames(both[u].split(), 4) == [
            tok for i, row in enumerate(t) if i == 0 or (row != t[i - 1]).any() for tok in map(str, row)]
    # the same features taken from the dump give the same units
    assert _cli("encode", "--data_dir", tiny_data, "--codebook",
                two_layers / "units_both" / "codebook.pt", "--out", tmp_path / "dumped",
                "--feats_dir", two_layers / "feats_both", "--log_level", "WARNING") == 0
    assert (tmp_path / "dumped").read_text() == (tmp_path / "both").read_text()


def test_other_layers_are_refused(two_layers, tiny_data, tmp_path, capsys):
    cb = two_layers / "units_both" / "codebook.pt"
    rc = _cli("encode", "--data_dir", tiny_data, "--codebook", cb, "--layer", "2",
              "--out", tmp_path / "u")
    assert rc == 1 and not (tmp_path / "u").exists()
    err = capsys.readouterr().err
    assert "64-dim features" in err and "layer 2 gives 32-dim" in err
    rc = _cli("encode", "--data_dir", tiny_data, "--codebook", cb, "--layer", "1;3",
              "--out", tmp_path / "u")
    assert rc == 2 and "integers joined by commas" in capsys.readouterr().err
