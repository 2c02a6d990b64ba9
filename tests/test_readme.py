"""The README's commands run, and its figures are those of the files it quotes.

Two markers, HTML comments that GitHub does not show, on the line before what they mark:

``<!-- runnable: as is -->`` before a fenced code block: the block runs with bash as written.
``<!-- runnable: <command> -->``: ``<command>`` runs instead, the block's cheap variant (a
``--help`` for a recipe run of hours). Words between ``runnable`` and the colon: ``slow`` (the
slow tier), ``id=<name>`` and ``after=<name>`` (the named block runs first, in the same dir).
Each block runs in a fresh dir that holds links to the repository's top-level entries (so
``.venv``, ``egs/``, ``conf/`` are where the README says) and ``my_wavs/``, three generated
recordings standing for the reader's own; PATH leaves out the virtual environment, so a block
that calls ``rpq-units`` must activate it, as the README tells the reader to.

``<!-- quoted: <file> -->`` before a table: every line of the table is a line of ``<file>``
(a RESULTS.md, the record of a run), character for character. Every table under the README's
"Results" heading is quoted. docs/*.md are checked the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
RUNNABLE = re.compile(r"^<!--\s*runnable(?P<flags>[^:]*):\s*(?P<what>.*?)\s*-->\s*$")
QUOTED = re.compile(r"^<!--\s*quoted:\s*(?P<file>\S+)\s*-->\s*$")
FENCE = re.compile(r"^```")
# the quick start's commands, run by .ci/run as written
CI_COMMANDS = ("bash tools/install.sh && (cd egs/mini_librispeech && ./run.sh)",
               "bash tools/install.sh && .venv/bin/python -m pytest -q")


class Block:
    def __init__(self, line: int, flags: str, what: str, code: str):
        self.line, self.code = line, code
        words = flags.split()
        self.slow = "slow" in words
        opts = dict(w.split("=", 1) for w in words if "=" in w)
        self.id, self.after = opts.get("id"), opts.get("after")
        self.command = code if what == "as is" else what

    def __repr__(self) -> str:
        return f"README.md:{self.line}"


def blocks(text: str) -> list[Block]:
    """The README's runnable blocks, in order."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = RUNNABLE.match(line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        assert j < len(lines) and FENCE.match(lines[j]), f"README.md:{i + 1}: no code block after the marker"
        k = next(k for k in range(j + 1, len(lines)) if FENCE.match(lines[k]))
        found.append(Block(i + 1, m["flags"], m["what"], "\n".join(lines[j + 1:k]) + "\n"))
    return found


def tables(text: str) -> list[tuple[int, str | None, list[str]]]:
    """Every table of a markdown text: (first line number, quoted file or None, its lines)."""
    lines = text.splitlines()
    out, i, fenced = [], 0, False
    while i < len(lines):
        if FENCE.match(lines[i]):
            fenced = not fenced
        if not fenced and lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            m = QUOTED.match(lines[k]) if k >= 0 else None
            out.append((i + 1, m["file"] if m else None, [ln.rstrip() for ln in lines[i:j]]))
            i = j
            continue
        i += 1
    return out


def section(text: str, title: str) -> str:
    """The text of a ``## title`` section, up to the next ``## `` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


README_BLOCKS = blocks(README.read_text())
BY_ID = {b.id: b for b in README_BLOCKS if b.id}


def sandbox(tmp: Path) -> Path:
    """A dir that looks like the repository root to a block, with ``my_wavs/`` of generated audio."""
    for p in ROOT.iterdir():
        if p.name not in (".git", "data", "dump", "exp"):
            (tmp / p.name).symlink_to(p)
    wavs = tmp / "my_wavs"
    wavs.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    for i in range(3):  # 2 s of a gliding tone with noise: frames enough for the demo's codebooks
        x = 0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t * (1 + 0.1 * np.sin(3 * t)))
        sf.write(wavs / f"rec{i}.wav", (x + 0.02 * rng.standard_normal(t.size)).astype("float32"), 16000)
    return tmp


def shell_env() -> dict[str, str]:
    """A reader's shell before activating anything: no virtual environment on PATH."""
    e = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv_bin = str(ROOT / ".venv" / "bin")
    e["PATH"] = os.pathsep.join(p for p in e.get("PATH", "").split(os.pathsep)
                                if p and Path(p).resolve() != Path(venv_bin).resolve())
    e.pop("RPQ_CMD_BACKEND", None)
    return e


def run_block(b: Block, cwd: Path) -> None:
    if b.after:
        run_block(BY_ID[b.after], cwd)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", b.command], cwd=cwd, env=shell_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{b}: exit {r.returncode}\n{b.command}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize(
    "block", [pytest.param(b, marks=[pytest.mark.slow] if b.slow else []) for b in README_BLOCKS],
    ids=repr)
def test_runnable_block(block, tmp_path):
    run_block(block, sandbox(tmp_path))


def test_markers_are_sound():
    assert len(README_BLOCKS) >= 5
    for b in README_BLOCKS:
        assert b.after is None or b.after in BY_ID, f"{b}: after={b.after} names no block"
    text = README.read_text()
    for c in CI_COMMANDS:
        assert c in section(text, "Quick start"), f"the quick start no longer has {c!r}"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_quoted_tables_are_the_files(doc):
    text = doc.read_text()
    for line, source, rows in tables(text):
        if source is None:
            continue
        path = ROOT / source
        assert path.is_file(), f"{doc.name}:{line}: quotes {source}, which does not exist"
        have = {ln.rstrip() for ln in path.read_text().splitlines()}
        for n, row in enumerate(rows):
            assert row in have, f"{doc.name}:{line + n}: not in {source}: {row}"


def test_results_tables_are_quoted():
    results = section(README.read_text(), "Results")
    for _line, source, rows in tables(results):
        assert source and "RESULTS.md" in source, f"a Results table is not quoted from a RESULTS.md: {rows[0]}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_reach_their_files_and_headings(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{doc.name}: link to {target}: no such file"
        if anchor:
            heads = re.findall(r"^#+ (.+)$", dest.read_text(), flags=re.M)
            assert anchor in {slug(h) for h in heads}, f"{doc.name}: link to {target}: no such heading"
