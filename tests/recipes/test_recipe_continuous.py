"""Stage 11, the continuous reference, through the real engine at tiny size: the frozen
upstream's features of every set are dumped as Kaldi ark/scp, ESPnet asr_train trains on them
(one epoch), asr_inference decodes the test set and the result carries a WER line; a rerun
resumes without redoing finished work."""

from __future__ import annotations

import json
import re

import pytest
from recipe_helpers import TINY, copy_recipe, have, run

pytestmark = [
    pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)"),
    pytest.mark.espnet,
    pytest.mark.slow,
]

# no training plots or tensorboard logs: nothing here reads them
OPTS = ["--test_sets", "test_clean", "--discretizers", "", "--token_type", "char",
        "--nj", "1", "--inference_nj", "1", "--run_continuous", "true",
        "--asr_args", "--max_epoch 1 --use_matplotlib false --use_tensorboard false"]


@pytest.fixture
def recipe(tmp_path):
    return copy_recipe(tmp_path)


def test_stage11_trains_decodes_and_scores(recipe):
    import kaldiio
    import yaml

    r = run(["./run.sh", "--stage", "1", "--stop_stage", "1", "--data_opts", TINY, *OPTS], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    # without the token list (stage 5), stage 11 stops at once and says which stage to run
    r = run(["./run.sh", "--stage", "11", "--stop_stage", "11", *OPTS], cwd=recipe)
    assert r.returncode != 0
    assert "dump/token_list/char is not finished: run stage 5 first" in r.stdout + r.stderr
    assert not (recipe / "dump" / "continuous_mel_40ms_llast").exists()
    r = run(["./run.sh", "--stage", "5", "--stop_stage", "5", "--data_opts", TINY, *OPTS], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(["./run.sh", "--stage", "11", "--stop_stage", "11", *OPTS], cwd=recipe, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]

    tag = "mel_40ms_llast"
    cdump = recipe / "dump" / f"continuous_{tag}"
    for s, n in (("train_clean", 8), ("dev_clean", 2), ("test_clean", 2)):
        feats = dict(kaldiio.load_scp(str(cdump / s / "feats.scp")))
        assert len(feats) == n
        wav_ids = [line.split()[0] for line in (recipe / "data" / s / "wav.scp").read_text().splitlines()]
        assert sorted(feats) == wav_ids
        for mat in feats.values():  # 80 log-mel bins every 40 ms: a few dozen frames each
            assert mat.shape[1] == 80 and mat.shape[0] > 10
    adir = recipe / "exp" / f"asr_{tag}_continuous"
    cfg = yaml.safe_load((adir / "config.yaml").read_text())
    assert cfg["input_size"] == 80 and cfg["frontend"] is None
    assert "1epoch results" in (adir / "train.log").read_text()
    result = (adir / "decode_test_clean_nolm" / "result.txt").read_text()
    assert re.search(r"^WER [0-9.]+ % \| N=\d+", result, re.M), result
    hyp = (adir / "decode_test_clean_nolm" / "hyp").read_text().splitlines()
    assert [line.split()[0] for line in hyp] == sorted(feats)

    # a rerun skips the dump, the training and the decoding, and scores again
    r = run(["./run.sh", "--stage", "11", "--stop_stage", "11", *OPTS], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dumping" not in r.stderr and "training exp" not in r.stderr and "decoding" not in r.stderr
    assert "Stage 11 done" in r.stderr

    # the table lists the continuous row made with the current settings, and only then
    r = run(["./run.sh", "--stage", "12", "--stop_stage", "12", *OPTS], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"| {tag}_continuous |" in (recipe / "RESULTS.md").read_text()
    r = run(["./run.sh", "--stage", "12", "--stop_stage", "12", *OPTS, "--inference_args", "--beam_size 2"],
            cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{tag}_continuous" not in (recipe / "RESULTS.md").read_text()

    # stage 13 transcribes the resynthesized speech with this model, which reads features
    # (frontend: null): the resynthesis feeds it the features of its own extractor
    tiny = recipe / "conf" / "tiny"
    tiny.mkdir()
    (tiny / "kmeans.yaml").write_text("method: kmeans\nnum_codebooks: 1\ncodebook_size: 8\nseed: 0\nmax_iter: 5\n")
    units = [*OPTS, "--discretizers", "kmeans", "--units_conf_dir", "conf/tiny", "--feats_portion", "0.5"]
    for stage in ("2", "3", "4"):
        r = run(["./run.sh", "--stage", stage, "--stop_stage", stage, *units], cwd=recipe)
        assert r.returncode == 0, r.stderr[-3000:]
    r = run(["./run.sh", "--stage", "13", "--stop_stage", "13", *units, "--resynth_utts", "2",
             "--page_utts", "1", "--resynth_args", "--n_iter 8"], cwd=recipe, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((recipe / "exp" / f"resynth_{tag}_test_clean" / "metrics.json").read_text())
    assert report["asr"]["model"].endswith(f"asr_{tag}_continuous")
    assert report["asr"]["decode_args"] == "--ctc_weight 0.5"  # run.sh's --inference_args, as stage 11
    assert sorted(report["asr"]["hyps"]["original"]) == sorted(feats)
    for sys_ in ("original", "copy", "continuous", "kmeans"):
        row = report["summary"][sys_]
        assert row["wer"] >= 0.0 and row["dwer"] >= 0.0
    assert report["summary"]["original"]["dwer"] == 0.0
    assert report["expected_order"]["wer"]["holds"] in (True, False)  # checked, either way
    assert (recipe / "exp" / f"demo_{tag}" / "index.html").is_file()  # one page per feature tag
    table = (recipe / "exp" / f"resynth_{tag}_test_clean" / "resynth.md").read_text()
    assert "| WER (%) ↓ | dWER (%) ↓ |" in table and re.search(r"^- WER: (holds|fails)", table, re.M)
