"""Word and character error rates of decoded text, and the recipes' results table.

Scoring compares two utterance-keyed text files (``uttid WORD WORD ...``) with jiwer's
Levenshtein alignment and reports, over the whole set,

    N = Corr + Sub + Del        (reference tokens)
    Err = Sub + Del + Ins       error rate = Err / N

where tokens are words (``unit="word"``, WER) or characters (``unit="char"``, CER; a space
between words counts as one token, as in ESPnet's character scoring). An utterance missing
from the hypotheses counts as fully deleted (with a warning naming how many, and a ``Missing``
line in ``result.txt``); a hypothesis with no reference is an error. Non-linguistic symbols
(``--remove_symbols``, e.g. ``[eng]`` language tags) are removed from both sides first.

``result.txt`` names its measure (``Measure WER`` or ``Measure CER``); the results table reads
it from there.

Command line (used by ``egs/TEMPLATE/units_asr.sh``)::

    python -m rpq_units.evaluation.scoring score --ref ref --hyp hyp [--unit word|char] \\
        [--remove_symbols nlsyms.txt] [--out result.txt]
    python -m rpq_units.evaluation.scoring table --exp_dir exp --test_sets "test_clean test_other" \\
        [--rows rows.tsv] [--command "..."] [--timing exp/timing.tsv] [--out RESULTS.md]
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

from rpq_units.errors import UserError, exit_status
from rpq_units.files import write_text_atomic

logger = logging.getLogger(__name__)

SPACE = "<space>"


class ScoringError(UserError):
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
    missing: list[str] = field(default_factory=list)  # references without a hypothesis

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
    except UnicodeDecodeError as e:
        line_no = e.object[: e.start].count(b"\n") + 1
        raise ScoringError(f"{path}:{line_no}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                           "convert the file to UTF-8") from e
    for i, line in enumerate(lines, 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if parts[0] in out:
            raise ScoringError(f"{path}:{i}: duplicate utterance id {parts[0]}")
        out[parts[0]] = " ".join(parts[1].split()) if len(parts) > 1 else ""
    return out


def remove_symbols(text: str, symbols: list[str]) -> str:
    """``text`` without any of ``symbols`` (e.g. ``[eng]``), whitespace normalised."""
    for sym in sorted(symbols, key=len, reverse=True):
        text = text.replace(sym, " ")
    return " ".join(text.split())


def read_symbols(path: str | os.PathLike) -> list[str]:
    """Non-linguistic symbols, one a line (ESPnet's ``--non_linguistic_symbols`` file)."""
    try:
        return Path(path).read_text(encoding="utf-8").split()
    except OSError as e:
        raise ScoringError(f"{path}: cannot read ({e.strerror})") from e


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
          out: str | os.PathLike | None = None, symbols: list[str] | None = None) -> Counts:
    """Score ``hyp_file`` against ``ref_file`` (both keyed by uttid), without ``symbols``;
    write ``out`` if given."""
    refs, hyps = read_text(ref_file), read_text(hyp_file)
    if symbols:
        refs = {k: remove_symbols(v, symbols) for k, v in refs.items()}
        hyps = {k: remove_symbols(v, symbols) for k, v in hyps.items()}
    extra = sorted(set(hyps) - set(refs))
    if extra:
        raise ScoringError(f"{hyp_file}: utterance {extra[0]} has no reference in {ref_file} "
                           f"({len(extra)} such)")
    missing = sorted(set(refs) - set(hyps))
    if missing:
        logger.warning("%s: %d of %d utterances have no hypothesis (counted as deleted), e.g. %s",
                       hyp_file, len(missing), len(refs), missing[0])
    c = Counts(missing=missing)
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


def measure_of(unit: str) -> str:
    """``"WER"`` for word scoring, ``"CER"`` for characters."""
    return "WER" if unit == "word" else "CER"


def summary_line(c: Counts, unit: str) -> str:
    name = measure_of(unit)
    ser = 100.0 * c.utt_errors / c.utts if c.utts else 0.0
    return (f"{name} {c.rate:.2f} % | N={c.n} Corr={c.corr} Sub={c.sub} Del={c.dele} Ins={c.ins} "
            f"Err={c.err} | utterances={c.utts} with errors={ser:.1f} %")


def write_result(c: Counts, out: str | os.PathLike, unit: str, ref_file: object = "", hyp_file: object = "") -> None:
    """Write ``result.txt``: the summary line, the measure, the counts one per line, the
    references without a hypothesis (scored as deleted), then per utterance."""
    lines = [summary_line(c, unit), f"# ref: {ref_file}", f"# hyp: {hyp_file}",
             f"Measure {measure_of(unit)}", f"N {c.n}", f"Corr {c.corr}", f"Sub {c.sub}",
             f"Del {c.dele}", f"Ins {c.ins}", f"Err {c.err}", f"Missing {len(c.missing)}"]
    if c.missing:
        lines.append("# no hypothesis (scored as deleted): " + " ".join(c.missing))
    lines += ["", "# uttid N Sub Del Ins"]
    lines += [f"{u} {n} {s} {d} {i}" for u, n, s, d, i in c.per_utt]
    write_text_atomic(out, "\n".join(lines) + "\n")


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


def read_measure(path: str | os.PathLike) -> str:
    """The measure (``WER`` or ``CER``) a ``result.txt`` names on its ``Measure`` line."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"Measure (WER|CER)", line.strip())
        if m:
            return m.group(1)
    raise ScoringError(f"{path}: names no measure (no 'Measure WER|CER' line); score it again")


def _units_description(exp_dir: Path, tag: str, model_dir: Path | None = None) -> str:
    """'method MxK' from the fitted discretizer's config, if present, and the source text's
    settings when not the encoded units as words. The model dir's ``units.yaml`` (written by
    the engine's stage 7) names its units dir; a model dir without one is read by its name,
    ``asr_<tag>`` -> ``units_<tag>``."""
    import yaml

    units_dir, src = exp_dir / f"units_{tag}", ""
    info_file = model_dir / "units.yaml" if model_dir is not None else None
    if info_file is not None and info_file.is_file():
        info = yaml.safe_load(info_file.read_text()) or {}
        units_dir = Path(info["units_dir"])
        if info.get("src_case", "ts") != "ts":
            src += f", {info['src_case']}"
        if info.get("src_token_type", "word") != "word":
            src += f", {info.get('src_bpemode', 'bpe')} {info.get('src_nbpe', '?')}"
    for name in ("codebook.yaml", "config.yaml"):
        p = units_dir / name
        if p.is_file():
            cfg = yaml.safe_load(p.read_text()) or {}
            cfg = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
            method = cfg.get("method", "?")
            m, k = cfg.get("num_codebooks", 1), cfg.get("codebook_size", "?")
            if method == "layers":  # each layer its own discretizer: "pq 4x128 x 3 layers"
                n = len(cfg.get("layer_dims") or [1])
                return f"{cfg.get('inner', '?')} {m // n}x{k} x {n} layers{src}"
            return f"{method} {m}x{k}{src}"
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
        # the base of the same features (longest common prefix), then of the same source text
        # settings (the longest common suffix: asr_<feat>_<discretizer><src>)
        return max(cands, key=lambda k: (len(os.path.commonprefix([k[0], tag])),
                                         len(os.path.commonprefix([k[0][::-1], tag[::-1]]))),
                   default=None)

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


@dataclass
class Row:
    """One decode of the results table: model dir, LM variant, test set, its ``result.txt``
    and the config files it came from."""

    model_dir: str
    variant: str
    test_set: str
    result: str
    configs: str = ""


def read_rows(path: str | os.PathLike) -> list[Row]:
    """Rows from a tab-separated file: ``model_dir variant set result.txt [configs]``."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ScoringError(f"{path}: cannot read ({e.strerror})") from e
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) not in (4, 5):
            raise ScoringError(f"{path}:{i}: expected 4 or 5 tab-separated fields, got {len(parts)}")
        rows.append(Row(*parts))
    return rows


def _glob_rows(exp_dir: Path, test_sets: list[str]) -> list[Row]:
    """Every ``asr_*/decode_<set>_<nolm|lm>/result.txt`` under ``exp_dir`` (no settings check)."""
    return [Row(str(adir), v, s, str(adir / f"decode_{s}_{v}" / "result.txt"))
            for adir in sorted(exp_dir.glob("asr_*")) for v in ("nolm", "lm") for s in test_sets
            if (adir / f"decode_{s}_{v}" / "result.txt").is_file()]  # fmt: skip


def table(exp_dir: str | os.PathLike, test_sets: list[str], command: str = "",
          timing: str | os.PathLike | None = None, rows: list[Row] | None = None) -> str:
    """RESULTS.md text: one row per model and LM variant, one column per test set.

    ``rows`` lists the decodes to show (the stage engine passes those made with the current
    settings); without it, every scored decode under ``exp_dir`` is shown. Each column is
    labelled with the measure its ``result.txt`` files name; a cell whose file names another
    measure than its column says so."""
    exp_dir = Path(exp_dir)
    if rows is None:
        rows = _glob_rows(exp_dir, test_sets)
    models: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        if r.test_set in test_sets and Path(r.result).is_file():
            models.setdefault((r.model_dir, r.variant), {})[r.test_set] = r
    measures: dict[str, str] = {}  # column -> measure of its first cell
    for cells in models.values():
        for s, r in cells.items():
            measures.setdefault(s, read_measure(r.result))
    lines = []
    rates: dict[tuple[str, str], list[float | None]] = {}  # (tag, LM label) -> rate per set
    units: dict[str, str] = {}  # tag -> units description
    for (model_dir, variant), cells in models.items():
        tag = Path(model_dir).name[len("asr_"):]
        out = []
        rate: list[float | None] = []
        for s in test_sets:
            if s not in cells:
                out.append("-")
                rate.append(None)
                continue
            v = read_result(cells[s].result)
            m = read_measure(cells[s].result)
            cell = f"{100.0 * v['Err'] / v['N']:.1f}" if v["N"] else "-"
            out.append(cell if m == measures[s] else f"{cell} ({m})")
            rate.append(float(cell) if cell != "-" and m == measures[s] else None)
        rates[(tag, " + LM" if variant == "lm" else "")] = rate
        secs = Path(model_dir) / "train_seconds"
        train_min = f"{int(secs.read_text()) / 60:.1f}" if secs.is_file() else "-"
        configs = sorted({c for r in cells.values() for c in r.configs.split()})
        units[tag] = _units_description(exp_dir, tag, Path(model_dir))
        lines.append(f"| {tag}{' + LM' if variant == 'lm' else ''} | {units[tag]} | "
                     f"{' '.join(f'`{c}`' for c in configs) or '-'} | {train_min} | "
                     + " | ".join(out) + " |")  # fmt: skip
    names = sorted(set(measures.values()))
    out_lines = [f"# Results ({', '.join(names) or 'error rate'}, %)", ""]
    if command:
        out_lines += ["Made by (every finished invocation in order, then this one):", "", "```sh",
                      command, "```", ""]
    heads = [f"{s} ({measures[s]})" if s in measures else s for s in test_sets]
    out_lines += [f"| model | units | configs | train (min) | {' | '.join(heads)} |",
                  "|---|---|---|---|" + "---|" * len(test_sets)]
    out_lines += lines or ["| (no scored decodes with the current settings) | | | |" + " |" * len(test_sets)]
    out_lines += ["", "Error rates in percent, each column in the measure its header names; every "
                  "row was made with the current settings (recorded in `<model dir>/.done_train`); "
                  f"per-utterance counts and Sub/Del/Ins in `{exp_dir}/asr_*/decode_<set>_<nolm|lm>/result.txt`."]
    out_lines += relative_lines(rates, units, test_sets)
    if timing and Path(timing).is_file():
        spent: dict[tuple[int, str], int] = {}
        for line in Path(timing).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                key = (int(parts[0]), parts[1])
                spent[key] = spent.get(key, 0) + int(parts[2])
        out_lines += ["", "| stage | wall time (s) |", "|---|---|"]
        out_lines += [f"| {no} {what} | {sec} |" for (no, what), sec in sorted(spent.items())]
        out_lines += [f"| total | {sum(spent.values())} |"]
    return "\n".join(out_lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rpq_units.evaluation.scoring", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score hypotheses against references")
    s.add_argument("--ref", required=True)
    s.add_argument("--hyp", required=True)
    s.add_argument("--unit", choices=["word", "char"], default="word")
    s.add_argument("--remove_symbols", "--remove-symbols", default=None,
                   help="file of non-linguistic symbols (one a line) removed before scoring")
    s.add_argument("--out", help="result.txt to write")
    t = sub.add_parser("table", help="write the results table from exp/")
    t.add_argument("--exp_dir", "--exp-dir", required=True)
    t.add_argument("--test_sets", "--test-sets", required=True, help="space-separated set names")
    t.add_argument("--rows", default=None,
                   help="tab-separated decodes to show: model_dir variant set result.txt [configs] "
                        "(default: every scored decode under --exp_dir)")
    t.add_argument("--command", default="")
    t.add_argument("--timing", default=None)
    t.add_argument("--out", default=None, help="RESULTS.md (default: stdout)")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(levelname)s %(message)s")

    def run() -> None:
        if args.cmd == "score":
            symbols = read_symbols(args.remove_symbols) if args.remove_symbols else None
            c = score(args.ref, args.hyp, args.unit, args.out, symbols)
            sys.stdout.write(summary_line(c, args.unit) + "\n")
        else:
            rows = read_rows(args.rows) if args.rows else None
            text = table(args.exp_dir, args.test_sets.split(), args.command, args.timing, rows)
            if args.out:
                write_text_atomic(args.out, text)
            else:
                sys.stdout.write(text)

    return exit_status(run, args.cmd)


if __name__ == "__main__":
    sys.exit(main())
