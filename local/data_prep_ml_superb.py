#!/usr/bin/env python3
"""Kaldi data dirs from an ML-SUPERB corpus tree.

Layout read (the corpus as distributed; no download)::

    <root>/<source>/<lang>/wav/<uttid>.wav
    <root>/<source>/<lang>/transcript_{10min,1h}_train.txt
    <root>/<source>/<lang>/transcript_10min_{dev,test}.txt

Transcript lines are ``uttid <field> text``; the second field is not used. The training set
comes from ``transcript_<duration>_train.txt``; dev and test always from the 10-minute files.
In the multilingual setting the 20 reserved few-shot languages keep only ``--few_shot_utts``
(5) training utterances each, chosen over all their sources from a seed (or listed in
``--few_shot_ids``). Text is normalised (``rpq_units.evaluation.lang_scoring.normalize_text``) and may
carry a ``[lang]`` prefix for language identification (``--lid true``).

Written for each of the train, dev and test sets (``<out_dir>/<set>/``): ``wav.scp`` (absolute
paths), ``text``, ``utt2spk``, ``spk2utt``, ``utt2lang``, sorted by key (byte order, as
``LC_ALL=C sort``); the ``[lang]`` tokens go to ``<out_dir>/nlsyms.txt`` (empty without
``--lid``). Utterance ids are ``<id_prefix><lang>_<source>_<uttid>``, unique across sources and
languages by construction;
the speaker is ``<id_prefix><lang>_<source>`` (a prefix of the id, as Kaldi sorting wants).

Problems in the corpus are reported with the file they are in. By default the affected part is
skipped with a warning and everything else is kept: a language folder without any transcript
file, a missing transcript file, an empty transcript, a line whose wav file does not exist, a
line with no text after normalisation, a malformed line. ``--strict true`` makes each of these
an error instead. A missing root, or a set left with no utterance, is always an error.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

if __name__ == "__main__" and not os.environ.get("VIRTUAL_ENV"):
    # called from a plain shell: run again under the repository's virtual environment, the one
    # the recipes' path.sh activates (its packages are not in the system Python)
    _venv = Path(__file__).resolve().parents[1] / ".venv"
    if (_venv / "bin" / "python").is_file() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])

import soundfile as sf  # noqa: E402

from rpq_units.errors import UserError, exit_status, str2bool  # noqa: E402
from rpq_units.evaluation.lang_scoring import FEW_SHOT_LANGS, lid_tag, normalize_text  # noqa: E402
from rpq_units.pipeline.data import write_data_dir as write_kaldi_dir  # noqa: E402

logger = logging.getLogger("data_prep_ml_superb")

SPLITS = ("train", "dev", "test")
TRANSCRIPTS = ("transcript_10min_train.txt", "transcript_1h_train.txt",
               "transcript_10min_dev.txt", "transcript_10min_test.txt")  # fmt: skip


class CorpusError(UserError):
    """A problem in the corpus tree, named with its file."""


@dataclass(frozen=True)
class Utt:
    uttid: str
    raw_id: str
    spk: str
    lang: str
    wav: str
    text: str


class Problems:
    """Warns and counts (default) or raises on the first problem (strict)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.count = 0

    def __call__(self, msg: str) -> None:
        if self.strict:
            raise CorpusError(msg)
        self.count += 1
        logger.warning("%s (skipped)", msg)


def transcript_name(split: str, duration: str) -> str:
    return f"transcript_{duration if split == 'train' else '10min'}_{split}.txt"


def read_transcript(path: Path, wav_dir: Path, problems: Problems) -> list[tuple[str, str, str]]:
    """``(uttid, wav path, raw text)`` for each usable line of one transcript file."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        problems(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
        return rows
    if not any(line.strip() for line in lines):
        problems(f"{path}: empty transcript")
        return rows
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=2)
        if len(parts) < 2:
            problems(f"{path}:{n}: malformed line {line.strip()!r} (expected 'uttid field text')")
            continue
        uttid, text = parts[0], parts[2] if len(parts) == 3 else ""
        if uttid in seen:
            problems(f"{path}:{n}: duplicate utterance id {uttid!r}")
            continue
        seen.add(uttid)
        wav = wav_dir / f"{uttid}.wav"
        if not wav.is_file():
            problems(f"{path}:{n}: utterance {uttid!r}: wav file {wav} does not exist")
            continue
        rows.append((uttid, str(wav.resolve()), text))
    return rows


def scan_corpus(
    root: Path,
    duration: str,
    *,
    single_lang: str | None,
    problems: Problems,
    max_train_seconds: float = 0.0,
) -> dict[str, dict[str, list[Utt]]]:
    """split -> lang -> utterances (text normalised, no prefix), over every source.

    Training utterances longer than ``max_train_seconds`` (when > 0) are left out, as the
    ML-SUPERB benchmark does with 20 s."""
    if not root.is_dir():
        raise CorpusError(f"{root}: ML-SUPERB root not found")
    out: dict[str, dict[str, list[Utt]]] = {s: defaultdict(list) for s in SPLITS}
    lang_dirs = sorted(p for p in root.glob("*/*") if p.is_dir() and p.name != "wav")
    if single_lang:
        lang_dirs = [p for p in lang_dirs if p.name == single_lang]
        if not lang_dirs:
            raise CorpusError(f"{root}: no folder for language {single_lang!r} in any source")
    if not lang_dirs:
        raise CorpusError(f"{root}: no <source>/<lang> folders (is this the ML-SUPERB root?)")
    too_long = 0
    for lang_dir in lang_dirs:
        source, lang = lang_dir.parent.name, lang_dir.name
        if not any((lang_dir / t).is_file() for t in TRANSCRIPTS):
            problems(f"{lang_dir}: language folder without transcript files")
            continue
        for split in SPLITS:
            path = lang_dir / transcript_name(split, duration)
            if not path.is_file():
                problems(f"{path}: transcript missing")
                continue
            for uttid, wav, raw in read_transcript(path, lang_dir / "wav", problems):
                text = normalize_text(raw)
                if not text:
                    problems(f"{path}: utterance {uttid!r}: no text left after normalisation")
                    continue
                if split == "train" and max_train_seconds > 0:
                    try:
                        seconds = sf.info(wav).duration
                    except RuntimeError as e:
                        problems(f"{path}: utterance {uttid!r}: unreadable wav {wav}: {e}")
                        continue
                    if seconds > max_train_seconds:
                        too_long += 1
                        continue
                key = f"{lang}_{source}_{uttid}"
                out[split][lang].append(Utt(key, uttid, f"{lang}_{source}", lang, wav, text))
    if too_long:
        logger.info("left out %d training utterances over %g s", too_long, max_train_seconds)
    return out


def limit_few_shot(
    utts: list[Utt], n: int, seed: int, chosen_ids: set[str] | None
) -> list[Utt]:
    """``n`` utterances of a few-shot language: those in ``chosen_ids`` when given (matched on
    the corpus's own uttid), else a seeded draw."""
    if chosen_ids is not None:
        return [u for u in utts if u.raw_id in chosen_ids]
    ordered = sorted(utts, key=lambda u: u.uttid)
    if len(ordered) <= n:
        return ordered
    return sorted(random.Random(f"{seed}:{utts[0].lang}").sample(ordered, n), key=lambda u: u.uttid)


def write_data_dir(d: Path, utts: list[Utt], *, lid: bool) -> None:
    """All tables of one set (:func:`rpq_units.pipeline.data.write_data_dir`), text with a
    ``[lang]`` prefix when ``lid``."""
    write_kaldi_dir(d, [(u.uttid, u.wav, f"{lid_tag(u.lang)} {u.text}" if lid else u.text, u.spk,
                         u.lang) for u in utts])


def prepare(args: argparse.Namespace) -> int:
    problems = Problems(args.strict)
    root = Path(args.root)
    corpus = scan_corpus(root, args.duration, single_lang=args.single_lang or None,
                         problems=problems, max_train_seconds=args.max_train_seconds)  # fmt: skip
    few = set(args.few_shot_langs.split()) if not args.single_lang else set()
    chosen = None
    if args.few_shot_ids:
        chosen = set(Path(args.few_shot_ids).read_text(encoding="utf-8").split())
    out = Path(args.out_dir)
    sets = {"train": args.train_set, "dev": args.dev_set, "test": args.test_set}
    langs = sorted(set().union(*(corpus[s].keys() for s in SPLITS)))
    for split, name in sets.items():
        utts: list[Utt] = []
        for lang, lang_utts in sorted(corpus[split].items()):
            if split == "train" and lang in few:
                kept = limit_few_shot(lang_utts, args.few_shot_utts, args.seed, chosen)
                logger.info("few-shot %s: %d of %d training utterances", lang, len(kept), len(lang_utts))
                lang_utts = kept
            utts.extend(lang_utts)
        if not utts:
            raise CorpusError(f"{root}: no {split} utterance found (set {name})")
        utts = [replace(u, uttid=args.id_prefix + u.uttid, spk=args.id_prefix + u.spk) for u in utts]
        write_data_dir(out / name, utts, lid=args.lid)
        per_lang = defaultdict(int)
        for u in utts:
            per_lang[u.lang] += 1
        logger.info("%s: %d utterances, %d languages -> %s", name, len(utts), len(per_lang), out / name)
    few_present = sorted(few & set(langs))
    nlsyms = out / "nlsyms.txt"
    tmp = nlsyms.with_name(nlsyms.name + ".tmp")
    tmp.write_text("".join(f"{lid_tag(lang)}\n" for lang in langs) if args.lid else "", encoding="utf-8")
    os.replace(tmp, nlsyms)
    logger.info("%d languages (%d few-shot); %d problems skipped", len(langs), len(few_present), problems.count)
    return 0


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--root", required=True, help="ML-SUPERB root (holds <source>/<lang>/)")
    p.add_argument("--out_dir", "--out-dir", default="data", help="where the set dirs go")
    p.add_argument("--duration", choices=("10min", "1h"), default="1h", help="training data per language and source")
    p.add_argument("--train_set", "--train-set", default=None, help="default: train_<duration>")
    p.add_argument("--dev_set", "--dev-set", default="dev_10min")
    p.add_argument("--test_set", "--test-set", default="test_10min")
    p.add_argument("--lid", type=str2bool, default=False, help="prefix transcripts with [lang]")
    p.add_argument("--single_lang", "--single-lang", default="", help="only this language (monolingual; no few-shot limit)")
    p.add_argument("--few_shot_langs", "--few-shot-langs", default=" ".join(FEW_SHOT_LANGS),
                   help="space-separated few-shot languages")  # fmt: skip
    p.add_argument("--few_shot_utts", "--few-shot-utts", type=int, default=5, help="training utterances per few-shot language")
    p.add_argument("--few_shot_ids", "--few-shot-ids", default="", help="file of corpus uttids to keep for few-shot languages (else a seeded draw)")
    p.add_argument("--max_train_seconds", "--max-train-seconds", type=float, default=20.0,
                   help="leave out longer training utterances (0: keep all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--id_prefix", "--id-prefix", default="", help="prepended to every utterance and speaker id (e.g. mlsuperb_)")
    p.add_argument("--strict", type=str2bool, default=False, help="fail on the first corpus problem instead of skipping it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    args.train_set = args.train_set or f"train_{args.duration}"
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    return exit_status(lambda: prepare(args))  # a bad corpus or disk: one line; a bug: traceback


if __name__ == "__main__":
    sys.exit(main())
