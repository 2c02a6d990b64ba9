#!/usr/bin/env python3
"""ML-SUPERB scoring of a recipe's decodes: CER overall, per language, few-shot, LID.

``score`` rescores every finished decode of the given test sets
(``<exp_dir>/asr_*/decode_<set>_<nolm|lm>/{ref,hyp}``) with ``rpq_units.evaluation.lang_scoring``
into ``cer_per_lang.txt`` / ``cer.json`` (overall, per language, few-shot, LID); the decode's
``result.txt`` (CER without the ``[lang]`` tags, read by the results table) is the engine's
stage 10's, written by ``rpq_units.evaluation.scoring``. ``table`` prints the
Markdown breakdown tables (one per test set: a row per model, a column per language) that the
recipes append to ``RESULTS.md``::

    local/score_ml_superb.py score --exp_dir exp --data_dir data --test_sets "test_10min"
    local/score_ml_superb.py table --exp_dir exp --test_sets "test_10min"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

if __name__ == "__main__" and not os.environ.get("VIRTUAL_ENV"):
    # called from a plain shell: run again under the repository's virtual environment, the one
    # the recipes' path.sh activates (its packages are not in the system Python)
    _venv = Path(__file__).resolve().parents[1] / ".venv"
    if (_venv / "bin" / "python").is_file() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])

from rpq_units.errors import exit_status  # noqa: E402
from rpq_units.evaluation.lang_scoring import FEW_SHOT_LANGS, score_files  # noqa: E402

logger = logging.getLogger("score_ml_superb")


def decode_dirs(exp_dir: Path, test_set: str) -> list[tuple[str, str, Path]]:
    """``(model, variant, dir)`` of each finished decode of ``test_set``."""
    out = []
    for variant in ("nolm", "lm"):
        for d in sorted(exp_dir.glob(f"asr_*/decode_{test_set}_{variant}")):
            if (d / ".done").is_file() and (d / "hyp").is_file():
                out.append((d.parent.name[len("asr_"):], variant, d))
    return out


def score(exp_dir: Path, data_dir: Path, test_sets: list[str], few_shot: list[str]) -> int:
    n = 0
    for s in test_sets:
        utt2lang = data_dir / s / "utt2lang"
        for _, _, d in decode_dirs(exp_dir, s):
            report = score_files(d / "ref", d / "hyp", d,
                                 utt2lang_file=utt2lang if utt2lang.is_file() else None,
                                 few_shot_langs=few_shot)  # fmt: skip
            lid = "" if report.lid_accuracy is None else f", LID {report.lid_accuracy:.1f}%"
            logger.info("CER %.2f%s  %s", report.overall.rate, lid, d)
            n += 1
    if n == 0:
        logger.warning("no finished decode of %s under %s", " ".join(test_sets), exp_dir)
    return 0


def table(exp_dir: Path, test_sets: list[str], current: Path | None = None) -> str:
    """The per-language tables; with ``current`` (the engine's ``results_rows.tsv``: model dir,
    variant, set, ... per line) only the decodes it lists, those of the current settings."""
    keep = None
    if current is not None:
        keep = set()
        for line in current.read_text(encoding="utf-8").splitlines():
            f = line.split("\t")
            if len(f) >= 3:
                keep.add(Path(f[0]).resolve() / f"decode_{f[2]}_{f[1]}")
    out = []
    for s in test_sets:
        rows = []
        for model, variant, d in decode_dirs(exp_dir, s):
            if keep is not None and d.resolve() not in keep:
                continue
            f = d / "cer.json"
            if f.is_file():
                label = model + (" + LM" if variant == "lm" else "")
                rows.append((label, json.loads(f.read_text(encoding="utf-8"))))
        if not rows:
            continue
        langs = sorted({lang for _, r in rows for lang in r["per_lang"]})
        few = [lang for lang in langs if lang in FEW_SHOT_LANGS]
        lid = any(r["lid_accuracy"] is not None for _, r in rows)
        head = ["model", "CER all"] + (["few-shot", "normal"] if few else []) + (["LID acc"] if lid else [])
        head += [f"{lang}*" if lang in few else lang for lang in langs]
        out += ["", f"## {s}: CER (%) per language", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
        for label, r in rows:
            cells = [label, f"{r['overall']['cer']:.1f}"]
            if few:
                cells += [f"{r['few_shot']['cer']:.1f}", f"{r['normal']['cer']:.1f}"]
            if lid:
                cells.append("-" if r["lid_accuracy"] is None else f"{r['lid_accuracy']:.1f}")
            cells += [f"{r['per_lang'][lang]['cer']:.1f}" if lang in r["per_lang"] else "-"
                      for lang in langs]  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
        n_utt = {lang: rows[0][1]["per_lang"].get(lang, {}).get("utts", 0) for lang in langs}
        out += ["", "Test utterances per language: "
                + ", ".join(f"{lang} {n}" for lang, n in n_utt.items()) + "."]  # fmt: skip
        if few:
            out.append("`*`: ML-SUPERB few-shot language (5 training utterances).")
        out.append(f"Details: `{exp_dir}/asr_*/decode_{s}_*/cer_per_lang.txt`.")
    return "\n".join(out) + ("\n" if out else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("score", "table"):
        a = sub.add_parser(name)
        a.add_argument("--exp_dir", "--exp-dir", default="exp")
        a.add_argument("--test_sets", "--test-sets", required=True, help="space-separated sets")
        if name == "table":
            a.add_argument("--rows", default=None,
                           help="only the decodes listed here (the engine's results_rows.tsv)")
        if name == "score":
            a.add_argument("--data_dir", "--data-dir", default="data", help="holds <set>/utt2lang")
            a.add_argument("--few_shot_langs", "--few-shot-langs", default=" ".join(FEW_SHOT_LANGS))
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip

    def run() -> int | None:
        if args.cmd == "score":
            return score(Path(args.exp_dir), Path(args.data_dir), args.test_sets.split(),
                         args.few_shot_langs.split())  # fmt: skip
        rows = Path(args.rows) if args.rows else None
        sys.stdout.write(table(Path(args.exp_dir), args.test_sets.split(), rows))
        return None

    return exit_status(run, args.cmd)


if __name__ == "__main__":
    sys.exit(main())
