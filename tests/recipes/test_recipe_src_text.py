"""Unit options through the engine: --src_case rm (repeated frames removed) and --src_token_type
bpe (sentencepiece over the units), on a tiny demo corpus: stage 5 writes each set's source text
and the units' sentencepiece model, stages 7-9 train and decode on them in a model dir named by
the settings, stage 12 tables them, and the default settings' stamps do not mention them;
``rpq-units transcribe`` with the models trained here gives stage 9's hypotheses."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from recipe_helpers import TINY, copy_recipe, env, have, write_tiny_confs

from rpq_units.pipeline.data import read_table
from rpq_units.pipeline.unit_text import dedup_frames, from_chars
from rpq_units.pipeline.units import read_units

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)"),
]

TAG = "mel_40ms_llast"
OPTS = ["--discretizers", "kmeans pq", "--units_conf_dir", "conf/tiny", "--feats_portion", "0.5",
        "--test_sets", "test_clean", "--nj", "2", "--inference_nj", "1", "--token_type", "char",
        "--asr_config", "conf/tiny/asr.yaml", "--inference_args", "--beam_size 2 --maxlenratio 0.3"]
BPE = ["--src_case", "rm", "--src_token_type", "bpe", "--src_nbpe", "24"]


def _run(recipe, *args):
    r = subprocess.run(["./run.sh", *OPTS, *args], cwd=recipe, env=env(), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    recipe = copy_recipe(tmp_path_factory.mktemp("src_text"))
    write_tiny_confs(recipe, max_epoch=2, keep_nbest_models=1)
    _run(recipe, "--stage", "1", "--stop_stage", "4", "--data_opts", TINY)
    return recipe


def test_bpe_over_deduplicated_units_trains_decodes_and_tables(recipe):
    _run(recipe, "--stage", "5", "--stop_stage", "12", *BPE)
    for d, m in (("kmeans", 1), ("pq", 2)):
        udump = recipe / "dump" / f"units_{TAG}_{d}"
        for s in ("train_clean", "dev_clean", "test_clean"):
            units = read_units(udump / s / "units")
            src = read_units(udump / s / "units.rm.chars")
            assert src.keys() == units.keys()
            for u, line in units.items():  # the source text spells the units without repeated frames
                assert from_chars(src[u]) == dedup_frames(line.split(), m), (d, s, u)
        spm = recipe / "exp" / f"units_{TAG}_{d}" / "src_rm_unigram24"
        pieces = (spm / "tokens.txt").read_text().split()
        assert pieces[:2] == ["<blank>", "<unk>"] and pieces[-1] == "<sos/eos>"
        assert len(pieces) <= 24 + 3
        adir = recipe / "exp" / f"asr_{TAG}_{d}_rm_unigram24"
        cfg = yaml.safe_load((adir / "config.yaml").read_text())
        assert cfg["frontend"] == "embed"  # pieces: one stream whatever M
        assert cfg["src_token_type"] == "bpe" and cfg["src_bpemodel"].endswith("src_rm_unigram24/bpe.model")
        assert (adir / "decode_test_clean_nolm" / "result.txt").is_file()
        stamp = set((adir / ".done_train").read_text().splitlines())
        assert {"src_case=rm", "src_token_type=bpe", "src_nbpe=24", "src_bpemode=unigram"} <= stamp
    table = (recipe / "RESULTS.md").read_text()
    assert f"| {TAG}_pq_rm_unigram24 | pq 2x8, rm, unigram 24 |" in table
    assert f"| {TAG}_kmeans_rm_unigram24 | kmeans 1x16, rm, unigram 24 |" in table
    # against the K-means row of the same source settings
    assert f"| {TAG}_pq_rm_unigram24 | {TAG}_kmeans_rm_unigram24 |" in table


def test_deduplicated_units_keep_the_patch_frontend(recipe):
    _run(recipe, "--stage", "5", "--stop_stage", "9", "--discretizers", "pq", "--src_case", "rm")
    adir = recipe / "exp" / f"asr_{TAG}_pq_rm"
    cfg = yaml.safe_load((adir / "config.yaml").read_text())
    assert cfg["frontend"] == "patch" and cfg["frontend_conf"]["token_per_frame"] == 2
    assert cfg["src_token_type"] == "word"
    assert (adir / "decode_test_clean_nolm" / "hyp").is_file()
    assert yaml.safe_load((adir / "units.yaml").read_text())["src_case"] == "rm"


def test_default_source_settings_leave_names_and_stamps_as_before(recipe):
    r = _run(recipe, "--show_stamp", "train pq")
    assert "src_" not in r.stdout and "asr_config=" in r.stdout
    r = _run(recipe, "--show_stamp", "train pq", "--src_case", "rm")
    assert "src_case=rm" in r.stdout
    r = subprocess.run(["./run.sh", *OPTS, "--src_case", "rmm", "--stage", "5"], cwd=recipe, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--src_case rmm: must be ts" in r.stderr


def test_transcribe_gives_the_recipes_hypotheses(recipe, tmp_path, monkeypatch, capsys):
    """``rpq-units transcribe`` from audio, with the recipe's decoding options, gives stage 9's
    hypotheses of the same utterances line for line: for a model of the default source settings
    (units as words; audio files given, hypotheses on stdout), one of deduplicated units (the
    patch frontend; a wav.scp) and one of BPE pieces over deduplicated units (a data dir), run
    from outside the recipe dir (the model's paths are relative to it)."""
    from rpq_units.cli import main
    from rpq_units.pipeline.transcribe import transcribe

    # the models of the tests above (trained here when they did not run) and a default one
    _run(recipe, "--stage", "5", "--stop_stage", "9", "--discretizers", "pq", *BPE)
    _run(recipe, "--stage", "5", "--stop_stage", "9", "--discretizers", "pq", "--src_case", "rm")
    _run(recipe, "--stage", "5", "--stop_stage", "9", "--discretizers", "pq")
    config = str(recipe / "conf" / "asr" / "decode.yaml")
    args = OPTS[OPTS.index("--inference_args") + 1]  # as the recipe decoded
    test, exp = recipe / "data" / "test_clean", recipe / "exp"
    wavs = [line.split(maxsplit=1)[1] for line in (test / "wav.scp").read_text().splitlines()]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    rc = main(["transcribe", "--model_dir", str(exp / f"asr_{TAG}_pq"), "--inference_config", config,
               f"--inference_args={args}", "--log_level", "WARNING", *wavs])
    out, err = capsys.readouterr()
    assert rc == 0, err[-4000:]
    assert out == (exp / f"asr_{TAG}_pq" / "decode_test_clean_nolm" / "hyp").read_text()
    for name, source in ((f"asr_{TAG}_pq_rm", {"wav_scp": str(test / "wav.scp")}),
                         (f"asr_{TAG}_pq_rm_unigram24", {"data_dir": str(test)})):
        hyps = transcribe(model_dir=str(exp / name), out=f"{name}.hyp", **source,
                          inference_config=config, inference_args=args)
        assert (tmp_path / f"{name}.hyp").read_text() == \
            (exp / name / "decode_test_clean_nolm" / "hyp").read_text(), name
        assert list(hyps) == sorted(read_table(test / "wav.scp"))
