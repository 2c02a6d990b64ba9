"""Jobs that die: SIGKILL at seeded random points, a full disk and a read-only output dir.

The demo recipe runs on a tiny generated corpus. Each sharded stage (2 feature dump, 3 fit +
analyze, 4 encode + merge) and ESPnet training (8) and decoding (9) runs once uninterrupted (the
reference), then again from the state before it, killed with SIGKILL (its whole process group:
the engine, the job runner and every job, as when a cluster job or a node dies) at seeded random
points, and rerun. Checked after each kill: every output under its final name is absent or
byte-identical to the reference (outputs are written to temporary names and renamed; a shard
part must hold only whole lines of the reference), and after the rerun: the outputs are
byte-identical to the reference, work that was finished before the kill (a done marker) is not
redone, and training resumed from ESPnet's ``checkpoint.pth`` instead of starting over.

The rpq-units commands are also killed alone, and run on a full tmpfs and a read-only one: one
``error:`` line naming the output, exit 1, earlier outputs intact, no temporary file left.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from recipe_helpers import (
    TINY,
    copy_recipe,
    env,
    have,
    result_bytes,
    result_files,
    write_tiny_confs,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)"),
]

SEED = 20261127
# kill points per stage: enough to land in different phases (startup, jobs running, merge,
# between discretizers/sets) while the whole file runs in a few minutes on 2 CPU cores
KILLS = {2: 2, 3: 2, 4: 3, 8: 2, 9: 2}
OPTS = ["--discretizers", "kmeans pq", "--units_conf_dir", "conf/tiny", "--feats_portion", "0.5",
        "--test_sets", "test_clean", "--nj", "2", "--inference_nj", "2", "--token_type", "char",
        "--asr_config", "conf/tiny/asr.yaml", "--inference_args", "--beam_size 2 --maxlenratio 0.3"]
ONE = ["--discretizers", "pq"]  # encoding (4) and ESPnet (5-9): one discretizer
TAG = "mel_40ms_llast"


# ---- running and killing ----------------------------------------------------------------


def start(cwd: Path, args: list[str], err: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``./run.sh args`` in its own process group (stderr to ``err``)."""
    with open(err, "w") as fh:
        return subprocess.Popen(["./run.sh", *args], cwd=cwd, env={**env(), **(extra_env or {})},
                                stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True)


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    # the jobs are gone too: nothing of the group may go on writing into the tree
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-o", "pid=,stat=", "-s", str(p.pid)], capture_output=True, text=True).stdout
        if all("Z" in line.split()[1] for line in out.splitlines() if line.split()):
            return
        time.sleep(0.1)
    pytest.fail(f"processes of the killed group {p.pid} still run:\n{out}")


def lock_holders(lock: Path) -> str:
    """The processes that have ``lock`` open (from /proc), one per line, with their session."""
    lines = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if fd_dir.parent.name == str(os.getpid()):  # this test's own handle
            continue
        try:
            if any(os.readlink(fd) == str(lock) for fd in fd_dir.iterdir()):
                pid = int(fd_dir.parent.name)
                cmd = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
                lines.append(f"pid {pid} (session {os.getsid(pid)}): {cmd}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return "\n".join(lines) or "(none found)"


def wait_unlocked(cwd: Path, timeout_s: float = 10.0) -> None:
    """Wait until the killed run's experiment locks (flock on <dir>/.lock, which the engine and
    every job it started hold) are free; fail naming the holders if they stay taken. The kernel
    drops a lock when the last process holding it has exited, which kill_group waited for; a
    lock still taken after that names a process that escaped the kill."""
    for lock in sorted(cwd.glob("*/.lock")):
        start = time.monotonic()
        holders = None
        with open(lock, "a") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(fh, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    holders = holders or lock_holders(lock)
                    if time.monotonic() - start > timeout_s:
                        pytest.fail(f"{lock} is still locked {timeout_s:.0f} s after the killed "
                                    f"run's processes ended; held by:\n{lock_holders(lock)}")
                    time.sleep(0.1)
        waited = time.monotonic() - start
        # a fraction of a second is the kernel releasing the dead processes' files (seen: 0.1 s
        # with no process left holding the file); longer is said, so that it is seen
        if holders is not None and waited > 1.0:
            warnings.warn(f"{lock} was still locked after the killed run's processes ended, "
                          f"free {waited:.1f} s later; held by: {holders}",
                          stacklevel=2)


def run_killed(cwd: Path, args: list[str], err: Path, frac: float, span_s: float, reset,
               when=None, extra_env: dict[str, str] | None = None, settled=None) -> str:
    """Run, wait until ``when()`` holds (if given), then ``frac`` of ``span_s`` (the reference
    run's time for that part) seconds more, then SIGKILL the whole group. A run that ends before
    the kill point ran faster than the reference (a lighter load): ``reset()`` puts the state
    back and it is run and killed again at ``frac`` of the time it took; a second such run
    fails. With ``settled``, the group is stopped (SIGSTOP) at the kill point and killed only
    once ``settled()`` holds on the stopped tree, else let go on a little and tried again: a
    test that needs the kill outside a window (a file being written) says so instead of
    depending on the load. Returns the stderr of the killed run."""
    for attempt in (1, 2):
        p = start(cwd, args, err, extra_env)
        t0 = None if when else time.monotonic()
        while p.poll() is None:
            if t0 is None and when():
                t0 = time.monotonic()
            if t0 is not None and time.monotonic() - t0 >= frac * span_s:
                break
            time.sleep(0.02)
        if settled is not None:
            wait_settled(p, settled)
        finished = p.poll()
        took = time.monotonic() - t0 if t0 is not None else 0.0
        kill_group(p)
        wait_unlocked(cwd)
        text = err.read_text()
        if finished is None:
            return text
        assert attempt == 1 and finished == 0 and took > 0, (
            f"the run ended (code {finished}) before the kill point ({attempt} runs):\n{text[-2000:]}")
        reset()
        span_s = took
    raise AssertionError("unreachable")


def wait_settled(p: subprocess.Popen, settled) -> None:
    """Stop the group and leave it stopped once ``settled()`` holds (it may also end meanwhile)."""
    for _ in range(600):
        if p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGSTOP)
        time.sleep(0.05)  # the stop reaches every process of the group
        if settled():
            return
        os.killpg(p.pid, signal.SIGCONT)
        time.sleep(0.1)
    pytest.fail("the run never stopped outside the window the test avoids (60 s)")


def run_ok(cwd: Path, args: list[str], err: Path, extra_env: dict[str, str] | None = None) -> tuple[str, float]:
    t = time.monotonic()
    p = start(cwd, args, err, extra_env)
    rc = p.wait(timeout=900)
    text = err.read_text()
    assert rc == 0, f"./run.sh {' '.join(args)} failed ({rc}):\n{text[-4000:]}"
    return text, time.monotonic() - t


def stage_args(s: int, more: list[str] = ()) -> list[str]:
    return ["--stage", str(s), "--stop_stage", str(s), *OPTS, *(ONE if s >= 4 else ()), *more]


# ---- comparing trees -------------------------------------------------------------------


def check_partial(work: Path, ref: Path, only: tuple[str, ...]) -> None:
    """After a kill: every result file under its final name matches the reference; temp files
    may be left (never read), a shard part holds whole reference lines only."""
    ref_out = result_files(ref)
    for rel, p in result_files(work).items():
        if not rel.startswith(only):
            continue
        if p.name.endswith(".tmp"):
            continue
        if rel in ref_out:
            assert result_bytes(p) == result_bytes(ref_out[rel]), f"{rel}: differs from the reference after a kill"
            continue
        if p.parent.name in ("train_clean", "dev_clean", "test_clean") and p.name.startswith("units."):
            merged = set((ref / rel).parent.joinpath("units").read_text().splitlines(keepends=True))
            lines = p.read_text().splitlines(keepends=True)
            assert all(line in merged for line in lines), f"{rel}: a partial shard under its final name"
            continue
        pytest.fail(f"{rel}: not in the reference run (a partial or stray output after a kill)")


def check_same(work: Path, ref: Path, only: tuple[str, ...], skip: tuple[str, ...] = ()) -> None:
    a = {k: v for k, v in result_files(work).items() if k.startswith(only) and not k.endswith(skip)}
    b = {k: v for k, v in result_files(ref).items() if k.startswith(only) and not k.endswith(skip)}
    assert sorted(a) == sorted(b), f"files differ: {sorted(set(a) ^ set(b))}"
    for rel in a:
        assert result_bytes(a[rel]) == result_bytes(b[rel]), f"{rel}: differs from the uninterrupted run"


def stamps(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


# ---- the reference runs ----------------------------------------------------------------


class Tree:
    """The recipe at one fixed path (outputs hold absolute paths), with snapshots after each
    reference stage to restore it from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work" / "egs" / "mini_librispeech"
        self.times: dict[int, float] = {}
        self.logs: dict[int, str] = {}

    def snap(self, name: str) -> Path:
        return self.root / "snap" / name

    def save(self, name: str) -> None:
        shutil.copytree(self.root / "work", self.snap(name), symlinks=True)

    def restore(self, name: str) -> None:
        shutil.rmtree(self.root / "work")
        shutil.copytree(self.snap(name), self.root / "work", symlinks=True)

    def ref(self, name: str) -> Path:
        return self.snap(name) / "egs" / "mini_librispeech"


@pytest.fixture(scope="module")
def units_ref(tmp_path_factory) -> Tree:
    """Stages 1-4 uninterrupted (two discretizers fitted, one of them encoded), a snapshot
    after each."""
    t = Tree(tmp_path_factory.mktemp("faults"))
    assert copy_recipe(t.root / "work") == t.work
    write_tiny_confs(t.work, max_epoch=3, keep_nbest_models=2)
    run_ok(t.work, ["--stage", "1", "--stop_stage", "1", "--data_opts", TINY, *OPTS], t.root / "s1.err")
    t.save("1")
    for s in (2, 3, 4):
        t.logs[s], t.times[s] = run_ok(t.work, stage_args(s), t.root / f"s{s}.err")
        t.save(str(s))
    return t


@pytest.fixture(scope="module")
def asr_ref(units_ref) -> Tree:
    """Then token lists and statistics (5, 7), training (8) and decoding (9) of one model."""
    t = units_ref
    t.restore("4")
    for s in (5, 7):
        run_ok(t.work, stage_args(s), t.root / f"s{s}.err")
    t.save("7")
    for s in (8, 9):
        t.logs[s], t.times[s] = run_ok(t.work, stage_args(s), t.root / f"s{s}.err")
        t.save(str(s))
    return t


def kill_points(stage: int) -> list[tuple[int, float]]:
    """Seeded (point index, fraction of the reference stage's wall time) pairs; decoding ends
    with a short merge, so its points stay in the first 60 % (a lighter load may finish sooner)."""
    rng = random.Random(SEED + stage)
    hi = 0.6 if stage == 9 else 0.85
    return [(i, rng.uniform(0.1, hi)) for i in range(KILLS[stage])]


# ---- stages 2-4 --------------------------------------------------------------------------


UNIT_AREAS = {2: ("dump/feats_",), 3: ("exp/units_",), 4: ("dump/units_",)}


@pytest.mark.parametrize("stage, point", [(s, p) for s in (2, 3, 4) for p in kill_points(s)],
                         ids=lambda v: str(v) if isinstance(v, int) else f"{v[0]}@{v[1]:.2f}")
def test_kill_sharded_stage_then_rerun(units_ref, stage, point):
    t = units_ref
    _, frac = point
    t.restore(str(stage - 1))
    ref = t.ref(str(stage))
    err = t.root / f"kill{stage}.err"
    run_killed(t.work, stage_args(stage), err, frac, t.times[stage],
               reset=lambda: t.restore(str(stage - 1)))
    check_partial(t.work, ref, UNIT_AREAS[stage])

    # what was finished before the kill (done markers), and its files as they are now
    if stage == 2:
        done = {"feats": (t.work / f"dump/feats_{TAG}_train_clean/.done").exists()}
        files = {"feats": sorted((t.work / f"dump/feats_{TAG}_train_clean").glob("feats.*"))}
    elif stage == 3:
        done = {d: (t.work / f"exp/units_{TAG}_{d}/.done").exists() for d in ("kmeans", "pq")}
        files = {d: sorted((t.work / f"exp/units_{TAG}_{d}").rglob("*.*")) for d in done}
    else:
        pairs = [("pq", s) for s in ("train_clean", "dev_clean", "test_clean")]
        done = {p: (t.work / f"dump/units_{TAG}_{p[0]}/{p[1]}/.done").exists() for p in pairs}
        files = {p: [t.work / f"dump/units_{TAG}_{p[0]}/{p[1]}/{f}" for f in ("units", "text")] for p in pairs}
    before = {k: stamps(files[k]) for k in done if done[k]}

    log, _ = run_ok(t.work, stage_args(stage), t.root / f"rerun{stage}.err")
    check_same(t.work, ref, UNIT_AREAS[stage])
    for k, was_done in done.items():
        if stage == 2:
            said = "features already dumped" in log
        elif stage == 3:
            said = f"units_{TAG}_{k} already fitted" in log
            assert (f"fitting {k} ->" in log) != was_done, f"{k}: done={was_done} but the rerun:\n{log}"
        else:
            said = f"encoding {k[1]} with {k[0]} ->" not in log
        assert said == was_done, f"{k}: finished before the kill: {was_done}; the rerun log:\n{log}"
        if was_done:
            assert stamps(files[k]) == before[k], f"{k}: finished work was redone"


# ---- the rpq-units commands alone -------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rpq_units", "--log_level", "WARNING", *map(str, args)]


def _cli_jobs(t: Tree, out: Path) -> dict[str, tuple[list[str], list[Path]]]:
    w = t.work
    feats = w / f"dump/feats_{TAG}_train_clean"
    book = w / f"exp/units_{TAG}_pq/codebook.pt"
    ups = ["--upstream", "baseline_local", "--upstream_ckpt", w / "conf/upstream/mel_40ms.yaml"]
    return {
        "dump_feats": (_cli("dump_feats", "--portion", "1", "--data_dir", w / "data/train_clean", "--out_dir", out / "feats",
                            *ups, "--nshard", "2", "--rank", "1"),
                       [out / "feats" / f for f in ("feats.1.npy", "feats.1.len", "feats.1.ids", "feats.json")]),
        "fit": (_cli("fit", "--feats_dir", feats, "--out", out / "cb.pt", "--config", w / "conf/tiny/pq.yaml"),
                [out / "cb.pt", out / "cb.yaml"]),
        "encode": (_cli("encode", "--data_dir", w / "data/train_clean", "--codebook", book,
                        "--out", out / "units", "--ark", out / "units.ark"),
                   [out / "units", out / "units.ark", out / "units.scp"]),
        "merge": (_cli("merge", "--out", out / "merged", w / f"dump/units_{TAG}_pq/train_clean/units",
                       w / f"dump/units_{TAG}_pq/dev_clean/units"),
                  [out / "merged"]),
    }


@pytest.mark.parametrize("command", ["dump_feats", "fit", "encode", "merge"])
def test_kill_command_then_rerun(units_ref, tmp_path, command):
    """One seeded kill point per command, anywhere in its run (startup included)."""
    t = units_ref
    t.restore("4")
    args, files = _cli_jobs(t, tmp_path / "out")[command]
    t0 = time.monotonic()
    r = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    dt = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    ref = {f.name: f.read_bytes() for f in files}  # the same paths again (the scp names the ark)
    shutil.rmtree(tmp_path / "out")

    at = random.Random(f"{SEED}{command}").uniform(0.2, 0.95) * dt
    p = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        p.wait(timeout=at)
    except subprocess.TimeoutExpired:
        pass
    kill_group(p)
    for f in files:  # absent or whole
        assert not f.exists() or f.read_bytes() == ref[f.name], f"{f.name}: partial after a kill"
    r = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert {f.name: f.read_bytes() for f in files} == ref
    assert not list((tmp_path / "out").rglob("*.tmp"))


# ---- ESPnet training and decoding ----------------------------------------------------------


def _model_equal(a: Path, b: Path) -> None:
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=True)
    sb = torch.load(b, map_location="cpu", weights_only=True)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{a.name}: {k} differs from the uninterrupted run"


def _loads(ckpt: Path) -> bool:
    """The checkpoint is whole: the kill did not land while ESPnet wrote it (that case is the
    second kill point's, made on purpose there)."""
    import torch

    try:
        torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception:  # a cut-short zip fails in several ways
        return False
    return True


def _epoch_seconds(train_log: Path) -> float:
    """Seconds between the first two epoch reports of an ESPnet training log."""
    import datetime as dt

    stamps = [dt.datetime.strptime(" ".join(line.split()[1:3]), "%Y-%m-%d %H:%M:%S,%f")
              for line in train_log.read_text().splitlines() if "epoch results:" in line]
    return (stamps[1] - stamps[0]).total_seconds()


@pytest.mark.espnet
@pytest.mark.parametrize("point", kill_points(8), ids=lambda v: f"{v[0]}@{v[1]:.2f}")
def test_kill_training_resumes_from_checkpoint(asr_ref, point):
    """Killed after an epoch's checkpoint: the rerun resumes from checkpoint.pth (no epoch
    trained twice) and ends with the uninterrupted run's model. The second point also cuts the
    checkpoint short, as a kill while ESPnet writes it does: the rerun sets it aside and trains
    from the start instead of failing."""
    t = asr_ref
    i, frac = point
    t.restore("7")
    adir = t.work / f"exp/asr_{TAG}_pq"
    ckpt = adir / "checkpoint.pth"
    one_epoch = _epoch_seconds(t.ref("8") / f"exp/asr_{TAG}_pq/train.log")
    run_killed(t.work, stage_args(8), t.root / "kill8.err", frac, one_epoch,
               reset=lambda: t.restore("7"), when=lambda: ckpt.exists(), settled=lambda: _loads(ckpt))
    assert not (adir / ".done_train").exists()
    import torch

    done_epochs = torch.load(ckpt, map_location="cpu", weights_only=False)["reporter"]["epoch"]
    if i == 1:
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: random.Random(SEED).randrange(1, len(data))])
    log, _ = run_ok(t.work, stage_args(8), t.root / "rerun8.err")
    train_log = (adir / "train.log").read_text()  # the rerun's log
    if i == 0:
        assert f"The training was resumed using exp/asr_{TAG}_pq/checkpoint.pth" in train_log, train_log[-3000:]
        for e in range(1, 4):  # the epochs finished before the kill are not trained again
            assert (f"{e}epoch results" in train_log) == (e > done_epochs), (e, done_epochs, train_log[-3000:])
    else:
        assert f"exp/asr_{TAG}_pq/checkpoint.pth is not a whole checkpoint" in log, log
        assert "training restarts from epoch 1" in log, log
        assert (adir / "checkpoint.pth.bad").exists()
        assert "The training was resumed" not in train_log
    assert (adir / ".done_train").exists()
    _model_equal(adir / "valid.acc.ave.pth", t.ref("8") / f"exp/asr_{TAG}_pq/valid.acc.ave.pth")


@pytest.mark.espnet
def test_epoch_model_cut_short_is_rewritten(asr_ref):
    """A kill after checkpoint.pth but while <N>epoch.pth was being written: the rerun rebuilds
    that file from the checkpoint (it is read again when the best models are averaged)."""
    t = asr_ref
    t.restore("8")
    adir = t.work / f"exp/asr_{TAG}_pq"
    (adir / ".done_train").unlink()
    good = (adir / "3epoch.pth").read_bytes()
    (adir / "3epoch.pth").write_bytes(good[: len(good) // 3])
    log, _ = run_ok(t.work, stage_args(8), t.root / "rerun8b.err")
    assert f"exp/asr_{TAG}_pq/3epoch.pth was missing or cut short" in log
    _model_equal(adir / "3epoch.pth", t.ref("8") / f"exp/asr_{TAG}_pq/3epoch.pth")
    _model_equal(adir / "valid.acc.ave.pth", t.ref("8") / f"exp/asr_{TAG}_pq/valid.acc.ave.pth")


@pytest.mark.espnet
@pytest.mark.parametrize("point", kill_points(9), ids=lambda v: f"{v[0]}@{v[1]:.2f}")
def test_kill_decoding_then_rerun(asr_ref, point):
    t = asr_ref
    _, frac = point
    t.restore("8")
    run_killed(t.work, stage_args(9), t.root / "kill9.err", frac, t.times[9],
               reset=lambda: t.restore("8"))
    ddir = f"exp/asr_{TAG}_pq/decode_test_clean_nolm"
    hyp = t.work / ddir / "hyp"
    assert not hyp.exists() or hyp.read_bytes() == (t.ref("9") / ddir / "hyp").read_bytes()
    run_ok(t.work, stage_args(9), t.root / "rerun9.err")
    assert hyp.read_bytes() == (t.ref("9") / ddir / "hyp").read_bytes()
    assert (t.work / ddir / "ref").read_bytes() == (t.ref("9") / ddir / "ref").read_bytes()


# ---- full disk, read-only output ------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs at tmp_path/mnt (unmounted afterwards); skipped where mount is refused."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    """Fill ``mnt`` to the last byte (it may be full already)."""
    try:
        with open(mnt / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


@pytest.mark.parametrize("fault", ["full", "readonly"])
@pytest.mark.parametrize("command", ["dump_feats", "fit", "encode"])
def test_full_disk_and_readonly_output(units_ref, tmpfs, fault, command):
    t = units_ref
    t.restore("4")
    args, files = _cli_jobs(t, tmpfs)[command]
    r = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    before = {f: f.read_bytes() for f in files}
    if fault == "full":
        _fill(tmpfs)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    r = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    why = "No space left on device" if fault == "full" else "Read-only file system"
    assert why in errors[0] and str(tmpfs) in errors[0], errors[0]
    assert {f: f.read_bytes() for f in files} == before, "an earlier output was changed"
    assert not list(tmpfs.rglob("*.tmp")), "a temporary file was left behind"
