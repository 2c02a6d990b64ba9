"""The demo recipe on a tiny generated corpus: stage 1 runs, validates and resumes; stage 8 names
each failed model when models train at once."""

from __future__ import annotations

import os
import shutil

import pytest
from recipe_helpers import TINY, copy_recipe, have, run

pytestmark = pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)")



@pytest.fixture
def recipe(tmp_path):
    """A copy of the repository's recipe tree (engine, demo recipe, local/) in tmp_path."""
    return copy_recipe(tmp_path)


def test_stage1_prepares_and_resumes(recipe):
    args = ["./run.sh", "--stage", "1", "--stop_stage", "1", "--data_opts", TINY]
    r = run(args, cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Stage 1: data preparation" in r.stderr
    for s, n in (("train_clean", 8), ("dev_clean", 2), ("test_clean", 2), ("test_heldout", 2)):
        assert len((recipe / "data" / s / "wav.scp").read_text().splitlines()) == n
    assert "1\tdata preparation\t" in (recipe / "exp" / "timing.tsv").read_text()
    stamp = (recipe / "data" / "train_clean" / "wav.scp").stat().st_mtime_ns

    # a half-written set from an interrupted run is never trusted: it is rebuilt
    shutil.rmtree(recipe / "corpus" / "LibriSpeech" / "test-heldout")
    (recipe / "corpus" / "LibriSpeech" / "test-heldout.tmp").mkdir()
    (recipe / "data" / "test_heldout" / ".done").unlink()
    r = run(args, cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train-clean exists, skipping" in r.stderr
    assert "wrote" in r.stderr and "test-heldout" in r.stderr
    assert (recipe / "data" / "train_clean" / "wav.scp").stat().st_mtime_ns == stamp
    assert not (recipe / "corpus" / "LibriSpeech" / "test-heldout.tmp").exists()

    # other data options than the ones the data was prepared with: a clear refusal, not the old data
    r = run(["./run.sh", "--stage", "1", "--stop_stage", "1", "--data_opts", TINY + " --seed 1"],
            cwd=recipe)
    assert r.returncode == 1
    assert "error: data was prepared with other settings (data_opts: " in r.stderr
    assert "--seed 1); to keep it, use a new --datadir" in r.stderr
    assert (recipe / "data" / "train_clean" / "wav.scp").stat().st_mtime_ns == stamp


def test_stage1_stops_on_bad_corpus(recipe):
    r = run(["./run.sh", "--stage", "1", "--stop_stage", "1", "--data_opts", TINY], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.rmtree(recipe / "data")
    flac = sorted((recipe / "corpus" / "LibriSpeech" / "dev-clean").glob("*/*/*.flac"))[0]
    flac.write_bytes(b"garbage")
    r = run(["./run.sh", "--stage", "1", "--stop_stage", "1", "--data_opts", TINY], cwd=recipe)
    assert r.returncode != 0
    assert f"{flac}: cannot decode audio" in r.stderr


@pytest.mark.slow  # real ESPnet mt_train processes failing (about 10 s of imports each)
def test_parallel_training_failure_names_each_log(recipe):
    """--train_jobs 2: both models train at once; each failure is named with its log and
    nothing is marked trained, while a model already trained is skipped; a trained model made
    with other settings stops the run before anything is touched."""
    tag = "mel_40ms_llast"
    args = ["./run.sh", "--stage", "8", "--stop_stage", "8", "--train_jobs", "2",
            "--discretizers", "kmeans pq rpq"]
    r = run(args[:-1] + ["kmeans"], cwd=recipe)
    assert r.returncode == 1
    # the K-means model finishes: its done marker is the stamp the engine wrote when it started
    kdir = recipe / "exp" / f"asr_{tag}_kmeans"
    stamp = (kdir / ".stamp").read_text()
    assert "asr_args=\n" in stamp and "units_config.kmeans=" in stamp
    (kdir / ".done_train").write_text(stamp)
    r = run(args, cwd=recipe)
    assert r.returncode == 1
    assert f"exp/asr_{tag}_kmeans already trained" in r.stderr
    for d in ("pq", "rpq"):
        adir = f"exp/asr_{tag}_{d}"
        assert f"training {adir} failed (log: {adir}/train.log)" in r.stderr
        log = (recipe / adir / "train.log").read_text()
        assert "mt_train" in log
        # each of the 2 jobs gets half the machine's CPUs as threads (at least one)
        assert f"threads={max(1, (os.cpu_count() or 1) // 2)} " in log
        assert not (recipe / adir / ".done_train").exists()

    # other settings for the trained model: one line naming the option, nothing run or removed
    r = run(args + ["--asr_args", "--max_epoch 2"], cwd=recipe)
    assert r.returncode == 1
    refusal = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(refusal) == 1, r.stderr
    assert (f"exp/asr_{tag}_kmeans was trained with other settings (asr_args:  -> --max_epoch 2)"
            in refusal[0])
    assert "--expdir" in refusal[0]
    assert "Stage 8" not in r.stderr
    assert (kdir / ".done_train").read_text() == stamp
    # a model trained before settings were recorded is not trusted either
    (kdir / ".done_train").write_text("Fri Nov 27 10:00:00 UTC 2026\n")
    r = run(args, cwd=recipe)
    assert r.returncode == 1
    assert "was trained with other settings (settings not recorded" in r.stderr
