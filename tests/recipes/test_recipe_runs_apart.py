"""Runs that cannot spoil each other or finished work, on a toy recipe whose every directory
option holds a space (the recipe's own path too; quotes, $(...) and ; in one test): a second run on the same experiment is
refused with one line naming the first, or waits for it (both started for real); a value that
makes no sense is refused in one line before anything is removed; an utterance shorter than
one frame is named under --on_encode_error fail and scored as a deletion under delete."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
from asset_helpers import make_data_dir
from recipe_helpers import ROOT, env, run
from test_recipe_stamps import make_toy_recipe

from rpq_units.evaluation.scoring import read_result

# every directory option, with a space (and the recipe's own path has one too)
DIRS = ["--datadir", "da ta", "--dumpdir", "du mp", "--expdir", "e xp", "--units_conf_dir", "conf/un its"]
FEAT = "mel_llast"
TAG = f"{FEAT}_km"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A recipe dir under a path with a space, linked to a copy of the engine; its data.sh
    copies tiny data dirs into --datadir. The test set holds one utterance of 50 samples."""
    root = tmp_path_factory.mktemp("runs") / "a repo"
    recipe = make_toy_recipe(root, "to y", "un its", "a sr")
    src = root / "source data"
    make_data_dir(src / "train", [0.6, 1.1, 0.5, 1.4, 0.8, 0.7], seed=0)
    make_data_dir(src / "dev", [0.7, 0.9], prefix="dev", seed=20)
    ids = make_data_dir(src / "test", [0.8, 0.6, 1.0, 0.9], prefix="tst", seed=30)
    wav = (src / "test" / "wav" / f"{ids[0]}.wav")
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 50).astype(np.float32), 16000)
    (recipe / "local").mkdir()
    (recipe / "local" / "data.sh").write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        f"mkdir -p {shlex.quote(str(recipe / 'da ta'))}\n"
        f"cp -r {shlex.quote(str(src))}/. {shlex.quote(str(recipe / 'da ta'))}/\n")
    (recipe / "local" / "data.sh").chmod(0o755)
    return recipe


def engine_args(*extra: str) -> list[str]:
    return ["./units_asr.sh", "--train_set", "train", "--valid_set", "dev", "--test_sets", "test",
            "--upstream", "mel", "--discretizers", "km", "--token_type", "char", "--nj", "2",
            "--inference_nj", "1", "--asr_config", "conf/a sr/train.yaml",
            "--inference_config", "conf/a sr/decode.yaml", "--feats_portion", "0.5", *DIRS, *extra]


def engine(recipe, *extra: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return run(engine_args(*extra), cwd=recipe, timeout=timeout)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def files_of(d) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sampled(toy):
    """Stages 1 and 2 finished."""
    r = engine(toy, "--stage", "1", "--stop_stage", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    return toy


@pytest.mark.parametrize("opt, value, says", [
    ("--feats_portion", "2", "--feats_portion 2: must be a number in (0, 1]"),
    ("--feats_portion", "half", "--feats_portion half: must be a number in (0, 1]"),
    ("--nj", "abc", "--nj abc: must be a positive integer"),
    ("--nj", "0", "--nj 0: must be a positive integer"),
    ("--max_frames", "-1", "--max_frames -1: must be 0 or a positive integer"),
    ("--layer", "x", "--layer x: must be an integer"),
    ("--lm_weight", "heavy", "--lm_weight heavy: must be a number"),
    ("--feats_batch_size", "0", "--feats_batch_size must be a positive integer"),
    ("--device", "tpu", "--device tpu: must be cpu, cuda or cuda:<index>"),
])
def test_bad_value_leaves_finished_work_untouched(sampled, opt, value, says):
    """One line, exit 2, before any stage: the finished feature sample is not redone or removed."""
    featdir = sampled / "du mp" / f"feats_{FEAT}_train"
    before = files_of(featdir)
    assert (featdir / ".done").exists()
    r = engine(sampled, "--stage", "2", "--stop_stage", "4", opt, value)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert says in r.stderr
    assert files_of(featdir) == before


def test_same_value_written_another_way_is_the_same_stamp(sampled):
    r = engine(sampled, "--stage", "2", "--stop_stage", "2", "--feats_portion", "0.50")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "features already dumped" in r.stderr


def _frames_fitted(udir) -> int:
    return int(re.search(r"fit: kmeans on (\d+) x", (udir / "fit.log").read_text()).group(1))


def _frames_sampled(featdir) -> int:
    return sum(int(n) for f in featdir.glob("feats.*.len") for n in f.read_text().split())


def test_second_run_on_the_same_experiment(sampled):
    """Started while a run fits on the 0.5 sample: a run with 0.3 is refused in one line naming
    the first (its pid), and with --lock_wait it waits and then redoes the sample; the codebook
    keeps the stamp of the sample it was fitted on."""
    toy = sampled
    udir = toy / "e xp" / f"units_{TAG}"
    featdir = toy / "du mp" / f"feats_{FEAT}_train"
    shutil.rmtree(udir, ignore_errors=True)
    lock = toy / "e xp" / ".lock"
    first = subprocess.Popen(engine_args("--stage", "2", "--stop_stage", "3"), cwd=toy, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while f"pid {first.pid} " not in (lock.read_text() if lock.exists() else ""):
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        r = engine(toy, "--stage", "2", "--stop_stage", "2", "--feats_portion", "0.3", timeout=120)
        assert first.poll() is None, "the first run ended before the second started: no overlap"
        assert r.returncode == 1
        assert len(errors(r.stderr)) == 1, r.stderr
        assert f"error: e xp is in use by another run (pid {first.pid} on " in r.stderr
        assert "--lock_wait" in r.stderr and "Stage 2" not in r.stderr

        waiting = subprocess.Popen(engine_args("--stage", "2", "--stop_stage", "2", "--feats_portion", "0.3",
                                               "--lock_wait", "600"),
                                   cwd=toy, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, first_err = first.communicate(timeout=900)
        assert first.returncode == 0, first_err[-3000:]
        fitted_on = _frames_sampled(featdir)  # the 0.5 sample, before the waiting run replaces it
        _, wait_err = waiting.communicate(timeout=900)
    finally:
        for p in (first, locals().get("waiting")):
            if p is not None and p.poll() is None:
                p.kill()
    assert waiting.returncode == 0, wait_err[-3000:]
    assert "is in use by another run" in wait_err and "waiting up to 600 s" in wait_err
    assert "(feats_portion: 0.5 -> 0.3): redoing it" in wait_err
    assert "feats_portion=0.5" in (udir / ".done").read_text()
    assert _frames_fitted(udir) == fitted_on
    assert "feats_portion=0.3" in (featdir / ".done").read_text()
    assert _frames_sampled(featdir) != fitted_on
    # back to 0.5: the sample is redone and the codebook (made from 0.5) stays as it is
    r = engine(toy, "--stage", "2", "--stop_stage", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _frames_sampled(featdir) == fitted_on and f"units_{TAG} already fitted" in r.stderr


def test_shell_characters_in_every_directory_option(sampled):
    """Quotes, $(...), ; and * in every directory option: stages 2-5 write where they are told
    and run nothing that a path spells."""
    toy = sampled
    odd = {"--datadir": "d'a $(touch injected);t\"a", "--dumpdir": "du*mp `touch injected` $HOME",
           "--expdir": "e;x&p |touch injected", "--units_conf_dir": "conf/un'its $(touch injected)"}
    shutil.copytree(toy / "da ta", toy / odd["--datadir"], ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(toy / "conf" / "un its", toy / odd["--units_conf_dir"])
    args = [a for a in engine_args("--stage", "2", "--stop_stage", "5", "--on_encode_error", "delete")]
    for opt, value in odd.items():
        args[args.index(opt) + 1] = value
    r = run(args, cwd=toy, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    units = toy / odd["--dumpdir"] / f"units_{TAG}"
    assert [len((units / s / "units").read_text().splitlines()) for s in ("train", "dev", "test")] == [6, 2, 3]
    assert (toy / odd["--expdir"] / f"units_{TAG}" / "tokens.txt").exists()
    assert not list(toy.rglob("injected")) and not (toy / "injected").exists()


@pytest.mark.slow
@pytest.mark.espnet
def test_spaces_in_every_directory_option_and_a_short_utterance(sampled):
    """Stages 1-12 with a space in every directory option; the 50-sample test utterance stops
    stage 4 with one line naming it under fail, and is scored as a deletion under delete."""
    toy = sampled
    short = "spk0-tst0000"
    r = engine(toy, "--stage", "1", "--stop_stage", "4")
    assert r.returncode == 1
    assert len([line for line in r.stderr.splitlines() if "(units_steps.sh) error:" in line]) == 1
    assert (f"error: encoding test with km failed: error: utterance {short}: audio of 50 samples "
            "(0.003 s) is shorter than one frame of upstream mel") in r.stderr
    assert "Traceback" not in r.stderr

    # the continuous reference (stage 11) as well: the demo's config, one epoch
    cont_config = (ROOT / "egs" / "mini_librispeech" / "conf" / "asr" / "train_continuous.yaml")
    (toy / "conf" / "a sr" / "cont.yaml").write_text(
        cont_config.read_text().replace("max_epoch: 32", "max_epoch: 1"))
    r = engine(toy, "--stage", "1", "--stop_stage", "12", "--on_encode_error", "delete",
               "--run_continuous", "true", "--continuous_config", "conf/a sr/cont.yaml")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "test: 1 of 4 utterances could not be encoded" in r.stderr
    ddir = toy / "e xp" / f"asr_{TAG}" / "decode_test_nolm"
    result = read_result(ddir / "result.txt")
    assert result["N"] == 8 and result["Del"] >= 2  # "HELLO 0" of the short utterance, deleted
    assert f"# no hypothesis (scored as deleted): {short}" in (ddir / "result.txt").read_text()
    # stage 11 too: the continuous reference's features, training and decoding under spaces
    cont = toy / "e xp" / f"asr_{FEAT}_continuous" / "decode_test_nolm"
    assert read_result(cont / "result.txt")["N"] == 8
    table = (toy / "RESULTS.md").read_text().splitlines()
    assert len([line for line in table if line.startswith(f"| {TAG} ")]) == 1
    assert len([line for line in table if line.startswith(f"| {FEAT}_continuous ")]) == 1
    # the stamp records --on_encode_error: back to fail, the encoding is redone (and stops)
    assert "on_encode_error=delete" in (toy / "du mp" / f"units_{TAG}" / "test" / ".done").read_text()
