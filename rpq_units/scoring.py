"""Word and character error rates of decoded text, and the recipes' results table.

Scoring compares two utterance-keyed text files (``uttid WORD WORD ...``) with jiwer's
Levenshtein alignment and reports, over the whole set,

    N = Corr + Sub + Del        (reference tokens)
    Err = Sub + Del + Ins       error rate = Err / N

where tokens are words (``unit="word"``, WER) or characters (``unit="char"``, CER; a space
between words counts as one token, as in ESPnet's character scoring). An utterance missing
from the hypotheses counts as fully deleted (with a warning); a hypothesis with no reference
is an error.

Command line (used by ``egs/TEMPLATE/units_asr.sh``)::

    python -m rpq_units.scoring score --ref ref --hyp hyp [--unit word|char] [--out result.txt]
    python -m rpq_units.scoring table --exp_dir exp --test_sets "test_clean test_other" \\
        [--unit word] [--command "..."] [--timing exp/timing.tsv] [--out RESULTS.md]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

logger = logging.getLogger(__name__)

SPACE = "<space>"


class ScoringError(ValueError):
    """Unreadable or inconsistent reference/hypothesis files."""


@dataclass
class Counts:
    """Alignment counts; ``N`` is the number of reference tokens."""

    corr: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    utts: int = 0
    utt_errors: int = 0
    per_utt: list[tuple[str, int, int, int, int]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.corr + self.sub + self.dele

    @property
    def err(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent (Err / N * 100); 0 for an empty reference."""
        return 100.0 * self.err / self.n if self.n else 0.0


def read_text(path: str | os.PathLike) -> dict[str, str]:
    """``uttid text...`` lines -> {uttid: text} (text whitespace-normalised, may be empty)."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ScoringError(f"{path}: cannot read ({e.strerror})") from e
    for i, line in enumerate(lines, 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if parts[0] in out:
            raise ScoringError(f"{path}:{i}: duplicate utterance id {parts[0]}")
        out[parts[0]] = " ".join(parts[1].split()) if len(parts) > 1 else ""
    return out


def tokens(text: str, unit: str) -> list[str]:
    """Split ``text`` into scoring tokens: words, or characters with ``<space>`` between words."""
    if unit == "word":
        return text.split()
    if unit == "char":
        return [SPACE if c == " " else c for c in " ".join(text.split())]
    raise ScoringError(f"unknown scoring unit {unit!r} (word or char)")


def align(ref: list[str], hyp: list[str]) -> tuple[int, int, int, int]:
    """(corr, sub, del, ins) of the minimum-edit alignment of two token lists."""
    if not ref:
        return 0, 0, 0, len(hyp)
    if not hyp:
        return 0, 0, len(ref), 0
    # jiwer aligns whitespace-separated words; tokens never contain whitespace here.
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.hits, out.substitutions, out.deletions, out.insertions


def score(ref_file: str | os.PathLike, hyp_file: str | os.PathLike, unit: str = "word",
          out: str | os.PathLike | None = None) -> Counts:
    """Score ``hyp_file`` against ``ref_file`` (both keyed by uttid); write ``out`` if given."""
    refs, hyps = read_text(ref_file), read_text(hyp_file)
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ScoringError(f"{hyp_file}: utterance {extra[0]} has no reference in {ref_file} "
                           f"({len(extra)} such)")
    missing = sorted(set(refs) - set(hyps))
    if missing:
        logger.warning("%s: %d of %d utterances have no hypothesis (counted as deleted), e.g. %s",
                       hyp_file, len(missing), len(refs), missing[0])
    c = Counts()
    for utt in sorted(refs):
        corr, sub, dele, ins = align(tokens(refs[utt], unit), tokens(hyps.get(utt, ""), unit))
        c.corr += corr
        c.sub += sub
        c.dele += dele
        c.ins += ins
        c.utts += 1
        c.utt_errors += int(sub + dele + ins > 0)
        c.per_utt.append((utt, corr + sub + dele, sub, dele, ins))
    if out is not None:
        write_result(c, out, unit, ref_file, hyp_file)
    return c


def summary_line(c: Counts, unit: str) -> str:
    name = "WER" if unit == "word" else "CER"
    ser = 100.0 * c.utt_errors / c.utts if c.utts else 0.0
    return (f"{name} {c.rate:.2f} % | N={c.n} Corr={c.corr} Sub={c.sub} Del={c.dele} Ins={c.ins} "
            f"Err={c.err} | utterances={c.utts} with errors={ser:.1f} %")


def write_result(c: Counts, out: str | os.PathLike, unit: str, ref_file: object = "", hyp_file: object = "") -> None:
    """Write ``result.txt``: the summary line, the counts one per line, then per utterance."""
    lines = [summary_line(c, unit), f"# ref: {ref_file}", f"# hyp: {hyp_file}",
             f"N {c.n}", f"Corr {c.corr}", f"Sub {c.sub}", f"Del {c.dele}", f"Ins {c.ins}",
             f"Err {c.err}", "", "# uttid N Sub Del Ins"]
    lines += [f"{u} {n} {s} {d} {i}" for u, n, s, d, i in c.per_utt]
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def read_result(path: str | os.PathLike) -> dict[str, int]:
    """The N/Corr/Sub/Del/Ins/Err counts of a ``result.txt``."""
    vals: dict[str, int] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"(N|Corr|Sub|Del|Ins|Err) (\d+)", line.strip())
        if m:
            vals[m.group(1)] = int(m.group(2))
    if "N" not in vals or "Err" not in vals:
        raise ScoringError(f"{path}: not a result.txt (no N/Err lines)")
    return vals


def _units_description(exp_dir: Path, tag: str) -> str:
    """'method M=.. K=..' from the fitted discretizer's config, if present."""
    for name in ("codebook.yaml", "config.yaml"):
        p = exp_dir / f"units_{tag}" / name
        if p.is_file():
            import yaml

            cfg = yaml.safe_load(p.read_text()) or {}
            cfg = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
            method = cfg.get("method", "?")
            m, k = cfg.get("num_codebooks", 1), cfg.get("codebook_size", "?")
            return f"{method} {m}x{k}"
    return "continuous" if tag.endswith("_continuous") else "-"


def relative_lines(rates: dict[tuple[str, str], list[float | None]], units: dict[str, str],
                   test_sets: list[str]) -> list[str]:
    """The RPQ paper's form of the results (arXiv 2504.04721 reports PQ and RPQ as relative
    improvements over K-means, 21.8 % / 20.0 % WER on LibriSpeech, 24.1 % / 19.6 % CER on
    ML-SUPERB): ``100 (base - model) / base`` per test set, positive when the model is better,
    against the K-means row and against the continuous row of the same LM variant (the one
    whose tag shares the longest prefix when there are several). ``rates``: (tag, LM label)
    -> error rate per set; ``units``: tag -> units description. No lines without a base."""
    def kind(tag: str) -> str:
        if tag.endswith("_continuous"):
            return "continuous"
        return "kmeans" if units.get(tag, "").startswith("kmeans") or tag.endswith("_kmeans") else ""

    def base_of(tag: str, label: str, want: str) -> tuple[str, str] | None:
        cands = [k for k in rates if k[1] == label and kind(k[0]) == want and k[0] != tag]
        return max(cands, key=lambda k: len(os.path.commonprefix([k[0], tag])), default=None)

    lines = []
    for tag, label in rates:
        if kind(tag):
            continue
        for want in ("kmeans", "continuous"):
            b = base_of(tag, label, want)
            if b is None:
                continue
            cells = [f"{100.0 * (v0 - v) / v0:+.1f}" if v is not None and v0 else "-"
                     for v, v0 in zip(rates[(tag, label)], rates[b], strict=True)]
            lines.append(f"| {tag}{label} | {b[0]}{b[1]} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["", "Relative improvement in percent, 100 (base - model) / base (positive: the model "
            "errs less), the form of the RPQ paper (PQ 21.8 % and RPQ 20.0 % over K-means in "
            "LibriSpeech WER, 24.1 % and 19.6 % in ML-SUPERB CER):", "",
            f"| model | base | {' | '.join(test_sets)} |", "|---|---|" + "---|" * len(test_sets),
            *lines]


def table(exp_dir: str | os.PathLike, test_sets: list[str], unit: str = "word", command: str = "",
          timing: str | os.PathLike | None = None) -> str:
    """RESULTS.md text: one row per model (and per LM variant), one column per test set."""
    exp_dir = Path(exp_dir)
    name = "WER" if unit == "word" else "CER"
    rows = []
    relabel = set()  # sets whose result.txt holds the other measure (a recipe's own scoring)
    rates: dict[tuple[str, str], list[float | None]] = {}  # (tag, LM label) -> rate per set
    for adir in sorted(exp_dir.glob("asr_*")):
        tag = adir.name[len("asr_"):]
        for variant, label in (("nolm", ""), ("lm", " + LM")):
            cells, found = [], False
            for s in test_sets:
                r = adir / f"decode_{s}_{variant}" / "result.txt"
                if r.is_file():
                    v = read_result(r)
                    if not r.read_text(encoding="utf-8").startswith(name):
                        relabel.add(s)
                    cells.append(f"{100.0 * v['Err'] / v['N']:.1f}" if v["N"] else "-")
                    found = True
                else:
                    cells.append("-")
            if found:
                rates[(tag, label)] = [float(c) if c != "-" else None for c in cells]
                secs = adir / "train_seconds"
                train_min = f"{int(secs.read_text()) / 60:.1f}" if secs.is_file() else "-"
                rows.append(f"| {tag}{label} | {_units_description(exp_dir, tag)} | {train_min} | "
                            + " | ".join(cells) + " |")
    out = [f"# Results ({name}, %)", ""]
    if command:
        out += ["Made by (every invocation, in order):", "", "```sh", command, "```", ""]
    other = "CER" if name == "WER" else "WER"
    heads = [f"{s} ({other})" if s in relabel else s for s in test_sets]
    out += [f"| model | units | train (min) | {' | '.join(heads)} |",
            "|---|---|---|" + "---|" * len(test_sets)]
    out += rows or ["| (no scored decodes yet) | | |" + " |" * len(test_sets)]
    out += ["", f"{name} in percent; per-utterance counts and Sub/Del/Ins in "
            f"`{exp_dir}/asr_*/decode_<set>_<nolm|lm>/result.txt`."]
    out += relative_lines(rates, {t: _units_description(exp_dir, t) for t, _ in rates}, test_sets)
    if timing and Path(timing).is_file():
        spent: dict[tuple[int, str], int] = {}
        for line in Path(timing).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                key = (int(parts[0]), parts[1])
                spent[key] = spent.get(key, 0) + int(parts[2])
        out += ["", "| stage | wall time (s) |", "|---|---|"]
        out += [f"| {no} {what} | {sec} |" for (no, what), sec in sorted(spent.items())]
        out += [f"| total | {sum(spent.values())} |"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rpq_units.scoring", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score hypotheses against references")
    s.add_argument("--ref", required=True)
    s.add_argument("--hyp", required=True)
    s.add_argument("--unit", choices=["word", "char"], default="word")
    s.add_argument("--out", help="result.txt to write")
    t = sub.add_parser("table", help="write the results table from exp/")
    t.add_argument("--exp_dir", "--exp-dir", required=True)
    t.add_argument("--test_sets", "--test-sets", required=True, help="space-separated set names")
    t.add_argument("--unit", choices=["word", "char"], default="word")
    t.add_argument("--command", default="")
    t.add_argument("--timing", default=None)
    t.add_argument("--out", default=None, help="RESULTS.md (default: stdout)")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(levelname)s %(message)s")
    try:
        if args.cmd == "score":
            c = score(args.ref, args.hyp, args.unit, args.out)
            sys.stdout.write(summary_line(c, args.unit) + "\n")
        else:
            text = table(args.exp_dir, args.test_sets.split(), args.unit, args.command, args.timing)
            if args.out:
                tmp = Path(args.out + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, args.out)
            else:
                sys.stdout.write(text)
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
