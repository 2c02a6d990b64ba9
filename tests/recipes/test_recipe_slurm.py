"""The Slurm backend against a real Slurm: the job runner, and the demo's sharded stages.

The session fixture uses a reachable cluster where ``sinfo`` answers (``SLURM_CONF`` is
honoured); otherwise it brings up a one-node Slurm on loopback (``slurm_cluster.LocalSlurm``:
munged, slurmctld, slurmd from a scratch dir, stopped by their PIDs afterwards). Where neither
works the tests skip with the reason, except under CI (``CI=true``), where they fail: CI
installs Slurm (``.ci/run``) so these tests always run there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from recipe_helpers import (
    TINY,
    UTILS,
    copy_recipe,
    env,
    have,
    result_bytes,
    result_files,
    run,
)
from slurm_cluster import LocalSlurm, SlurmStartError

pytestmark = pytest.mark.slow

TAG = "mel_40ms_llast"
OPTS = ["--discretizers", "pq", "--units_conf_dir", "conf/tiny", "--feats_portion", "0.5",
        "--test_sets", "test_clean", "--nj", "3"]


def slurm_up() -> bool:
    if not have("sbatch", "srun", "sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A Slurm to submit to: the reachable one, or a one-node Slurm started for the session."""
    if slurm_up():
        yield None
        return
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmStartError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no Slurm could be started: {e}")
        pytest.skip(f"no Slurm on this machine ({e})")
    saved = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        cluster.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


def test_slurm_array_names_failing_task(slurm, tmp_path):
    r = run([UTILS / "run_jobs.sh", "--backend", "slurm", "JOB=1:3", tmp_path / "log" / "x.JOB.log",
             "bash", "-c", "echo task JOB $SLURM_ARRAY_TASK_ID; [ JOB -ne 2 ]"], cwd=tmp_path, timeout=300)
    assert r.returncode == 1
    assert f"job 2 of 1:3 failed; see {tmp_path}/log/x.2.log" in r.stderr
    for j in (1, 3):
        log = (tmp_path / "log" / f"x.{j}.log").read_text()
        assert f"task {j} {j}" in log and "# Ended (code 0)" in log


def test_slurm_single_job_through_srun(slurm, tmp_path):
    r = run([UTILS / "run_jobs.sh", "--backend", "slurm", tmp_path / "one.log", "printf", "%s|", "a b"],
            cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "a b|" in (tmp_path / "one.log").read_text()


def test_slurm_stopped_run_cancels_its_jobs(slurm, tmp_path):
    """A run stopped by TERM (as a lost login session or Ctrl-C stops it) cancels its array:
    sbatch --wait alone would leave the tasks running beside the next run's."""
    p = subprocess.Popen(
        [str(UTILS / "run_jobs.sh"), "--backend", "slurm", "JOB=1:2", str(tmp_path / "log" / "s.JOB.log"),
         "bash", "-c", f"touch {tmp_path}/started.JOB; sleep 300"],
        cwd=tmp_path, env=env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started.1").exists():
        assert p.poll() is None and time.monotonic() < deadline, "the array never started"
        time.sleep(0.2)
    jobid = (tmp_path / "log" / "q" / "s.array.jobid").read_text().split(";")[0].strip()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert f"stopped by a signal; cancelled Slurm job {jobid}" in err
    while True:
        q = subprocess.run(["squeue", "-h", "-j", jobid, "-t", "PD,R,CG,CF,S", "-o", "%i %T"], capture_output=True, text=True)
        if not q.stdout.strip() or "Invalid job id" in q.stderr:
            break
        assert time.monotonic() < deadline + 60, f"job {jobid} still queued or running:\n{q.stdout}"
        time.sleep(0.5)


def _recipe(root):
    recipe = copy_recipe(root)
    tiny = recipe / "conf" / "tiny"
    tiny.mkdir()
    (tiny / "pq.yaml").write_text("method: pq\nnum_codebooks: 2\ncodebook_size: 8\nseed: 0\nmax_iter: 10\n")
    return recipe


def _engine(recipe, args, backend):
    e = env()
    e["RPQ_CMD_BACKEND"] = backend
    # a one-node test cluster has neither the CPUs nor the memory cmd.sh asks for: the
    # documented override, as a user would set it for a small partition
    e["RPQ_SLURM_OPTS"] = "--cpus-per-task=1 --mem=1G"
    return subprocess.run(["./run.sh", *args], cwd=recipe, env=e, capture_output=True, text=True,
                          timeout=1800)


@pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)")
def test_demo_sharded_stages_on_slurm_match_local(slurm, tmp_path):
    """Stages 2-4 of the demo (feature dump, fit, encode; 3 tasks per array) through
    RPQ_CMD_BACKEND=slurm give the local backend's outputs byte for byte; then a failing
    encoding task fails stage 4 and names its log."""
    recipe = _recipe(tmp_path)
    r = _engine(recipe, ["--stage", "1", "--stop_stage", "1", "--data_opts", TINY, *OPTS], "local")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _engine(recipe, ["--stage", "2", "--stop_stage", "4", *OPTS], "local")
    assert r.returncode == 0, r.stderr[-3000:]
    local = {k: result_bytes(p) for k, p in result_files(recipe).items()}
    assert f"dump/units_{TAG}_pq/train_clean/units" in local and f"exp/units_{TAG}_pq/codebook.pt" in local
    shutil.rmtree(recipe / "dump")
    shutil.rmtree(recipe / "exp")

    r = _engine(recipe, ["--stage", "2", "--stop_stage", "4", *OPTS], "slurm")
    assert r.returncode == 0, r.stderr[-3000:]
    on_slurm = {k: result_bytes(p) for k, p in result_files(recipe).items()}
    assert sorted(on_slurm) == sorted(local), r.stderr[-3000:]  # a warning there says which step fell back
    for k in local:
        assert on_slurm[k] == local[k], f"{k}: differs between the slurm and local backends"
    # the jobs did go through Slurm: array scripts, one log per task with its array index
    odir = recipe / f"dump/units_{TAG}_pq/train_clean"
    assert (odir / "log" / "q" / "encode.array.sh").is_file()
    for j in (1, 2, 3):
        log = (odir / "log" / f"encode.{j}.log").read_text()
        assert "# Ended (code 0)" in log

    # a failing task: every utterance of test_clean's last shard unreadable
    last = (recipe / "data/test_clean/wav.scp").read_text().splitlines()[-1].split()[1]
    with open(last, "wb") as f:
        f.write(b"not audio")
    units = recipe / f"dump/units_{TAG}_pq/test_clean"
    (units / ".done").unlink()
    # and the set's features, shared by the discretizers, dumped again (the dump skips the
    # unreadable utterance, so the encoding meets it)
    (recipe / f"dump/feats_{TAG}_test_clean/.done").unlink()
    r = _engine(recipe, ["--stage", "4", "--stop_stage", "4", *OPTS], "slurm")
    assert r.returncode != 0
    failed = units / "log" / "encode.2.log"
    assert f"job 2 of 1:2 failed; see {failed.relative_to(recipe)}" in r.stderr, r.stderr[-3000:]
    # the recipe encodes strictly (--on_encode_error fail): the task's log names the utterance
    text = failed.read_text()
    assert "error:" in text and "Format not recognised" in text, text[-2000:]
    assert not (units / ".done").exists()


def _job_record(log) -> str:
    """What ``scontrol show job`` said of the job from inside it (the test's command prints it)."""
    text = log.read_text()
    assert "# Ended (code 0)" in text, text[-2000:]
    return text


# a job's own record of its GPU request (TresPerNode for --gres, TresPerJob for --gpus); the
# variable's name is put together because run_jobs.sh replaces every "JOB" in a command
SHOW_JOB = ("v=SLURM_J; v=${v}OB_ID; scontrol show job ${!v} | tr ' ' '\\n'"
            " | grep -E '^Tres(PerNode|PerJob)=' || echo no-gpu-request")


@pytest.mark.parametrize("how", ["default", "gpu_opt", "env"])
def test_slurm_gpu_request_reaches_sbatch(slurm, tmp_path, how):
    """--gpu 1 (cmd.sh's cuda_cmd, the unit steps with --device cuda) asks Slurm for one GPU:
    --gres=gpu:1 by default, a site's own form through --gpu_opt or RPQ_SLURM_GPU_OPT; the
    job's record in Slurm shows the request, for an array (sbatch) and a single job (srun);
    --gpu 0 asks for none. (The one-node test cluster offers counted GPUs, slurm_cluster.py.)"""
    e = env()
    opt, want = [], r"TresPerNode=gres[:/]gpu:1\b"
    if how == "gpu_opt":
        opt, want = ["--gpu_opt", "--gres=gpu:{n}"], r"TresPerNode=gres[:/]gpu:1\b"
    elif how == "env":
        e["RPQ_SLURM_GPU_OPT"] = "--gpus={n}"
        want = r"TresPerJob=gres[:/]gpu:1\b"  # --gpus is a request per job
    for name, rng in (("arr.JOB", ["JOB=1:2"]), ("one", [])):
        r = subprocess.run([str(UTILS / "run_jobs.sh"), "--backend", "slurm", "--gpu", "1", *opt, *rng,
                            str(tmp_path / f"{name}.log"), "bash", "-c", SHOW_JOB],
                           cwd=tmp_path, env=e, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        for log in sorted(tmp_path.glob(f"{name.replace('JOB', '*')}.log")):
            assert re.search(want, _job_record(log)), log.read_text()[-1500:]
        assert sorted(p.name for p in tmp_path.glob(f"{name.replace('JOB', '*')}.log")) == (
            ["arr.1.log", "arr.2.log"] if rng else ["one.log"])
    r = run([UTILS / "run_jobs.sh", "--backend", "slurm", "--gpu", "0", tmp_path / "none.log",
             "bash", "-c", SHOW_JOB], cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = _job_record(tmp_path / "none.log")
    assert "no-gpu-request" in rec and "TresPer" not in rec


def test_run_jobs_gpu_must_be_a_count(tmp_path):
    r = run([UTILS / "run_jobs.sh", "--gpu", "yes", tmp_path / "x.log", "true"], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"{UTILS / 'run_jobs.sh'}: --gpu yes: must be 0 or a positive integer"
