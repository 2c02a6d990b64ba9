"""The project's own pre-trained encoders as an upstream (``--upstream rpq_ssl``): features
through the same FeatureExtractor path as s3prl upstreams, provenance in feats.json and the
codebook, one-line errors for a file of another kind, a layer beyond the depth, or a changed
encoder; and ``dump_feats --format ark`` (the continuous reference's input)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from ssl_helpers import build_tiny_encoder_file

from rpq_units import cli
from rpq_units.pipeline.data import AudioLoader, load_data_dir
from rpq_units.pipeline.features import FeatureExtractor
from rpq_units.ssl.encoder import load_encoder


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    return build_tiny_encoder_file(tmp_path_factory.mktemp("enc") / "encoder.pt", seed=0,
                                   num_layers=2, dim=32, method="birq")


def test_rpq_ssl_features_are_the_encoders_layer(encoder_file, tiny_data):
    fx = FeatureExtractor(upstream="rpq_ssl", ckpt=str(encoder_file), layer=1)
    assert (fx.num_layers, fx.dim, fx.stride, fx.frame_rate) == (3, 32, 640, 25.0)
    utt = load_data_dir(tiny_data)[3]
    wav = AudioLoader()(utt)
    feats = fx.extract(wav)
    assert feats.shape == (fx.num_frames(len(wav)), 32)
    enc = load_encoder(encoder_file)
    with torch.no_grad():
        hidden, lens = enc(torch.as_tensor(wav)[None], torch.tensor([len(wav)]))
    ref = hidden[1][0, : int(lens[0])].numpy()
    np.testing.assert_allclose(feats[: len(ref)], ref, atol=1e-5)
    # the encoder gives one or two frames fewer than (L - 1) // stride + 1: the last is repeated
    assert len(ref) >= len(feats) - 2 and (feats[len(ref):] == ref[-1]).all()
    # batched and chunked extraction take the same path
    other = AudioLoader()(load_data_dir(tiny_data)[0])
    batch = fx.extract_batch([wav, other])
    np.testing.assert_allclose(batch[0][: len(ref)], ref, atol=1e-4)
    chunked = FeatureExtractor(upstream="rpq_ssl", ckpt=str(encoder_file), layer=1, chunk_s=0.5)
    assert chunked.extract(wav).shape == feats.shape

    info = fx.describe()
    assert info["upstream_kind"] == "birq" and info["layer"] == 1
    assert info["upstream_sha256"] == hashlib.sha256(encoder_file.read_bytes()).hexdigest()


def test_rpq_ssl_through_the_cli_with_provenance(encoder_file, tiny_data, tmp_path, capsys):
    feats, book, units = tmp_path / "feats", tmp_path / "km.pt", tmp_path / "units"
    args = ["--upstream", "rpq_ssl", "--upstream_ckpt", str(encoder_file), "--layer", "2"]
    assert cli.main(["dump_feats", "--portion", "1", "--data_dir", str(tiny_data), "--out_dir", str(feats), *args]) == 0
    info = json.loads((feats / "feats.json").read_text())
    assert info["upstream"] == "rpq_ssl" and info["upstream_kind"] == "birq" and info["dim"] == 32
    assert cli.main(["fit", "--feats_dir", str(feats), "--out", str(book), "--method", "kmeans",
                     "--codebook_size", "4"]) == 0
    meta = torch.load(book, weights_only=True)["meta"]
    sha = hashlib.sha256(encoder_file.read_bytes()).hexdigest()
    assert (meta["upstream"], meta["layer"], meta["upstream_kind"], meta["upstream_sha256"]) == (
        "rpq_ssl", 2, "birq", sha)
    assert meta["upstream_ckpt"] == str(encoder_file.resolve())
    assert cli.main(["encode", "--data_dir", str(tiny_data), "--codebook", str(book), "--out", str(units)]) == 0
    assert len(units.read_text().splitlines()) == len(load_data_dir(tiny_data))

    # a different encoder behind the same path: encoding refuses, naming both hashes
    changed = tmp_path / "changed.pt"
    build_tiny_encoder_file(changed, seed=1, num_layers=2, dim=32, method="birq")
    capsys.readouterr()
    assert cli.main(["encode", "--data_dir", str(tiny_data), "--codebook", str(book),
                     "--out", str(tmp_path / "u2"), "--upstream_ckpt", str(changed)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"sha256 {sha[:12]}" in err[0] and str(changed) in err[0]
    assert not (tmp_path / "u2").exists()


@pytest.mark.parametrize("case", ["deep_layer", "wavlm_file", "ssl_file_to_s3prl", "no_ckpt"])
def test_rpq_ssl_bad_input_is_one_line(case, encoder_file, tiny_wavlm, tiny_data, tmp_path, capsys):
    opts = {
        "deep_layer": (["--upstream", "rpq_ssl", "--upstream_ckpt", str(encoder_file), "--layer", "3"],
                       "layer 3 out of range: upstream rpq_ssl has 3 hidden states"),
        "wavlm_file": (["--upstream", "rpq_ssl", "--upstream_ckpt", str(tiny_wavlm)],
                       f"{tiny_wavlm.resolve()}: not an SSL encoder file"),
        "ssl_file_to_s3prl": (["--upstream", "wavlm_local", "--upstream_ckpt", str(encoder_file)],
                              "is an rpq_units SSL encoder file: use --upstream rpq_ssl"),
        "no_ckpt": (["--upstream", "rpq_ssl"], "upstream rpq_ssl needs an encoder file"),
    }
    args, message = opts[case]
    out = tmp_path / "feats"
    assert cli.main(["dump_feats", "--portion", "1", "--data_dir", str(tiny_data), "--out_dir", str(out), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (out / "feats.json").exists()


def test_dump_feats_ark_matches_npy_shards(encoder_file, tiny_data, tmp_path):
    import kaldiio

    from rpq_units.pipeline.shards import FeatureShards

    args = ["--upstream", "rpq_ssl", "--upstream_ckpt", str(encoder_file), "--layer", "1",
            "--data_dir", str(tiny_data)]
    for rank in (0, 1):
        assert cli.main(["dump_feats", "--portion", "1", *args, "--out_dir", str(tmp_path / "ark"), "--format", "ark",
                         "--nshard", "2", "--rank", str(rank)]) == 0
    assert cli.main(["dump_feats", "--portion", "1", *args, "--out_dir", str(tmp_path / "npy")]) == 0
    ark = {}
    for rank in (0, 1):
        scp = tmp_path / "ark" / f"feats.{rank}.scp"
        keys = [line.split()[0] for line in scp.read_text().splitlines()]
        assert keys == sorted(keys)
        ark.update(kaldiio.load_scp(str(scp)))
    npy = dict(FeatureShards(tmp_path / "npy").utterances())
    assert sorted(ark) == sorted(npy) and len(npy) == len(load_data_dir(tiny_data))
    for uttid, feats in npy.items():
        np.testing.assert_array_equal(ark[uttid], feats)
    assert json.loads((tmp_path / "ark" / "feats.json").read_text())["format"] == "ark"
    assert not list((tmp_path / "ark").glob("*.tmp"))


def test_dump_feats_from_an_npy_dump_copies_it_and_runs_only_the_rest(encoder_file, tiny_data,
                                                                        tmp_path, caplog):
    """The continuous reference's ark copied from the npy features of stages 2/4: the same
    matrices as a forward; utterances the npy dump lacks run through the upstream; a dump made
    at another layer is not used."""
    import logging

    import kaldiio

    from rpq_units.pipeline.shards import FeatureShards

    args = ["--upstream", "rpq_ssl", "--upstream_ckpt", str(encoder_file), "--data_dir",
            str(tiny_data)]
    assert cli.main(["dump_feats", "--portion", "1", *args, "--layer", "1", "--out_dir", str(tmp_path / "half"),
                     "--portion", "0.5"]) == 0
    assert cli.main(["dump_feats", "--portion", "1", *args, "--layer", "1", "--out_dir", str(tmp_path / "ref"),
                     "--format", "ark"]) == 0
    ref = dict(kaldiio.load_scp(str(tmp_path / "ref" / "feats.0.scp")))
    half = set(FeatureShards(tmp_path / "half").ids)
    assert 0 < len(half) < len(ref)
    with caplog.at_level(logging.INFO):
        assert cli.main(["dump_feats", "--portion", "1", *args, "--layer", "1", "--out_dir", str(tmp_path / "ark"),
                         "--format", "ark", "--from_feats_dir", str(tmp_path / "half")]) == 0
    assert (f"{len(half)} of {len(ref)} utterances from the features in {tmp_path / 'half'}, "
            f"{len(ref) - len(half)} through the upstream") in caplog.text
    got = dict(kaldiio.load_scp(str(tmp_path / "ark" / "feats.0.scp")))
    assert sorted(got) == sorted(ref)
    for uttid, feats in ref.items():
        np.testing.assert_allclose(got[uttid], feats, rtol=0, atol=1e-6)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli.main(["dump_feats", "--portion", "1", *args, "--layer", "2", "--out_dir", str(tmp_path / "l2"),
                         "--from_feats_dir", str(tmp_path / "half")]) == 0
    assert "not using the features in" in caplog.text and "layer 1 (here 2)" in caplog.text
