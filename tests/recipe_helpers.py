"""Shared helpers for the recipe tests: paths and running shell scripts with the venv on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "egs" / "TEMPLATE"
UTILS = TEMPLATE / "utils"
# options of local/data.sh for the smallest demo corpus the recipe tests run on
TINY = ("--num_train 8 --num_dev 2 --num_test 2 --num_heldout 2 "
        "--num_train_speakers 2 --num_heldout_speakers 1")


def copy_recipe(root: Path, conf: bool = False) -> Path:
    """A copy of the recipe tree under ``root`` (the engine, the demo recipe without its outputs,
    ``local/``, and with ``conf`` the top-level ``conf/``); returns the demo recipe's dir."""
    shutil.copytree(TEMPLATE, root / "egs" / "TEMPLATE")
    recipe = root / "egs" / "mini_librispeech"
    shutil.copytree(ROOT / "egs" / "mini_librispeech", recipe, symlinks=True,
                    ignore=shutil.ignore_patterns("corpus", "data", "dump", "exp", "ci", "RESULTS*"))
    shutil.copytree(ROOT / "local", root / "local")
    if conf:
        shutil.copytree(ROOT / "conf", root / "conf")
    return recipe


def write_tiny_confs(recipe: Path, max_epoch: int, keep_nbest_models: int) -> None:
    """``conf/tiny/`` in a recipe copy: a K-means (1 x 16) and a PQ (2 x 8) config and the demo's
    discrete ASR config shrunk to seconds per epoch (no plots or tensorboard logs: nothing in
    the tests reads them, and each epoch would spend seconds on them)."""
    import yaml

    tiny = recipe / "conf" / "tiny"
    tiny.mkdir()
    (tiny / "kmeans.yaml").write_text("method: kmeans\nnum_codebooks: 1\ncodebook_size: 16\nseed: 0\nmax_iter: 10\n")
    (tiny / "pq.yaml").write_text("method: pq\nnum_codebooks: 2\ncodebook_size: 8\nseed: 0\nmax_iter: 10\n")
    cfg = yaml.safe_load((recipe / "conf" / "asr" / "train_discrete_asr.yaml").read_text())
    cfg["frontend_conf"]["embed_dim"] = 32
    cfg["encoder_conf"].update(output_size=32, attention_heads=2, linear_units=64, num_blocks=1)
    cfg["decoder_conf"].update(attention_heads=2, linear_units=64, num_blocks=1)
    cfg.update(max_epoch=max_epoch, batch_size=4, keep_nbest_models=keep_nbest_models,
               log_interval=1000, use_matplotlib=False, use_tensorboard=False)
    (tiny / "asr.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


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


# files whose content records time or the run itself, not a result
VOLATILE = {"timing.tsv", "commands.txt", "train_seconds", ".lock"}
TIME_KEYS = {"fit_seconds", "load_seconds", "seconds"}


def result_files(tree: Path) -> dict[str, Path]:
    """A recipe's result files under dump/ and exp/, by path relative to ``tree`` (no logs, job
    scripts, done markers, timings or training plots)."""
    found = {}
    for top in ("dump", "exp"):
        for p in (tree / top).rglob("*"):
            rel = p.relative_to(tree)
            if p.is_dir() or p.is_symlink():
                continue
            if {"log", "q", "images", "att_ws"} & set(rel.parts) or p.suffix == ".log":
                continue
            if p.name.startswith(".done") or p.name in VOLATILE:
                continue
            found[str(rel)] = p
    return found


def result_bytes(p: Path) -> bytes:
    """The content of a result file, with run times dropped from JSON reports."""
    if p.suffix == ".json":
        def drop(o):
            if isinstance(o, dict):
                return {k: drop(v) for k, v in o.items() if k not in TIME_KEYS}
            return [drop(v) for v in o] if isinstance(o, list) else o
        return json.dumps(drop(json.loads(p.read_text())), sort_keys=True).encode()
    return p.read_bytes()
