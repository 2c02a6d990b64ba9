"""Shared helpers for the recipe tests: paths and running shell scripts with the venv on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "egs" / "TEMPLATE"
UTILS = TEMPLATE / "utils"


def env() -> dict[str, str]:
    """The environment a recipe sees: this Python's bin dir first on PATH, C collation."""
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["LC_ALL"] = "C"
    e.pop("RPQ_CMD_BACKEND", None)
    return e


def run(args: list[str | os.PathLike], cwd: str | os.PathLike | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=timeout)


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)
