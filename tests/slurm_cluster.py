"""A one-node Slurm on loopback for the tests: munged, slurmctld and slurmd run from a scratch
directory (their own config, sockets, ports, state and logs) and are stopped by their PIDs.

Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge (``.ci/run``
installs them). The settings are those verified for a single node (no accounting, one line per
finished task in a jobcomp file, short job ages so ``sbatch --wait`` returns quickly), and GPUs
as a generic resource on stand-in device files, so a job's GPU request is scheduled and recorded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo")


class SlurmStartError(RuntimeError):
    """The local Slurm could not be brought up (the message says which daemon and its log)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


class LocalSlurm:
    """``start()`` brings the cluster up under ``root``; ``env`` is what clients need
    (``SLURM_CONF``); ``stop()`` ends the daemons by the PIDs in their pidfiles."""

    def __init__(self, root: str | os.PathLike, cpus: int | None = None, gpus: int = 1) -> None:
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.gpus = min(gpus, 4)  # GPUs the node offers (stand-ins, at most 4)
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.pidfiles = {
            "slurmd": self.root / "run" / "slurmd.pid",
            "slurmctld": self.root / "run" / "slurmctld.pid",
            "munged": self.root / "run" / "munged.pid",
        }

    def _log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def _run(self, cmd: list[str], what: str) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SlurmStartError(
                f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}; "
                f"log: {self._log(what)}"
            )

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        missing = [d for d in DAEMONS if not shutil.which(d)]
        if missing:
            raise SlurmStartError(f"not installed: {', '.join(missing)}")
        if os.geteuid() != 0:
            raise SlurmStartError("the local Slurm daemons need root")
        for d in ("etc", "run", "log", "state", "spool", "munge-key", "munge-sock"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "munge-key").chmod(0o700)
        (self.root / "munge-sock").chmod(0o755)
        key = self.root / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = self.root / "munge-sock" / "munge.socket"
        self._run(["munged", "--force", f"--socket={sock}", f"--key-file={key}",
                   f"--pid-file={self.pidfiles['munged']}", f"--log-file={self._log('munged')}",
                   f"--seed-file={self.root / 'munge-key' / 'munged.seed'}"], "munged")
        # GPUs as a generic resource on stand-in device files: a job's --gres=gpu:N is
        # scheduled and recorded (scontrol show job: TresPerNode=gres:gpu:N) on a node without
        # a real GPU (slurmd counts the gpus of gres.conf by their files)
        fake = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")[: self.gpus]
        (self.root / "etc" / "gres.conf").write_text(
            "".join(f"NodeName=localhost Name=gpu File={f}\n" for f in fake))
        self.conf.write_text("\n".join([
            "ClusterName=rpqtest",
            *(["GresTypes=gpu"] if self.gpus else []),
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={sock}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.pidfiles['slurmctld']}",
            f"SlurmdPidFile={self.pidfiles['slurmd']}",
            f"SlurmctldLogFile={self._log('slurmctld')}",
            f"SlurmdLogFile={self._log('slurmd')}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.root / 'log' / 'jobcomp.txt'}",
            "MinJobAge=4",
            "SchedulerParameters=batch_sched_delay=0",
            "MpiDefault=none",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={int(_mem_mb() * 0.9)}" + (f" Gres=gpu:{self.gpus}" if self.gpus else "")
            + " State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        env = {**os.environ, **self.env}
        try:
            self._run_env(["slurmctld", "-i", "-f", str(self.conf)], "slurmctld", env)
            self._run_env(["slurmd", "-N", "localhost", "-f", str(self.conf)], "slurmd", env)
            self._wait_idle(env, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _run_env(self, cmd: list[str], what: str, env: dict[str, str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        if r.returncode != 0:
            raise SlurmStartError(
                f"{what} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}; "
                f"log: {self._log(what)}"
            )

    def _wait_idle(self, env: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                               env=env, timeout=30)
            state = (r.stdout or r.stderr).strip()
            if r.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise SlurmStartError(
            f"node localhost not idle after {timeout:.0f} s (sinfo: {state!r}); "
            f"logs: {self._log('slurmctld')}, {self._log('slurmd')}"
        )

    def stop(self) -> None:
        """End slurmd, slurmctld and munged by the PIDs in their pidfiles (TERM, then KILL)."""
        for name in ("slurmd", "slurmctld", "munged"):
            f = self.pidfiles[name]
            try:
                pid = int(f.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
