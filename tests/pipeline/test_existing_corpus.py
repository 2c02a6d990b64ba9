"""A LibriSpeech set already on disk (a copy, or a symbolic link to shared storage) is prepared
without any download, and the scripts the README calls directly work from a plain shell."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from recipe_helpers import ROOT, have

GEN = ROOT / "local" / "generate_librispeech_like.py"
RECIPE = ROOT / "egs" / "librispeech"

pytestmark = pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny generated LibriSpeech tree: dev-clean (3 utterances) and test-clean (2)."""
    out = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    r = subprocess.run([sys.executable, str(GEN), "--out_dir", str(out), "--num_train", "0",
                        "--num_dev", "3", "--num_test", "2", "--num_heldout", "0",
                        "--num_train_speakers", "2", "--num_heldout_speakers", "1", "--seed", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def offline_bin(tmp_path):
    """wget and curl that record being called and fail, first on PATH: any download attempt shows."""
    d = tmp_path / "offline_bin"
    d.mkdir()
    for tool in ("wget", "curl"):
        f = d / tool
        f.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {d}/calls\nexit 4\n")
        f.chmod(0o755)
    return d


def plain_env(extra_path: str = "") -> dict[str, str]:
    """A plain shell's environment: no virtual environment, system PATH only."""
    return {"PATH": f"{extra_path}:/usr/bin:/bin" if extra_path else "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}


def prepare(download_dir, datadir, offline_bin, sets="dev-clean test-clean"):
    return subprocess.run(["bash", "local/data.sh", "--download_dir", str(download_dir),
                           "--datadir", str(datadir), "--sets", sets],
                          cwd=RECIPE, env=plain_env(str(offline_bin)), capture_output=True, text=True,
                          timeout=600)


def test_existing_copy_is_prepared_offline(corpus, tmp_path, offline_bin):
    """A copy with no download marker (a cluster copy): recognised by its contents."""
    shutil.copytree(corpus, tmp_path / "corpora" / "LibriSpeech", ignore=shutil.ignore_patterns("*-heldout", "train-*"))
    r = prepare(tmp_path / "corpora", tmp_path / "data", offline_bin)
    assert r.returncode == 0, r.stderr
    assert not (offline_bin / "calls").exists(), (offline_bin / "calls").read_text()
    assert "LibriSpeech/dev-clean is already there (3 utterances), using it" in r.stderr
    assert "the official dev-clean has 2703" in r.stderr  # a copy that is not the full set is named
    for s, n in (("dev_clean", 3), ("test_clean", 2)):
        assert len((tmp_path / "data" / s / "wav.scp").read_text().splitlines()) == n


def test_linked_set_is_prepared_offline(corpus, tmp_path, offline_bin):
    """Sets that are symbolic links (to shared storage), with or without the download marker;
    the speaker dirs inside one of them are links too."""
    root = tmp_path / "corpora" / "LibriSpeech"
    root.mkdir(parents=True)
    (root / "dev-clean").symlink_to(corpus / "dev-clean")
    (corpus / "dev-clean" / ".complete").touch()
    try:
        linked_spk = tmp_path / "shared" / "test-clean"
        linked_spk.mkdir(parents=True)
        for spk in (corpus / "test-clean").iterdir():
            (linked_spk / spk.name).symlink_to(spk)
        (root / "test-clean").symlink_to(linked_spk)
        r = prepare(tmp_path / "corpora", tmp_path / "data", offline_bin)
    finally:
        (corpus / "dev-clean" / ".complete").unlink()
    assert r.returncode == 0, r.stderr
    assert not (offline_bin / "calls").exists()
    dev = (tmp_path / "data" / "dev_clean" / "wav.scp").read_text().splitlines()
    test = (tmp_path / "data" / "test_clean" / "wav.scp").read_text().splitlines()
    assert (len(dev), len(test)) == (3, 2)
    assert all(os.path.isfile(line.split()[1]) for line in dev + test)


def test_incomplete_copy_is_named_not_overwritten(corpus, tmp_path, offline_bin):
    shutil.copytree(corpus / "dev-clean", tmp_path / "corpora" / "LibriSpeech" / "dev-clean")
    flac = sorted((tmp_path / "corpora" / "LibriSpeech" / "dev-clean").glob("*/*/*.flac"))[0]
    flac.unlink()
    r = prepare(tmp_path / "corpora", tmp_path / "data", offline_bin, sets="dev-clean")
    assert r.returncode == 1
    assert "holds 2 FLAC files but 3 transcript lines: an incomplete copy" in r.stderr
    assert not (offline_bin / "calls").exists()


def test_readme_direct_calls_work_from_a_plain_shell(corpus, tmp_path):
    """`env -i PATH=/usr/bin:/bin bash local/data_prep_librispeech.sh ...` (the system Python has
    no soundfile: the script finds the repository's environment itself)."""
    r = subprocess.run(["bash", "local/data_prep_librispeech.sh", str(corpus / "dev-clean"),
                        str(tmp_path / "dev")], cwd=ROOT, env=plain_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "dev" / "text").read_text().splitlines()) == 3
    # the Python data preparation and scoring scripts of the ML-SUPERB recipes
    for script in ("data_prep_ml_superb.py", "score_ml_superb.py"):
        r = subprocess.run(["python3", f"local/{script}", "--help"], cwd=ROOT, env=plain_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "usage:" in r.stdout
