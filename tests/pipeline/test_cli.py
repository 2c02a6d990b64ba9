"""``rpq-units`` end to end on a tiny generated data dir and a tiny random-weight WavLM."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import yaml

from rpq_units import load_quantizer
from rpq_units.cli import main
from rpq_units.pipeline.shards import FeatureShards
from rpq_units.pipeline.units import read_units, text_to_units

ROOT = Path(__file__).resolve().parents[2]
K = 8


def run(capsys, *argv: str) -> tuple[int, str]:
    """Run ``rpq-units argv`` in-process; returns (exit status, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def feats(tiny_data, tiny_wavlm, tmp_path_factory):
    """Features of the tiny corpus, dumped in 2 shards (second one with dashed flags)."""
    out = tmp_path_factory.mktemp("feats")
    common = ["--upstream", "wavlm_local", "--upstream_ckpt", tiny_wavlm, "--layer", "2"]
    assert (
        main(
            [
                "dump_feats",
                "--portion",
                "1",
                "--data_dir",
                tiny_data,
                "--out_dir",
                out,
                *common,
                "--nshard",
                "2",
                "--rank",
                "0",
                "--log_level",
                "WARNING",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "dump_feats",
                "--portion",
                "1",
                "--data-dir",
                tiny_data,
                "--out-dir",
                out,
                *common,
                "--nshard",
                "2",
                "--rank",
                "1",
                "--log-level",
                "WARNING",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def codebooks(feats, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp")
    out = {}
    for method, extra in (("kmeans", []), ("rpq", ["--num_codebooks", "3"])):
        cb = exp / f"units_{method}" / "codebook.pt"
        rc = main(
            [
                "fit",
                "--feats_dir",
                feats,
                "--out",
                cb,
                "--config",
                ROOT / "conf" / "units" / f"{method}.yaml",
                "--codebook_size",
                str(K),
                "--max_iter",
                "20",
                *extra,
                "--log_level",
                "WARNING",
            ]
        )
        assert rc == 0
        out[method] = cb
    return out


def test_dump_feats(feats, tiny_data):
    info = json.loads((feats / "feats.json").read_text())
    assert info["upstream"] == "wavlm_local" and info["layer"] == 2 and info["dim"] == 32
    assert info["frame_rate"] == 50.0 and info["nshard"] == 2
    s = FeatureShards(feats)
    ids = sorted(line.split()[0] for line in (tiny_data / "wav.scp").read_text().splitlines())
    assert sorted(s.ids) == ids  # every utterance exactly once across the shards
    assert s.dim == 32 and s.num_frames == sum(s.lens)


def test_dump_feats_portion(tiny_data, tiny_wavlm, tmp_path, capsys):
    rc, _ = run(
        capsys,
        "dump_feats",
        "--data_dir",
        tiny_data,
        "--out_dir",
        tmp_path,
        "--upstream",
        "wavlm_local",
        "--upstream_ckpt",
        tiny_wavlm,
        "--portion",
        "0.5",
        "--seed",
        "3",
    )
    assert rc == 0
    assert len(FeatureShards(tmp_path).ids) == 4  # round(0.5 * 7)


def test_fit_writes_codebook_config_and_metrics(codebooks, feats):
    q = load_quantizer(codebooks["rpq"])
    assert q.method == "rpq" and q.num_codebooks == 3 and q.codebook_size == K and q.dim == 32
    assert q.meta["upstream"] == "wavlm_local" and q.meta["layer"] == 2
    assert q.meta["upstream_ckpt"].endswith("tiny_wavlm.pt")
    desc = yaml.safe_load(codebooks["rpq"].with_suffix(".yaml").read_text())
    assert desc["config"]["dims_ratio"] == 0.25 and desc["fit"]["codebook_size"] == K
    metrics = json.loads(codebooks["rpq"].with_suffix(".metrics.json").read_text())
    x = FeatureShards(feats).frames()
    assert metrics["frames"] == x.shape[0]
    ref = float(((x - q.decode(q.encode(x))) ** 2).sum(1).mean())
    assert metrics["distortion"] == pytest.approx(ref, rel=1e-5)
    assert metrics["fit_seconds"] >= 0
    assert load_quantizer(codebooks["kmeans"]).num_codebooks == 1


def test_encode_sharded_merge_equals_unsharded(codebooks, tiny_data, tmp_path, capsys):
    cb = codebooks["rpq"]
    q = load_quantizer(cb)
    rc, _ = run(
        capsys,
        "encode",
        "--data_dir",
        tiny_data,
        "--codebook",
        cb,
        "--out",
        tmp_path / "units",
        "--ark",
        tmp_path / "units.ark",
    )
    assert rc == 0
    for r in (0, 1):
        rc, _ = run(
            capsys,
            "encode",
            "--data-dir",
            tiny_data,
            "--codebook",
            cb,
            "--out",
            tmp_path / f"units.{r}",
            "--nshard",
            "2",
            "--rank",
            str(r),
        )
        assert rc == 0
    rc, _ = run(
        capsys, "merge", "--out", tmp_path / "merged", tmp_path / "units.0", tmp_path / "units.1"
    )
    assert rc == 0
    assert (tmp_path / "merged").read_bytes() == (tmp_path / "units").read_bytes()
    lines = (tmp_path / "units").read_text().splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys == sorted(keys) and len(keys) == 7
    arks = kaldiio.load_scp(str(tmp_path / "units.scp"))
    m = q.num_codebooks
    for k, toks in read_units(tmp_path / "units").items():
        codes = text_to_units(toks, m, K)
        np.testing.assert_array_equal(arks[k], codes)
        assert codes.shape[1] == m and codes.min() >= 0 and codes.max() < K
    # frame count = s3prl's (L - 1) // 320 + 1 for each utterance
    wav = dict(line.split() for line in (tiny_data / "wav.scp").read_text().splitlines())
    import soundfile as sf

    for k, a in arks.items():
        assert a.shape[0] == (sf.info(wav[k]).frames - 1) // 320 + 1


def test_token_list(codebooks, tmp_path, capsys):
    rc, _ = run(capsys, "token_list", "--codebook", codebooks["rpq"], "--out", tmp_path / "tok")
    assert rc == 0
    toks = (tmp_path / "tok").read_text().splitlines()
    assert (
        toks[:3] == ["<blank>", "<unk>", "0"] and toks[-1] == "<sos/eos>" and len(toks) == 3 * K + 3
    )
    rc, _ = run(
        capsys,
        "token_list",
        "--num_codebooks",
        "2",
        "--codebook_size",
        "5",
        "--out",
        tmp_path / "t2",
    )
    assert rc == 0 and len((tmp_path / "t2").read_text().splitlines()) == 13


def test_analyze(codebooks, feats, tmp_path, capsys):
    rc, err = run(
        capsys,
        "analyze",
        "--codebook",
        codebooks["rpq"],
        "--feats_dir",
        feats,
        "--out_dir",
        tmp_path,
    )
    assert rc == 0, err
    rep = json.loads((tmp_path / "analysis.json").read_text())
    metrics = json.loads(codebooks["rpq"].with_suffix(".metrics.json").read_text())
    assert rep["mse"] == pytest.approx(metrics["distortion"], rel=1e-6)
    assert rep["bits_per_frame"] == pytest.approx(3 * 3.0) and rep[
        "bits_per_second"
    ] == pytest.approx(450.0)
    assert len(rep["per_codebook"]) == 3 and rep["rho"] is not None
    assert (tmp_path / "dim_correlation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "perplexity" in (tmp_path / "analysis.txt").read_text()


def make_bad_copy(src: Path, dst: Path) -> Path:
    """A copy of a data dir with one unreadable utterance added."""
    shutil.copytree(src, dst)
    with open(dst / "wav.scp", "a") as f:
        f.write("zzz_bad_utt /nonexistent/audio.wav\n")
    return dst


def test_bad_utterance_skipped_with_warning_and_count(
    codebooks, tiny_data, tmp_path, capsys, caplog
):
    data = make_bad_copy(tiny_data, tmp_path / "data")
    rc, _ = run(
        capsys,
        "encode",
        "--data_dir",
        data,
        "--codebook",
        codebooks["kmeans"],
        "--out",
        tmp_path / "units",
    )
    assert rc == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("zzz_bad_utt" in w and "no such file" in w for w in warnings)
    assert any("skipped 1 of 8 utterances" in w for w in warnings)
    units = read_units(tmp_path / "units")
    assert "zzz_bad_utt" not in units and len(units) == 7
    assert all(len(text_to_units(v, 1, K)) > 10 for v in units.values())


def test_strict_failure_leaves_previous_output_intact(codebooks, tiny_data, tmp_path, capsys):
    data = make_bad_copy(tiny_data, tmp_path / "data")
    out = tmp_path / "units"
    out.write_text("previous 1 2 3\n")
    rc, err = run(
        capsys,
        "encode",
        "--data_dir",
        data,
        "--codebook",
        codebooks["kmeans"],
        "--out",
        out,
        "--ark",
        tmp_path / "u.ark",
        "--strict",
    )
    assert rc == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "zzz_bad_utt" in last and "no such file" in last
    assert out.read_text() == "previous 1 2 3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "units"]  # no .tmp, no ark
    # dump_feats --strict leaves no shard either
    rc, err = run(
        capsys,
        "dump_feats",
        "--portion",
        "1",
        "--data_dir",
        data,
        "--out_dir",
        tmp_path / "f",
        "--upstream",
        "fbank",
        "--strict",
    )
    assert rc == 1 and "zzz_bad_utt" in err
    assert not (tmp_path / "f").exists() or list((tmp_path / "f").iterdir()) == []


def test_codebook_against_features_of_another_dimension(
    codebooks, tiny_data, feats, tmp_path, capsys
):
    rc, err = run(
        capsys,
        "encode",
        "--data_dir",
        tiny_data,
        "--codebook",
        codebooks["rpq"],
        "--out",
        tmp_path / "units",
        "--upstream",
        "fbank",
    )
    assert rc == 1
    assert "trained on 32-dim features but upstream fbank layer 0 gives 240-dim" in err
    assert not (tmp_path / "units").exists()


def test_user_and_usage_errors(feats, tiny_data, tmp_path, capsys):
    rc, err = run(
        capsys, "fit", "--feats_dir", feats, "--out", tmp_path / "c.pt", "--method", "nope"
    )
    assert rc == 1 and "error: unknown quantization method 'nope'" in err
    rc, err = run(
        capsys,
        "fit",
        "--feats_dir",
        feats,
        "--out",
        tmp_path / "c.pt",
        "--method",
        "kmeans",
        "--dims_ratio",
        "0.5",
    )
    assert rc == 1 and "error: method kmeans: bad option" in err and "dims_ratio" in err
    rc, err = run(
        capsys,
        "fit",
        "--feats_dir",
        feats,
        "--out",
        tmp_path / "c.pt",
        "--method",
        "kmeans",
        "--codebook_size",
        "100000",
    )
    assert rc == 1 and "fewer than codebook_size=100000" in err
    rc, err = run(
        capsys,
        "dump_feats",
        "--portion",
        "1",
        "--data_dir",
        tiny_data,
        "--out_dir",
        tmp_path / "f",
        "--upstream",
        "wavlm_largee",
    )
    assert rc == 1 and "error: unknown s3prl upstream 'wavlm_largee'" in err
    rc, err = run(
        capsys,
        "fit",
        "--feats_dir",
        tmp_path / "nowhere",
        "--out",
        tmp_path / "c.pt",
        "--method",
        "pq",
    )
    assert rc == 1 and "feats.json: no such file" in err
    rc, err = run(
        capsys,
        "encode",
        "--data_dir",
        tmp_path / "nodata",
        "--codebook",
        tmp_path / "none.pt",
        "--out",
        tmp_path / "u",
    )
    assert rc == 1 and "no such codebook file" in err
    rc, _ = run(capsys, "fit", "--feats_dir", feats)  # missing --out
    assert rc == 2
    rc, _ = run(capsys, "frobnicate")
    assert rc == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, line",
    [
        (["encode", "--chunk_s", "0"], "error: --chunk_s 0.0: must be at least 1 s"),
        (["encode", "--batch_size", "0"], "error: --batch_size 0: must be a positive integer"),
        (["encode", "--nshard", "2", "--rank", "2"], "error: --rank 2: must be in 0..1"),
        (["dump_feats", "--portion", "2"], "error: --portion 2.0: must be in (0, 1]"),
        (["dump_feats", "--portion", "1", "--device", "cuda:99"], "error: --device cuda:99: "),
        (["token_list", "--num_codebooks", "0"], "error: --num_codebooks 0: must be a positive"),
        (["fit", "--max_frames", "0"], "error: --max_frames 0: must be a positive integer"),
        (["fit", "--dims_ratio", "1.5"], "error: --dims_ratio 1.5: must be in (0, 1]"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_values_that_make_no_sense_give_one_line(tmp_path, capsys, argv, line):
    """Checked before any work starts: one line naming the option and the value, exit 2."""
    need = {
        "encode": ["--data_dir", tmp_path, "--codebook", tmp_path / "c.pt", "--out", tmp_path / "u"],
        "dump_feats": ["--data_dir", tmp_path, "--out_dir", tmp_path / "f", "--upstream", "fbank"],
        "token_list": ["--codebook_size", "4", "--out", tmp_path / "t"],
        "fit": ["--feats_dir", tmp_path, "--out", tmp_path / "c.pt", "--method", "kmeans"],
    }[argv[0]]
    rc, err = run(capsys, *argv, *need)
    assert rc == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith(line), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_audio_shorter_than_one_frame(tmp_path, capsys, caplog):
    """An utterance of 50 samples gives no frame of the 40 ms log-mel upstream: skipped and
    named by default (one at a time or in a batch alike), one error line naming it with
    --strict; never a traceback."""
    from asset_helpers import make_data_dir

    data = tmp_path / "data"
    ids = make_data_dir(data, [0.6, 1.1, 0.5, 1.4], seed=0)
    short = ids[0]
    wav = (data / "wav.scp").read_text().split()[1]
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 50).astype(np.float32), 16000)
    ups = ["--upstream", "baseline_local", "--upstream_ckpt",
           ROOT / "egs" / "mini_librispeech" / "conf" / "upstream" / "mel_40ms.yaml"]
    rc, err = run(capsys, "dump_feats", "--portion", "1", "--data_dir", data, "--out_dir", tmp_path / "f", *ups)
    assert rc == 0, err
    assert FeatureShards(tmp_path / "f").ids == sorted(ids[1:])
    rc, err = run(capsys, "fit", "--feats_dir", tmp_path / "f", "--out", tmp_path / "c.pt",
                  "--method", "kmeans", "--codebook_size", "4", "--max_iter", "3")
    assert rc == 0, err
    for bs in ("1", "3"):
        caplog.clear()
        out = tmp_path / f"units{bs}"
        rc, err = run(capsys, "encode", "--data_dir", data, "--codebook", tmp_path / "c.pt",
                      "--out", out, "--batch_size", bs)
        assert rc == 0, err
        assert sorted(read_units(out)) == sorted(ids[1:])
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(f"utterance {short}: audio of 50 samples" in w and "shorter than one frame" in w
                   for w in warnings), warnings
        rc, err = run(capsys, "encode", "--data_dir", data, "--codebook", tmp_path / "c.pt",
                      "--out", tmp_path / "strict", "--batch_size", bs, "--strict")
        assert rc == 1 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == (
            f"error: utterance {short}: audio of 50 samples (0.003 s) is shorter than one frame "
            "of upstream baseline_local")
        assert not (tmp_path / "strict").exists()


def test_console_script_entry_point():
    exe = Path(sys.executable).with_name("rpq-units")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "rpq_units"]
    r = subprocess.run([*cmd, "encode", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--data_dir" in r.stdout and "--nshard" in r.stdout


def test_batched_dump_feats_matches_one_at_a_time(tiny_data, tmp_path, capsys):
    """--batch_size > 1 pads utterances into one forward pass; a frame-local upstream gives the
    same frames as one-at-a-time extraction except the few padded ones at an utterance's end."""
    for bs in (1, 3):
        rc, err = run(
            capsys,
            "dump_feats",
            "--portion",
            "1",
            "--data_dir",
            tiny_data,
            "--out_dir",
            tmp_path / f"b{bs}",
            "--upstream",
            "fbank_no_cmvn",
            "--batch_size",
            bs,
        )
        assert rc == 0, err
    one, three = FeatureShards(tmp_path / "b1"), FeatureShards(tmp_path / "b3")
    assert one.ids == three.ids and one.lens == three.lens
    for (k, a), (_, b) in zip(one.utterances(), three.utterances(), strict=True):
        np.testing.assert_allclose(b[:-3], a[:-3], atol=1e-4, err_msg=k)


def test_programming_errors_keep_their_traceback(tmp_path, capsys):
    """A user error (missing named file, full disk) is one line with exit 1; anything else (a
    bug) is not turned into a one-line error: it propagates with its traceback."""
    rc, err = run(capsys, "token_list", "--codebook", tmp_path / "none.pt", "--out", tmp_path / "t")
    assert rc == 1 and err.strip().splitlines()[-1].startswith("error: ") and "none.pt" in err
    (tmp_path / "a_file").write_text("")
    rc, err = run(capsys, "token_list", "--num_codebooks", "2", "--codebook_size", "4",
                  "--out", tmp_path / "a_file" / "tokens.txt")
    assert rc == 1 and "error: " in err and "a_file" in err and "Traceback" not in err

    # a bug inside a subcommand: a ValueError that is not one of the project's error classes
    code = (
        "import sys, rpq_units.cli as c, rpq_units.pipeline.steps as s\n"
        "def bug(*a, **k):\n"
        "    return int('not a number')\n"
        "s.write_token_list = bug\n"
        "sys.exit(c.main(['token_list', '--num_codebooks', '2', '--codebook_size', '4',"
        f" '--out', {str(tmp_path / 't')!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert "in bug" in r.stderr and "ValueError: invalid literal for int()" in r.stderr
    assert "error: " not in r.stderr


def test_encode_reuses_dumped_features(codebooks, feats, tiny_data, tiny_wavlm, tmp_path, capsys,
                                       monkeypatch, caplog):
    """``encode --feats_dir``: the utterances dumped by ``dump_feats`` are encoded from those
    features (the upstream runs on the others only, or is not loaded when all are there);
    units and ark order equal those of on-the-fly encoding. Features made with another layer
    are not used."""
    import logging

    from rpq_units.pipeline.features import FeatureExtractor

    cb = codebooks["kmeans"]
    base = ["encode", "--data_dir", tiny_data, "--codebook", cb, "--log_level", "INFO"]
    assert run(capsys, *base, "--out", tmp_path / "ref", "--ark", tmp_path / "ref.ark")[0] == 0
    half = tmp_path / "half"
    assert run(capsys, "dump_feats", "--data_dir", tiny_data, "--out_dir", half, "--upstream",
               "wavlm_local", "--upstream_ckpt", tiny_wavlm, "--layer", "2", "--portion", "0.5",
               "--seed", "3")[0] == 0
    calls = []
    real_extract = FeatureExtractor.extract

    def extract(self, wav):
        calls.append(1)
        return real_extract(self, wav)

    monkeypatch.setattr(FeatureExtractor, "extract", extract)
    caplog.set_level(logging.INFO, logger="rpq_units.cli")
    assert run(capsys, *base, "--out", tmp_path / "u1", "--ark", tmp_path / "u1.ark",
               "--feats_dir", half)[0] == 0
    assert len(calls) == 3  # 7 utterances, 4 of them dumped
    assert "4 of 7 utterances from the features" in caplog.text
    assert (tmp_path / "u1").read_text() == (tmp_path / "ref").read_text()
    assert (tmp_path / "u1.scp").read_text().split()[::2] == (tmp_path / "ref.scp").read_text().split()[::2]

    def no_upstream(self, **kw):
        raise AssertionError("the upstream must not be loaded")

    monkeypatch.setattr(FeatureExtractor, "__init__", no_upstream)
    assert run(capsys, *base, "--out", tmp_path / "u2", "--feats_dir", feats)[0] == 0
    assert (tmp_path / "u2").read_text() == (tmp_path / "ref").read_text()
    monkeypatch.undo()
    caplog.clear()
    # features of layer 2 are not those of layer 1: computed again
    assert run(capsys, *base, "--layer", "1", "--out", tmp_path / "l1")[0] == 0
    assert run(capsys, *base, "--layer", "1", "--out", tmp_path / "l1d", "--feats_dir", feats)[0] == 0
    assert "not using the features" in caplog.text and "layer 2 (here 1)" in caplog.text
    assert (tmp_path / "l1d").read_text() == (tmp_path / "l1").read_text()


def test_steps_say_where_their_time_went(tiny_data, tmp_path, monkeypatch, caplog):
    """dump_feats and encode report seconds per part (upstream load, waiting for audio, forward,
    writes, quantizing) in their summary and log: a slow shard write is counted as write, not
    as forward, and the parts add up to no more than the step's wall time."""
    import logging
    import time

    from rpq_units.pipeline import steps
    from rpq_units.pipeline.shards import FeatureShardWriter

    add = FeatureShardWriter.add

    delay = 0.4  # per utterance: above the forward time of a tiny utterance on a loaded 2-core CPU

    def slow_add(self, uttid, feats):
        time.sleep(delay)
        add(self, uttid, feats)

    monkeypatch.setattr(FeatureShardWriter, "add", slow_add)
    caplog.set_level(logging.INFO, logger="rpq_units")
    out = steps.dump_feats(data_dir=str(tiny_data), out_dir=str(tmp_path / "f"),
                           upstream="fbank_no_cmvn", portion=1.0, batch_size=2)
    sec = out["seconds"]
    assert set(sec) == {"load", "audio", "forward", "write", "total"}
    assert sec["write"] >= delay * out["utterances"] > 0
    assert sec["forward"] < sec["write"] and min(sec.values()) >= 0
    assert sum(v for k, v in sec.items() if k != "total") <= sec["total"]
    assert re.search(r"dump_feats: [0-9.]+ s: load [0-9.]+, audio [0-9.]+, forward [0-9.]+, "
                     r"write [0-9.]+, other [0-9.]+", caplog.text), caplog.text

    cb = tmp_path / "cb.pt"
    steps.fit(feats_dir=str(tmp_path / "f"), out=str(cb), config=str(ROOT / "conf" / "units" / "kmeans.yaml"),
              codebook_size=4)
    enc = steps.encode(data_dir=str(tiny_data), codebook=str(cb), out=str(tmp_path / "units"))
    sec = enc["seconds"]
    assert set(sec) == {"load", "audio", "forward", "quantize", "write", "total"}
    assert sec["forward"] > 0 and sec["quantize"] > 0
    assert sum(v for k, v in sec.items() if k != "total") <= sec["total"]
