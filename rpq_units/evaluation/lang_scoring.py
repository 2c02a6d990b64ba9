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
from the project's scorer (``rpq_units.evaluation.scoring``, jiwer alignment); pairs are aligned one
utterance at a time, so counts add up over any grouping (overall = sum over languages).
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rpq_units.evaluation.scoring import (
    Counts,
    ScoringError,
    align,
    read_text,
    tokens,
)
from rpq_units.files import write_text_atomic

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


def char_counts(refs: list[str], hyps: list[str], ids: list[str] | None = None) -> Counts:
    """Character edit counts of paired strings, aligned one pair at a time by
    ``rpq_units.evaluation.scoring`` (code points, a space between words is one token); per-utterance
    rows are kept when ``ids`` are given."""
    if len(refs) != len(hyps):
        raise ScoringError(f"{len(refs)} references but {len(hyps)} hypotheses")
    c = Counts()
    for i, (ref, hyp) in enumerate(zip(refs, hyps, strict=True)):
        corr, sub, dele, ins = align(tokens(ref, "char"), tokens(hyp, "char"))
        part = Counts(corr, sub, dele, ins, utts=1, utt_errors=int(sub + dele + ins > 0))
        if ids is not None:
            part.per_utt.append((ids[i], part.n, sub, dele, ins))
        add_counts(c, part)
    return c


def add_counts(total: Counts, part: Counts) -> None:
    """``total += part``."""
    total.corr += part.corr
    total.sub += part.sub
    total.dele += part.dele
    total.ins += part.ins
    total.utts += part.utts
    total.utt_errors += part.utt_errors
    total.per_utt.extend(part.per_utt)


def counts_dict(c: Counts) -> dict:
    return {"utts": c.utts, "n": c.n, "corr": c.corr, "sub": c.sub, "del": c.dele,
            "ins": c.ins, "err": c.err, "cer": round(c.rate, 2)}  # fmt: skip


@dataclass
class MultilingualReport:
    """Scores of one decoded set: overall, per language, few-shot vs the rest, LID."""

    overall: Counts
    per_lang: dict[str, Counts]
    few_shot: Counts
    normal: Counts
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
            "overall": counts_dict(self.overall),
            "few_shot": counts_dict(self.few_shot),
            "normal": counts_dict(self.normal),
            "per_lang": {k: counts_dict(v) for k, v in sorted(self.per_lang.items())},
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
        raise ScoringError(
            f"{len(extra)} hypotheses have no reference (first: {extra[0]!r}); "
            "wrong reference file?"
        )
    few = set(few_shot_langs)
    groups: dict[str, tuple[list[str], list[str], list[str]]] = defaultdict(lambda: ([], [], []))
    lid_correct = lid_total = 0
    missing: list[str] = []
    for utt in sorted(ref):
        ref_lang, ref_text = split_lid(ref[utt])
        if utt not in hyp:
            missing.append(utt)
        hyp_lang, hyp_text = split_lid(hyp.get(utt, ""))
        if ref_lang is not None:
            lid_total += 1
            lid_correct += int(hyp_lang == ref_lang)
        lang = (utt2lang or {}).get(utt) or ref_lang
        if lang is None:
            raise ScoringError(f"utterance {utt!r}: no language (not in utt2lang, no [lang] prefix)")
        refs, hyps, ids = groups[lang]
        refs.append(ref_text)
        hyps.append(hyp_text)
        ids.append(utt)
    if missing:
        logger.warning("%d of %d utterances have no hypothesis; scored as empty, e.g. %s",
                       len(missing), len(ref), missing[0])  # fmt: skip

    per_lang = {lang: char_counts(*group) for lang, group in groups.items()}
    overall, few_shot, normal = Counts(missing=missing), Counts(), Counts()
    for lang, counts in per_lang.items():
        add_counts(overall, counts)
        add_counts(few_shot if lang in few else normal, counts)
    return MultilingualReport(
        overall=overall,
        per_lang=per_lang,
        few_shot=few_shot,
        normal=normal,
        lid_correct=lid_correct if lid_total else None,
        lid_total=lid_total if lid_total else None,
        missing_hyps=len(missing),
    )


def format_report(report: MultilingualReport, *, title: str = "") -> str:
    """A plain-text table: one row per language, then few-shot, normal and overall rows."""
    few = set(FEW_SHOT_LANGS)
    head = f"{'lang':<10} {'#utt':>5} {'#char':>7} {'Sub':>6} {'Del':>6} {'Ins':>6} {'CER%':>7}"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]

    def row(name: str, c: Counts) -> str:
        return f"{name:<10} {c.utts:>5} {c.n:>7} {c.sub:>6} {c.dele:>6} {c.ins:>6} {c.rate:>7.2f}"

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


def score_files(
    ref_file: str | os.PathLike,
    hyp_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    utt2lang_file: str | os.PathLike | None = None,
    few_shot_langs: Iterable[str] = FEW_SHOT_LANGS,
) -> MultilingualReport:
    """Score text tables and write the breakdown into ``out_dir``: ``cer_per_lang.txt`` and
    ``cer.json`` (overall, per language, few-shot, LID). The decode's ``result.txt`` is not
    touched: :mod:`rpq_units.evaluation.scoring` writes it (the recipes' stage 10), with the
    same overall CER when the ``[lang]`` tags are its removed symbols."""
    ref = read_text(ref_file)
    if not ref:
        raise ScoringError(f"{ref_file}: no reference utterances")
    utt2lang = read_text(utt2lang_file) if utt2lang_file else None
    report = score_multilingual(ref, read_text(hyp_file), utt2lang, few_shot_langs=few_shot_langs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("cer_per_lang.txt", format_report(report, title=f"# {hyp_file}")),
        ("cer.json", json.dumps(report.as_dict(), indent=1, ensure_ascii=False) + "\n"),
    ):
        write_text_atomic(out / name, text)
    return report
