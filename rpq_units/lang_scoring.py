"""Multilingual text handling and CER scoring in the ML-SUPERB style.

ML-SUPERB (Shi et al., Interspeech 2023) scores multilingual ASR by character error rate (CER),
overall and per language, and reports the 20 reserved *few-shot* languages (5 training
utterances each) separately. With the optional ``[lang]`` prefix on transcripts the same model
also does language identification (LID), scored as the accuracy of the predicted prefix.

Characters are Unicode **code points** after NFC normalisation, the unit of ESPnet's ``char``
tokenizer (``list(text)``, space written ``<space>``), so the model's token list, its targets
and this scorer count the same symbols and CERs compare with published ML-SUPERB numbers.
NFC composes base letter + combining accent into one code point where Unicode has one
(Latin, Greek, Cyrillic); scripts whose vowel signs and viramas stay separate code points
(Devanagari, Thai, ...) are counted per code point, as ESPnet and ML-SUPERB count them.
Grapheme clusters would need a tokenizer ESPnet does not have and would not match published
numbers.

CER = (S + D + I) / N over the characters of the normalised reference, spaces included (ESPnet's
``<space>`` token), the ``[lang]`` prefix excluded (it is scored as LID instead). Edit counts come
from ``jiwer.process_characters``; pairs are aligned one utterance at a time, so counts add up
over any grouping (overall = sum over languages).
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer

logger = logging.getLogger(__name__)

# The 20 languages ML-SUPERB reserves for its few-shot condition (ISO 639-3 codes, as the
# corpus names its language folders): 5 training utterances each in the multilingual track.
FEW_SHOT_LANGS: tuple[str, ...] = (
    "bos", "ceb", "dan", "epo", "frr", "ful", "kaz", "kea", "lit", "luo",
    "srp", "sun", "tok", "tos", "tsn", "tso", "tur", "umb", "vie", "zul",
)  # fmt: skip

_BRACKETED = re.compile(r"\[[^\[\]]*\]")
_LID_PREFIX = re.compile(r"^\s*\[([^\[\]\s]+)\]\s*")


def normalize_text(text: str) -> str:
    """ML-SUPERB transcript normalisation, Unicode-aware.

    NFC; drop bracketed spans ``[...]`` (noise and event tags); delete punctuation and symbols
    (Unicode categories P* and S*, any script: ``,`` ``。`` ``।`` ``«`` ``¿`` ...), keeping letters,
    combining marks and digits of every script; upper-case; collapse whitespace.
    """
    text = unicodedata.normalize("NFC", text)
    text = _BRACKETED.sub(" ", text)
    kept = [c for c in text if unicodedata.category(c)[0] not in "PS"]
    # upper() may decompose (e.g. "ŉ"); re-compose so the result is NFC again.
    return " ".join(unicodedata.normalize("NFC", "".join(kept).upper()).split())


def lid_tag(lang: str) -> str:
    """The non-linguistic token that carries the language: ``[eng]``."""
    return f"[{lang}]"


def split_lid(text: str) -> tuple[str | None, str]:
    """``"[eng] HELLO"`` -> ``("eng", "HELLO")``; text without a prefix -> ``(None, text)``."""
    m = _LID_PREFIX.match(text)
    if m is None:
        return None, text.strip()
    return m.group(1), text[m.end() :].strip()


def char_tokens(text: str, non_linguistic_symbols: Iterable[str] = ()) -> list[str]:
    """Code-point tokens of ``text`` as ESPnet's char tokenizer makes them.

    Space becomes ``<space>``; each of ``non_linguistic_symbols`` (e.g. ``[eng]``) is one token.
    """
    syms = sorted(set(non_linguistic_symbols), key=len, reverse=True)
    out: list[str] = []
    i = 0
    while i < len(text):
        sym = next((s for s in syms if text.startswith(s, i)), None)
        if sym is not None:
            out.append(sym)
            i += len(sym)
            continue
        out.append("<space>" if text[i] == " " else text[i])
        i += 1
    return out


@dataclass
class ErrorCounts:
    """Character edit counts of a set of utterances (N = reference characters)."""

    utts: int = 0
    ref_chars: int = 0
    corr: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def cer(self) -> float:
        """Percent; inf when there is no reference character but there are insertions."""
        if self.ref_chars == 0:
            return 0.0 if self.ins == 0 else float("inf")
        return 100.0 * self.errors / self.ref_chars

    def add(self, other: ErrorCounts) -> None:
        self.utts += other.utts
        self.ref_chars += other.ref_chars
        self.corr += other.corr
        self.sub += other.sub
        self.dele += other.dele
        self.ins += other.ins

    def as_dict(self) -> dict:
        return {**asdict(self), "err": self.errors, "cer": round(self.cer, 2)}


def char_errors(refs: list[str], hyps: list[str]) -> ErrorCounts:
    """Edit counts between paired reference and hypothesis strings (code points, spaces count)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    counts = ErrorCounts(utts=len(refs))
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    # jiwer refuses empty references: every hypothesis character there is an insertion.
    counts.ins += sum(len(h) for r, h in zip(refs, hyps, strict=True) if not r)
    if pairs:
        out = jiwer.process_characters([r for r, _ in pairs], [h for _, h in pairs])
        counts.corr += out.hits
        counts.sub += out.substitutions
        counts.dele += out.deletions
        counts.ins += out.insertions
        counts.ref_chars += out.hits + out.substitutions + out.deletions
    return counts


@dataclass
class MultilingualReport:
    """Scores of one decoded set: overall, per language, few-shot vs the rest, LID."""

    overall: ErrorCounts
    per_lang: dict[str, ErrorCounts]
    few_shot: ErrorCounts
    normal: ErrorCounts
    lid_correct: int | None
    lid_total: int | None
    missing_hyps: int

    @property
    def lid_accuracy(self) -> float | None:
        if not self.lid_total:
            return None
        return 100.0 * (self.lid_correct or 0) / self.lid_total

    def as_dict(self) -> dict:
        return {
            "overall": self.overall.as_dict(),
            "few_shot": self.few_shot.as_dict(),
            "normal": self.normal.as_dict(),
            "per_lang": {k: v.as_dict() for k, v in sorted(self.per_lang.items())},
            "lid_accuracy": None if self.lid_accuracy is None else round(self.lid_accuracy, 2),
            "lid_correct": self.lid_correct,
            "lid_total": self.lid_total,
            "missing_hyps": self.missing_hyps,
        }


def score_multilingual(
    ref: Mapping[str, str],
    hyp: Mapping[str, str],
    utt2lang: Mapping[str, str] | None = None,
    *,
    few_shot_langs: Iterable[str] = FEW_SHOT_LANGS,
) -> MultilingualReport:
    """CER of ``hyp`` against ``ref`` (uttid -> text), overall, per language and few-shot.

    The language of an utterance comes from ``utt2lang``, else from the reference's ``[lang]``
    prefix. When references carry the prefix, LID accuracy compares it with the hypothesis's
    prefix (a hypothesis without one counts as wrong); the prefix is removed before CER. A
    reference with no hypothesis is scored as an empty hypothesis (all deletions), with a
    warning; a hypothesis with no reference is an error (the two files do not belong together).
    """
    extra = sorted(set(hyp) - set(ref))
    if extra:
        raise ValueError(
            f"{len(extra)} hypotheses have no reference (first: {extra[0]!r}); "
            "wrong reference file?"
        )
    few = set(few_shot_langs)
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    lid_correct = lid_total = 0
    missing = 0
    for utt in sorted(ref):
        ref_lang, ref_text = split_lid(ref[utt])
        if utt not in hyp:
            missing += 1
        hyp_lang, hyp_text = split_lid(hyp.get(utt, ""))
        if ref_lang is not None:
            lid_total += 1
            lid_correct += int(hyp_lang == ref_lang)
        lang = (utt2lang or {}).get(utt) or ref_lang
        if lang is None:
            raise ValueError(f"utterance {utt!r}: no language (not in utt2lang, no [lang] prefix)")
        refs, hyps = groups[lang]
        refs.append(ref_text)
        hyps.append(hyp_text)
    if missing:
        logger.warning("%d of %d utterances have no hypothesis; scored as empty", missing, len(ref))

    per_lang = {lang: char_errors(r, h) for lang, (r, h) in groups.items()}
    overall, few_shot, normal = ErrorCounts(), ErrorCounts(), ErrorCounts()
    for lang, counts in per_lang.items():
        overall.add(counts)
        (few_shot if lang in few else normal).add(counts)
    return MultilingualReport(
        overall=overall,
        per_lang=per_lang,
        few_shot=few_shot,
        normal=normal,
        lid_correct=lid_correct if lid_total else None,
        lid_total=lid_total if lid_total else None,
        missing_hyps=missing,
    )


def read_text_table(path: str | os.PathLike) -> dict[str, str]:
    """``uttid text...`` lines -> dict (text may be empty). Duplicate ids are an error."""
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split(maxsplit=1)
            if not parts:
                continue
            if parts[0] in table:
                raise ValueError(f"{path}:{n}: duplicate utterance id {parts[0]!r}")
            table[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return table


def format_report(report: MultilingualReport, *, title: str = "") -> str:
    """A plain-text table: one row per language, then few-shot, normal and overall rows."""
    few = set(FEW_SHOT_LANGS)
    head = f"{'lang':<10} {'#utt':>5} {'#char':>7} {'Sub':>6} {'Del':>6} {'Ins':>6} {'CER%':>7}"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]

    def row(name: str, c: ErrorCounts) -> str:
        return (
            f"{name:<10} {c.utts:>5} {c.ref_chars:>7} {c.sub:>6} {c.dele:>6} {c.ins:>6} "
            f"{c.cer:>7.2f}"
        )

    for lang, counts in sorted(report.per_lang.items()):
        lines.append(row(lang + (" *" if lang in few else ""), counts))
    lines.append("-" * len(head))
    if report.few_shot.utts:
        lines.append(row("few-shot*", report.few_shot))
        lines.append(row("normal", report.normal))
    lines.append(row("overall", report.overall))
    if report.lid_accuracy is not None:
        lines.append(f"LID accuracy: {report.lid_accuracy:.2f}% "
                     f"({report.lid_correct}/{report.lid_total})")  # fmt: skip
    if report.missing_hyps:
        lines.append(f"missing hypotheses (scored empty): {report.missing_hyps}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def score_files(
    ref_file: str | os.PathLike,
    hyp_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    utt2lang_file: str | os.PathLike | None = None,
    few_shot_langs: Iterable[str] = FEW_SHOT_LANGS,
) -> MultilingualReport:
    """Score text tables and write ``out_dir/{result.txt, cer_per_lang.txt, cer.json}``."""
    ref = read_text_table(ref_file)
    hyp = read_text_table(hyp_file)
    utt2lang = read_text_table(utt2lang_file) if utt2lang_file else None
    if not ref:
        raise ValueError(f"{ref_file}: no reference utterances")
    report = score_multilingual(ref, hyp, utt2lang, few_shot_langs=few_shot_langs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    o = report.overall
    summary = (
        f"N={o.ref_chars} Corr={o.corr} Sub={o.sub} Del={o.dele} Ins={o.ins} "
        f"Err={o.errors} CER={o.cer:.2f}% utts={o.utts}\n"
    )
    _write_atomic(out / "result.txt", summary)
    _write_atomic(out / "cer_per_lang.txt", format_report(report, title=f"# {hyp_file}"))
    _write_atomic(out / "cer.json", json.dumps(report.as_dict(), indent=1, ensure_ascii=False) + "\n")
    return report
