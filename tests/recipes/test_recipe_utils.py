"""The recipe shell utilities: option parsing, the job runner, split/merge, data dir checks."""

from __future__ import annotations

import os
import time

import pytest
from recipe_helpers import ROOT, UTILS, run

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
nj=4              # number of jobs
use_gpu=false     # decode on GPU
out_dir=exp/x     # output directory
help_message="Usage: $0 [options] <arg>"
. {utils}/parse_options.sh
echo "nj=$nj use_gpu=$use_gpu out_dir=$out_dir rest=$*"
"""


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "s.sh"
    p.write_text(SCRIPT.format(utils=UTILS))
    return p


def test_options_set_variables(script):
    r = run(["bash", script, "--nj", "8", "--use-gpu", "true", "--out_dir=a b", "pos1", "pos2"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "nj=8 use_gpu=true out_dir=a b rest=pos1 pos2"


def test_unknown_option_is_usage_error(script):
    r = run(["bash", script, "--njobs", "3"])
    assert r.returncode == 2
    assert "unknown option --njobs" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["--nj"], "needs a value"),
    (["--use_gpu", "yes"], "takes true or false"),
    (["--help_message", "x"], "unknown option"),
])
def test_bad_option_values(script, args, message):
    r = run(["bash", script, *args])
    assert r.returncode == 2
    assert message in r.stderr


def test_help_lists_options_with_defaults(script):
    r = run(["bash", script, "--nj", "7", "--help"])
    assert r.returncode == 0
    assert "Usage:" in r.stdout
    assert "--nj" in r.stdout and "[7]" in r.stdout and "number of jobs" in r.stdout
    assert "--use_gpu" in r.stdout and "[false]" in r.stdout
    assert "--out_dir" in r.stdout and "[exp/x]" in r.stdout


def test_engine_help_and_usage_errors():
    recipe = ROOT / "egs" / "mini_librispeech"
    r = run(["./run.sh", "--help"], cwd=recipe)
    assert r.returncode == 0, r.stderr
    for opt in ("--stage", "--stop_stage", "--discretizers", "--upstream", "--use_lm", "--nj"):
        assert opt in r.stdout
    r = run(["./run.sh", "--no_such_option", "1"], cwd=recipe)
    assert r.returncode == 2 and "unknown option --no_such_option" in r.stderr
    r = run(["./units_asr.sh", "--stage", "12"], cwd=recipe)
    assert r.returncode == 2 and "--train_set is required" in r.stderr
    r = run(["./run.sh", "--train_jobs", "two"], cwd=recipe)
    assert r.returncode == 2 and "--train_jobs must be a positive integer" in r.stderr


# ---- the job runner -------------------------------------------------------------------
def test_job_substitution_and_logs(tmp_path):
    r = run([UTILS / "run_jobs.sh", "JOB=1:3", tmp_path / "log" / "x.JOB.log",
             "bash", "-c", f"echo job JOB > {tmp_path}/out.JOB"])
    assert r.returncode == 0, r.stderr
    for j in (1, 2, 3):
        assert (tmp_path / f"out.{j}").read_text() == f"job {j}\n"
        log = (tmp_path / "log" / f"x.{j}.log").read_text().splitlines()
        assert log[0].startswith("# bash -c")
        assert log[-1].startswith("# Ended (code 0)")


def test_arguments_with_spaces_are_kept(tmp_path):
    r = run([UTILS / "run_jobs.sh", tmp_path / "one.log", "printf", "%s|", "a b", "c"])
    assert r.returncode == 0, r.stderr
    assert "a b|c|" in (tmp_path / "one.log").read_text()


def test_failed_job_names_the_cause_from_its_log(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("# cmd\nTraceback (most recent call last):\n  File x\n"
                   "OSError: [Errno 28] No space left on device: 'out.tmp'\n# Ended (code 1)\n")
    r = run([UTILS / "job_error.sh", log])
    assert r.stdout.strip() == "OSError: [Errno 28] No space left on device: 'out.tmp'"
    log.write_text("# cmd\nINFO start\nerror: utterance u1: bad\nmore\n# Ended (code 1)\n")
    assert run([UTILS / "job_error.sh", log]).stdout.strip() == "error: utterance u1: bad"
    log.write_text("# cmd\nerror: fine\n# Ended (code 0) at now\n")
    assert run([UTILS / "job_error.sh", log]).stdout.strip() == ""


def test_failing_job_fails_and_names_its_log(tmp_path):
    r = run([UTILS / "run_jobs.sh", "JOB=1:4", tmp_path / "x.JOB.log",
             "bash", "-c", "echo working JOB; [ JOB -ne 3 ] || { echo broken input >&2; exit 7; }"])
    assert r.returncode == 1
    # with its cause: the job's last line of output (an "error: " line or a Python exception's
    # last line where it has one, e.g. "OSError: [Errno 28] No space left on device")
    assert f"job 3 of 1:4 failed; see {tmp_path}/x.3.log (broken input)" in r.stderr
    assert "x.1.log" not in r.stderr
    log = (tmp_path / "x.3.log").read_text()
    assert "broken input" in log and "# Ended (code 7)" in log
    # the other jobs ran to completion
    assert "# Ended (code 0)" in (tmp_path / "x.4.log").read_text()


def test_single_failing_job_shows_log_tail(tmp_path):
    r = run([UTILS / "run_jobs.sh", tmp_path / "one.log", "bash", "-c", "echo the reason; exit 3"])
    assert r.returncode == 1
    assert "one.log" in r.stderr and "the reason" in r.stderr


def test_jobs_run_in_parallel(tmp_path):
    t0 = time.monotonic()
    r = run([UTILS / "run_jobs.sh", "--max_jobs_run", "4", "JOB=1:4", tmp_path / "x.JOB.log", "sleep", "2"])
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert elapsed < 6, f"4 jobs of 2 s took {elapsed:.1f} s: not parallel"


def test_default_parallelism_ignores_omp_threads(tmp_path, monkeypatch):
    """OMP_NUM_THREADS=1 (threads inside each job) must not serialise the jobs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    t0 = time.monotonic()
    r = run([UTILS / "run_jobs.sh", "JOB=1:2", tmp_path / "x.JOB.log", "sleep", "2"])
    assert r.returncode == 0, r.stderr
    if (os.cpu_count() or 1) > 1:
        assert time.monotonic() - t0 < 3.8, "jobs ran one after another"


def test_max_jobs_run_limits_concurrency(tmp_path):
    r = run([UTILS / "run_jobs.sh", "--max_jobs_run", "1", "JOB=1:3", tmp_path / "x.JOB.log", "bash", "-c",
             f"mkdir {tmp_path}/lock && sleep 0.3 && rmdir {tmp_path}/lock"])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args, message", [
    (["JOB=3:1", "x.log", "true"], "empty job range"),
    (["JOBS=1:2", "x.log", "true"], "bad job range"),
    (["--backend", "pbs", "x.log", "true"], "unknown backend"),
    (["--frobnicate", "1", "x.log", "true"], "unknown option"),
])
def test_runner_usage_errors(tmp_path, args, message):
    r = run([UTILS / "run_jobs.sh", *args], cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr


# ---- split / merge ------------------------------------------------------------------------
def test_split_covers_every_line_once(tmp_path):
    lines = [f"utt{i:03d} x{i}" for i in range(11)]
    (tmp_path / "in.scp").write_text("\n".join(lines) + "\n")
    outs = [tmp_path / f"part.{j}" for j in (1, 2, 3)]
    r = run([UTILS / "split_scp.sh", tmp_path / "in.scp", *outs])
    assert r.returncode == 0, r.stderr
    parts = [p.read_text().splitlines() for p in outs]
    assert [len(p) for p in parts] == [4, 4, 3]
    assert sum(parts, []) == lines
    r = run([UTILS / "split_scp.sh", tmp_path / "in.scp", *[tmp_path / f"p{j}" for j in range(12)]])
    assert r.returncode == 1 and "fewer than the 12 parts" in r.stderr


def test_split_of_long_lines(tmp_path):
    """Unit lines are long (thousands of tokens): every part is complete, nothing is cut short."""
    lines = [f"utt{i:03d} " + " ".join(str(j) for j in range(3000)) for i in range(150)]
    (tmp_path / "units").write_text("\n".join(lines) + "\n")
    outs = [tmp_path / f"keys.{j}" for j in (1, 2)]
    r = run([UTILS / "split_scp.sh", tmp_path / "units", *outs])
    assert r.returncode == 0, r.stderr
    assert sum((p.read_text().splitlines() for p in outs), []) == lines


def test_merge_sorts_and_refuses_duplicates(tmp_path):
    (tmp_path / "a").write_text("b 2\nd 4\n")
    (tmp_path / "b").write_text("c 3\na 1\n")
    r = run([UTILS / "merge_sorted.sh", tmp_path / "out", tmp_path / "a", tmp_path / "b"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_text() == "a 1\nb 2\nc 3\nd 4\n"
    (tmp_path / "c").write_text("b 9\n")
    r = run([UTILS / "merge_sorted.sh", tmp_path / "out2", tmp_path / "a", tmp_path / "c"])
    assert r.returncode == 1 and "duplicate key 'b'" in r.stderr
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out2.tmp").exists()
    r = run([UTILS / "merge_sorted.sh", tmp_path / "out3", tmp_path / "a", tmp_path / "missing"])
    assert r.returncode == 1 and "missing part" in r.stderr


# ---- validate_data_dir --------------------------------------------------------------------
def _data_dir(d, **override):
    d.mkdir()
    tables = {
        "wav.scp": "s1-a /x/a.flac\ns1-b /x/b.flac\ns2-c /x/c.flac\n",
        "text": "s1-a HELLO\ns1-b WORLD\ns2-c AGAIN\n",
        "utt2spk": "s1-a s1\ns1-b s1\ns2-c s2\n",
        "spk2utt": "s1 s1-a s1-b\ns2 s2-c\n",
    }
    tables.update(override)
    for name, content in tables.items():
        (d / name).write_text(content)
    return d


def test_valid_data_dir(tmp_path):
    r = run([UTILS / "validate_data_dir.sh", _data_dir(tmp_path / "d")])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("override, message", [
    ({"text": "s1-b WORLD\ns1-a HELLO\ns2-c AGAIN\n"}, "text is not sorted"),
    ({"wav.scp": "s1-a /x/a.flac\ns1-a /x/b.flac\ns2-c /x/c.flac\n"}, "duplicate key 's1-a'"),
    ({"text": "s1-a HELLO\ns2-c AGAIN\n"}, "utterance 's1-b' is in only one of"),
    ({"spk2utt": "s1 s1-a\ns2 s2-c\n"}, "spk2utt does not match"),
    ({"utt2spk": ""}, "empty"),
])
def test_invalid_data_dirs(tmp_path, override, message):
    r = run([UTILS / "validate_data_dir.sh", _data_dir(tmp_path / "d", **override)])
    assert r.returncode == 1
    assert message in r.stderr


def test_missing_table(tmp_path):
    d = _data_dir(tmp_path / "d")
    (d / "utt2spk").unlink()
    r = run([UTILS / "validate_data_dir.sh", d])
    assert r.returncode == 1 and f"missing {d}/utt2spk" in r.stderr


@pytest.mark.parametrize("recipe", ["mini_librispeech", "mini_ml_superb"])
def test_demo_continuous_reference_is_trained_like_the_discrete_models(recipe):
    """The demos' continuous reference differs from their discrete models only in its input:
    same encoder (input layer, so encoder frame rate, included), decoder, SpecAugment,
    optimiser, batch size and epochs. (A conv2d input layer at 12 epochs, batch 32, once
    understated the reference by 34 WER points on the log-mel demo.)"""
    import yaml

    conf = ROOT / "egs" / recipe / "conf" / "asr"
    cont = yaml.safe_load((conf / "train_continuous.yaml").read_text())
    disc = yaml.safe_load((conf / "train_discrete_asr.yaml").read_text())
    for key in ("encoder", "encoder_conf", "decoder", "decoder_conf", "specaug", "specaug_conf",
                "optim", "optim_conf", "scheduler", "scheduler_conf", "batch_type", "batch_size",
                "max_epoch", "best_model_criterion", "keep_nbest_models", "seed"):
        assert cont.get(key) == disc.get(key), f"{recipe}: {key} {cont.get(key)} != {disc.get(key)}"
    for key in ("ctc_weight", "lsm_weight", "length_normalized_loss"):
        assert cont["model_conf"][key] == disc["model_conf"][key], key


@pytest.mark.parametrize("base", [
    ROOT / "egs" / "mini_librispeech" / "conf" / "asr" / "train_continuous.yaml",
    ROOT / "egs" / "mini_ml_superb" / "conf" / "asr" / "train_continuous.yaml",
    ROOT / "conf" / "asr" / "train_continuous_ebranchformer.yaml",
])
def test_continuous_config_builds_an_espnet_model_on_dumped_features(tmp_path, base):
    """make_asr_config.py --feats_json: no frontend (features come from the data loader, as
    kaldi_ark), input_size from the dump, a linear preencoder fitted to it; ESPnet's ASR task
    builds the model from the written config and runs it on (B, T, D) features."""
    import argparse
    import json
    import sys

    import torch
    import yaml
    from espnet2.tasks.asr import ASRTask

    (tmp_path / "feats.json").write_text(json.dumps({"dim": 48, "frame_rate": 25.0}))
    out = tmp_path / "config.yaml"
    r = run([sys.executable, str(UTILS / "make_asr_config.py"), "--config", str(base),
             "--feats_json", str(tmp_path / "feats.json"), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(out.read_text())
    assert cfg["input_size"] == 48 and "frontend" not in cfg
    assert not any(p.startswith("frontend") for p in cfg.get("freeze_param") or [])

    (tmp_path / "tokens.txt").write_text("<blank>\n<unk>\nA\nB\n<sos/eos>\n")
    parser = ASRTask.get_parser()
    args = parser.parse_args(["--config", str(out), "--token_list", str(tmp_path / "tokens.txt"),
                              "--token_type", "char"])
    model = ASRTask.build_model(argparse.Namespace(**vars(args)))
    assert model.frontend is None
    loss, stats, _ = model(speech=torch.randn(2, 60, 48), speech_lengths=torch.tensor([60, 50]),
                           text=torch.tensor([[2, 3, 2], [3, 2, -1]]), text_lengths=torch.tensor([3, 2]))
    assert torch.isfinite(loss)


def test_spm_train_wrapper(tmp_path):
    """utils/spm_train.py trains the engine's sentencepiece model (stage 5, --token_type bpe)
    from spm_train-style flags; a path with a space survives; a bad argument is a usage error."""
    import sys

    import sentencepiece as spm

    d = tmp_path / "token list"
    d.mkdir()
    words = ["RED APPLE", "GREEN APPLE", "A BIG DOG", "THE RED DOG RUNS", "APPLES AND DOGS"]
    (d / "train.txt").write_text("\n".join(words * 20) + "\n")
    r = run([sys.executable, str(UTILS / "spm_train.py"), f"--input={d / 'train.txt'}",
             "--vocab_size=20", "--model_type=unigram", f"--model_prefix={d / 'bpe'}",
             "--character_coverage=1.0"])
    assert r.returncode == 0, r.stderr
    sp = spm.SentencePieceProcessor(model_file=str(d / "bpe.model"))
    assert sp.get_piece_size() == 20
    assert sp.decode(sp.encode("THE RED APPLE")) == "THE RED APPLE"
    r = run([sys.executable, str(UTILS / "spm_train.py"), "vocab_size", "30"])
    assert r.returncode == 2 and "expected --flag=value" in r.stderr
