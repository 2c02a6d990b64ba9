"""The job runner's Slurm backend, against a running Slurm (skipped where there is none).

Any reachable cluster works (sinfo must answer; SLURM_CONF is honoured); a one-node Slurm on
loopback (slurmctld + slurmd + munge, node localhost) is enough.
"""

from __future__ import annotations

import subprocess

import pytest
from recipe_helpers import UTILS, have, run


def slurm_up() -> bool:
    if not have("sbatch", "srun", "sinfo"):
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not slurm_up(), reason="no running Slurm (sbatch/sinfo) on this machine")]


def test_slurm_array_names_failing_task(tmp_path):
    r = run([UTILS / "run_jobs.sh", "--backend", "slurm", "JOB=1:3", tmp_path / "log" / "x.JOB.log",
             "bash", "-c", "echo task JOB $SLURM_ARRAY_TASK_ID; [ JOB -ne 2 ]"], cwd=tmp_path, timeout=300)
    assert r.returncode == 1
    assert f"job 2 of 1:3 failed; see {tmp_path}/log/x.2.log" in r.stderr
    for j in (1, 3):
        log = (tmp_path / "log" / f"x.{j}.log").read_text()
        assert f"task {j} {j}" in log and "# Ended (code 0)" in log


def test_slurm_single_job_through_srun(tmp_path):
    r = run([UTILS / "run_jobs.sh", "--backend", "slurm", tmp_path / "one.log", "printf", "%s|", "a b"],
            cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "a b|" in (tmp_path / "one.log").read_text()
