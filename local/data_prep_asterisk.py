#!/usr/bin/env python3
"""Kaldi data dirs from the Asterisk prompt recordings and the pocketsphinx test clips (Debian).

Read (installed by ``tools/install.sh`` through apt; nothing is downloaded)::

    <sounds_dir>/<voice>/**/<name>.g722       asterisk-core-sounds-<lang>-g722: G.722, 64 kbit/s
    <docs_dir>/asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz    lines "<name>: <text>"
    <heldout_dir>/<folder>/{transcription,<folder>.transcription}       pocketsphinx-testdata:
        lines "<s> text </s> (<id>)" for <folder>/<id>.wav (librivox/, cards/)

One professional speaker per language (``VOICES``). Each clip is decoded once (the ``g722``
wheel, bit-exact ITU G.722) to ``<corpus_dir>/<voice>/<name>.wav``, 16 kHz 16-bit mono; a wav
already there with the right number of samples is reused. The pocketsphinx clips are used in
place when they are 16 kHz mono 16-bit, else converted under ``<corpus_dir>/heldout/``.

Transcripts: stage notes in ``[...]``, ``(...)`` and ``<...>`` are removed. English is upper
case with numbers in words (``inflect``: "press 1" -> "PRESS ONE", "3rd" -> "THIRD", "28.8" ->
"TWENTY EIGHT POINT EIGHT"), ``*`` -> STAR, ``#`` -> POUND (and ``% & @ + =``), every other
punctuation mark a space, apostrophes kept inside words. French, Spanish, Italian and Russian use
the project's multilingual normalisation (``rpq_units.evaluation.lang_scoring.normalize_text``,
the one their CER is scored with: it deletes punctuation, so "l'aide" -> "LAIDE", "dix-sept" ->
"DIXSEPT").

Nothing is left out silently. Each clip or line left out is counted under one reason, logged and
listed by name in ``<datadir>/local/asterisk_<lang>_report.json``:

    no_audio            a transcript line whose audio file does not exist
    no_transcript       an audio file without a transcript line
    duplicate_name      a clip named by two transcript lines that disagree
    malformed_line      a line that is not "name: text"
    empty_text          a line with no text at all
    non_speech          no words once stage notes are removed (tones, beeps, silence)
    ambiguous_number    (en) a number of three or more digits: read as a cardinal, digit by
                        digit or in pairs ("1234", "H.323"), so its words are unknown
    digits              (fr, es, it, ru) digits, not spelled here
    unspellable_symbol  a symbol whose spoken word is unknown ("/", "$", "<", ...)
    unreadable_audio    audio that cannot be read or decoded, or is empty
    silent_audio        audio whose peak stays under -40 dBFS
    over_max_utts       beyond --max_utts in its set

Repairs that keep a clip are listed too: a name that matches its audio file only when case is
ignored (``digits/1f`` -> ``digits/1F``), a text that repeats its own ``name:`` prefix, a line
given twice with the same text.

Split: by normalised prompt text, so no text is shared between train, dev and test: a text
goes to train when ``u < train_ratio``, dev when ``u < train_ratio + dev_ratio``, test
otherwise, with ``u`` the SHA-1 of ``<split_salt><text>`` read as a number in [0, 1). A text's
set does not depend on the other texts, on the order of reading, or on any random state, and the
same text goes to the same set in every language. Sets: ``train_<lang>``, ``dev_<lang>``,
``test_<lang>``; with English also ``test_heldout_en`` (the pocketsphinx speakers, never in
training); with ``--multilingual true`` also ``train_multi``, ``dev_multi``, ``test_multi``
over all ``--langs`` (``--lid true``: text prefixed with ``[lang]``, tags in
``<datadir>/nlsyms.txt``).

Written for each set: ``wav.scp`` (absolute paths), ``text``, ``utt2spk``, ``spk2utt``,
``utt2lang``, sorted by key in byte order (``LC_ALL=C sort``), each written to a temporary name
then renamed. Utterance ids are ``<spk>-<name>`` with ``/`` as ``-`` (``en_allison-digits-1``);
the speaker (``en_allison``, ``en_librivox``, ``en_cards``) is a prefix of the id. The names of
the sets written go to ``<datadir>/local/asterisk_sets`` (one a line) for the caller to validate.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import math
import os
import re
import sys
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__" and not os.environ.get("VIRTUAL_ENV"):
    # called from a plain shell: run again under the repository's virtual environment, the one
    # the recipes' path.sh activates (its packages are not in the system Python)
    _venv = Path(__file__).resolve().parents[1] / ".venv"
    if (_venv / "bin" / "python").is_file() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(_venv / "bin" / "python", [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from rpq_units.errors import OptionError, UserError, exit_status, str2bool  # noqa: E402
from rpq_units.evaluation.lang_scoring import lid_tag, normalize_text  # noqa: E402
from rpq_units.files import write_text_atomic  # noqa: E402
from rpq_units.pipeline.data import write_data_dir as write_kaldi_dir  # noqa: E402

logger = logging.getLogger("data_prep_asterisk")

SAMPLE_RATE = 16000
# language -> the voice folder of asterisk-core-sounds-<lang>-g722 1.6.1 (one speaker each)
VOICES = {
    "en": "en_US_f_Allison",
    "fr": "fr_CA_f_June",
    "es": "es_MX_f_Allison",
    "it": "it_IT_m_Carlo",
    "ru": "ru_RU_f_IvrvoiceRU",
}
REASONS = (
    "no_audio", "no_transcript", "duplicate_name", "malformed_line", "empty_text", "non_speech",
    "ambiguous_number", "digits", "unspellable_symbol", "unreadable_audio", "silent_audio",
    "over_max_utts",
)  # fmt: skip
SILENT_PEAK = 0.01  # -40 dBFS
SPLITS = ("train", "dev", "test")
HELDOUT_SET = "test_heldout_en"
APT_HINT = ("install asterisk-core-sounds-<lang>-g722 and asterisk-core-sounds-<lang> "
            "(bash tools/install.sh as root does it)")  # fmt: skip

_STAGE_NOTES = re.compile(r"\[[^\[\]]*\]|\([^()]*\)|<[^<>]*>")
# English words for the symbols a prompt may say; any other symbol is unspellable.
SPOKEN_EN = {"*": "star", "#": "pound", "%": "percent", "&": "and", "@": "at", "+": "plus",
             "=": "equals"}  # fmt: skip
# punctuation (Unicode P*) that stands for a word, unlike , . ! ? - " ...
_SYMBOL_PUNCT = set("*#%&@/\\_")


class CorpusError(UserError):
    """A problem with the installed corpus or the options, named with its file."""


# --- text ------------------------------------------------------------------------------------


def strip_stage_notes(text: str) -> str:
    """``"press pound (simple tone sound plays)"`` -> ``"press pound  "``: ``[...]``, ``(...)``,
    ``<...>`` removed, innermost first, so nested notes go too."""
    while True:
        out = _STAGE_NOTES.sub(" ", text)
        if out == text:
            return out
        text = out


def _is_symbol(c: str) -> bool:
    return unicodedata.category(c).startswith("S") or c in _SYMBOL_PUNCT


_inflect = None


def _engine():
    global _inflect
    if _inflect is None:
        import inflect

        _inflect = inflect.engine()
    return _inflect


def _ordinal_words(m: re.Match) -> str:
    return f" {_engine().number_to_words(_engine().ordinal(m.group(1)), andword='')} "


def _number_words(m: re.Match) -> str:
    words = _engine().number_to_words(m.group(1), andword="")
    if m.group(2):
        words += " point " + " ".join(_engine().number_to_words(d) for d in m.group(2))
    return f" {words} "


_ORDINAL = re.compile(r"(?<![\d.])(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)(?:\.(\d+))?")
_LONG_NUMBER = re.compile(r"\d{3,}")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")


def normalize_en(text: str) -> tuple[str, str | None]:
    """English prompt text -> (normalised text, None), or ("", reason) when it is left out."""
    text = unicodedata.normalize("NFC", text).replace("\u2019", "'").replace("\u2018", "'")
    if not text.strip():
        return "", "empty_text"
    text = strip_stage_notes(text)
    if _LONG_NUMBER.search(text):
        return "", "ambiguous_number"
    text = _ORDINAL.sub(_ordinal_words, text)  # "3rd" -> "third"
    text = _DIGIT_LETTER.sub(" ", text)  # "3D" -> "3 D"
    text = _NUMBER.sub(_number_words, text)  # "28.8" -> "twenty-eight point eight"
    for sym, word in SPOKEN_EN.items():
        text = text.replace(sym, f" {word} ")
    if any(_is_symbol(c) for c in text):
        return "", "unspellable_symbol"
    # every punctuation mark but the apostrophe becomes a space ("A.M." -> "A M", "re-record")
    text = "".join(" " if unicodedata.category(c).startswith("P") and c != "'" else c for c in text)
    words = [w.strip("'") for w in text.upper().split()]
    out = " ".join(w for w in words if w)
    return (out, None) if out else ("", "non_speech")


def normalize_other(text: str) -> tuple[str, str | None]:
    """French, Spanish, Italian, Russian: stage notes removed, then ``normalize_text``; a text
    with digits or with symbols is left out (the words spoken for them are not known here)."""
    text = unicodedata.normalize("NFC", text)
    if not text.strip():
        return "", "empty_text"
    text = strip_stage_notes(text)
    if any(unicodedata.category(c) == "Nd" for c in text):
        return "", "digits"
    if any(_is_symbol(c) for c in text):
        return "", "unspellable_symbol"
    out = normalize_text(text)
    return (out, None) if out else ("", "non_speech")


def normalize(text: str, lang: str) -> tuple[str, str | None]:
    return normalize_en(text) if lang == "en" else normalize_other(text)


def split_of(text: str, train_ratio: float, dev_ratio: float, salt: str = "") -> str:
    """``train``, ``dev`` or ``test`` for a normalised prompt text, from its SHA-1 alone."""
    digest = hashlib.sha1((salt + text).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < train_ratio:
        return "train"
    return "dev" if u < train_ratio + dev_ratio else "test"


# --- bookkeeping -----------------------------------------------------------------------------


@dataclass
class Report:
    """What was left out (by reason, with names) and what was repaired, for one source."""

    excluded: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    repaired: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def exclude(self, reason: str, name: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        self.excluded[reason].append(name)
        logger.debug("left out %s (%s)%s", name, reason, f": {detail}" if detail else "")

    def repair(self, kind: str, name: str) -> None:
        self.repaired[kind].append(name)

    def counts(self) -> dict[str, int]:
        return {r: len(self.excluded[r]) for r in REASONS if self.excluded.get(r)}

    def as_dict(self) -> dict:
        return {
            "excluded_counts": self.counts(),
            "excluded": {r: sorted(self.excluded[r]) for r in REASONS if self.excluded.get(r)},
            "repaired": {k: sorted(v) for k, v in sorted(self.repaired.items())},
        }


@dataclass(frozen=True)
class Utt:
    uttid: str
    spk: str
    lang: str
    wav: str
    text: str
    seconds: float


def utt_id(spk: str, name: str) -> str:
    return f"{spk}-{name.replace('/', '-')}"


def speaker(lang: str, voice: str) -> str:
    """``en_US_f_Allison`` -> ``en_allison``."""
    return f"{lang}_{voice.rsplit('_', 1)[-1].lower()}"


# --- audio -----------------------------------------------------------------------------------


def decode_g722(data: bytes) -> np.ndarray:
    """G.722 at 64 kbit/s -> int16 samples at 16 kHz (two samples per byte)."""
    import G722

    return np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(data), dtype=np.int16)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit mono wav, written to a temporary name, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, samples, sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def decoded_clip(src: Path, dst: Path) -> tuple[int, float]:
    """Decode ``src`` (.g722) to ``dst`` unless a wav with its number of samples is there;
    returns (samples, peak in [0, 1]). Raises ValueError for audio that cannot be used."""
    nbytes = src.stat().st_size
    if nbytes == 0:
        raise ValueError("empty file")
    if dst.is_file():
        try:
            info = sf.info(dst)
            if info.frames == 2 * nbytes and info.samplerate == SAMPLE_RATE and info.channels == 1:
                x, _ = sf.read(dst, dtype="int16")
                return len(x), peak_of(x)
        except (RuntimeError, sf.LibsndfileError):
            pass  # a broken earlier copy: decode again
    x = decode_g722(src.read_bytes())
    if len(x) != 2 * nbytes:
        raise ValueError(f"decoded {len(x)} samples from {nbytes} bytes, expected {2 * nbytes}")
    write_wav(dst, x)
    return len(x), peak_of(x)


def peak_of(x: np.ndarray) -> float:
    """Largest magnitude of int16 samples, in [0, 1]."""
    return float(np.abs(x.astype(np.int32)).max()) / 32768 if len(x) else 0.0


def wav_clip(src: Path, dst: Path) -> tuple[Path, int, float]:
    """A pocketsphinx wav: used in place when 16 kHz mono 16-bit, else converted to ``dst``
    (reused when there with the expected length). Returns (path to list, samples, peak)."""
    info = sf.info(src)
    if info.samplerate == SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16":
        x, _ = sf.read(src, dtype="int16")
        return src.resolve(), len(x), peak_of(x)
    expected = math.ceil(info.frames * SAMPLE_RATE / info.samplerate)  # torchaudio's length
    if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
        try:
            old = sf.info(dst)
            if (old.samplerate, old.channels, old.frames) == (SAMPLE_RATE, 1, expected):
                x, _ = sf.read(dst, dtype="int16")
                return dst.resolve(), len(x), peak_of(x)
        except (RuntimeError, sf.LibsndfileError):
            pass  # a broken earlier copy: convert again
    from rpq_units.pipeline.data import resample

    x, sr = sf.read(src, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        x = resample(x, sr, SAMPLE_RATE)
    x16 = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    write_wav(dst, x16)
    return dst.resolve(), len(x16), peak_of(x16)


# --- sources ---------------------------------------------------------------------------------


def transcript_path(docs_dir: Path, lang: str) -> Path:
    d = docs_dir / f"asterisk-core-sounds-{lang}"
    for name in (f"core-sounds-{lang}.txt.gz", f"core-sounds-{lang}.txt"):
        if (d / name).is_file():
            return d / name
    raise CorpusError(f"{d / f'core-sounds-{lang}.txt.gz'}: transcript not found; {APT_HINT}")


def read_asterisk_transcript(path: Path, report: Report) -> tuple[dict[str, list[str]], int]:
    """name -> its raw texts (one per line naming it, repeats of the same text dropped) of one
    ``core-sounds-<lang>.txt[.gz]``, and the number of entry lines (not comments or blanks)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:  # the Italian file starts with a BOM
        lines = f.read().splitlines()
    texts: dict[str, list[str]] = defaultdict(list)
    entries = 0
    for n, line in enumerate(lines, 1):
        s = line.strip().lstrip("\ufeff")
        if not s or s.startswith(";"):
            continue
        entries += 1
        name, sep, text = s.partition(":")
        name = name.strip()
        if not sep or not name or " " in name:
            report.exclude("malformed_line", f"{path.name}:{n}", s)
            continue
        text = text.strip()
        if text.startswith(f"{name}:"):  # "conf-adminmenu: conf-adminmenu: ..." (ru)
            text = text[len(name) + 1 :].strip()
            report.repair("repeated_name_in_text", name)
        if text in texts[name]:
            report.repair("same_line_twice", name)
            continue
        texts[name].append(text)
    return dict(texts), entries


def scan_asterisk(
    lang: str, sounds_dir: Path, docs_dir: Path, corpus_dir: Path, report: Report
) -> tuple[list[Utt], dict]:
    """The usable clips of one language, and figures for the report."""
    voice = VOICES[lang]
    audio_dir = sounds_dir / voice
    if not audio_dir.is_dir():
        raise CorpusError(f"{audio_dir}: audio folder not found; {APT_HINT}")
    tpath = transcript_path(docs_dir, lang)
    texts, entries = read_asterisk_transcript(tpath, report)
    audio = {p.relative_to(audio_dir).with_suffix("").as_posix(): p
             for p in sorted(audio_dir.rglob("*.g722"))}  # fmt: skip
    if not audio:
        raise CorpusError(f"{audio_dir}: no .g722 files; {APT_HINT}")
    # a name that differs from its file only in case ("digits/1f" for digits/1F.g722)
    by_lower = defaultdict(list)
    for a in audio:
        by_lower[a.lower()].append(a)
    for name in sorted(set(texts) - set(audio)):
        cands = [a for a in by_lower.get(name.lower(), []) if a not in texts]
        if len(cands) == 1:
            texts[cands[0]] = texts.pop(name)
            report.repair("case_only_name_match", f"{name} -> {cands[0]}")
        else:
            texts.pop(name)
            report.exclude("no_audio", name)
    spk = speaker(lang, voice)
    utts: list[Utt] = []
    for name, src in audio.items():
        if name not in texts:
            report.exclude("no_transcript", name)
            continue
        if len(texts[name]) > 1:  # "digits/0: cero" and "digits/0: diez" (es)
            report.exclude("duplicate_name", name, " | ".join(texts[name]))
            continue
        text, reason = normalize(texts[name][0], lang)
        if reason:
            report.exclude(reason, name, texts[name][0])
            continue
        try:
            frames, peak = decoded_clip(src, corpus_dir / voice / f"{name}.wav")
        except (OSError, ValueError, RuntimeError) as e:
            report.exclude("unreadable_audio", name, str(e))
            continue
        if peak < SILENT_PEAK:
            report.exclude("silent_audio", name, f"peak {peak:.4f}")
            continue
        wav = str((corpus_dir / voice / f"{name}.wav").resolve())
        utts.append(Utt(utt_id(spk, name), spk, lang, wav, text, frames / SAMPLE_RATE))
    ids = [u.uttid for u in utts]
    if len(ids) != len(set(ids)):
        raise CorpusError(f"{audio_dir}: two clip names give the same utterance id")
    info = {"voice": voice, "speaker": spk, "audio_dir": str(audio_dir), "transcript": str(tpath),
            "audio_clips": len(audio), "transcript_entries": entries}  # fmt: skip
    return utts, info


def read_pocketsphinx_transcript(path: Path, report: Report) -> dict[str, str]:
    """``<s> text </s> (id)`` lines -> id -> text (markers and the id tail removed); an id with
    two different texts is left out."""
    out: dict[str, str] = {}
    dups: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        m = re.fullmatch(r"(.*)\(([^()\s]+)\)", s)
        if m is None:
            report.exclude("malformed_line", f"{path.name}:{n}", s)
            continue
        text = " ".join(re.sub(r"</?s>", " ", m.group(1)).split())
        if out.get(m.group(2), text) != text:
            dups.add(m.group(2))
        out[m.group(2)] = text
    for name in sorted(dups):
        report.exclude("duplicate_name", f"{path.parent.name}/{name}")
        del out[name]
    return out


def scan_heldout(heldout_dir: Path, corpus_dir: Path, report: Report) -> list[Utt]:
    """English clips of other speakers: each folder of ``heldout_dir`` with a transcription."""
    if not heldout_dir.is_dir():
        raise CorpusError(f"{heldout_dir}: held-out folder not found; install pocketsphinx-testdata "
                          "or pass --heldout_dir ''")  # fmt: skip
    utts: list[Utt] = []
    for folder in sorted(p for p in heldout_dir.iterdir() if p.is_dir()):
        tpath = next((t for t in (folder / "transcription", folder / f"{folder.name}.transcription")
                      if t.is_file()), None)  # fmt: skip
        if tpath is None:
            continue
        texts = read_pocketsphinx_transcript(tpath, report)
        wavs = {p.stem: p for p in sorted(folder.glob("*.wav"))}
        spk = f"en_{re.sub(r'[^a-z0-9]+', '_', folder.name.lower())}"
        for name in sorted(set(texts) - set(wavs)):
            report.exclude("no_audio", f"{folder.name}/{name}")
        for name in sorted(set(wavs) - set(texts)):
            report.exclude("no_transcript", f"{folder.name}/{name}")
        for name in sorted(set(texts) & set(wavs)):
            full = f"{folder.name}/{name}"
            text, reason = normalize_en(texts[name])
            if reason:
                report.exclude(reason, full, texts[name])
                continue
            try:
                wav, frames, peak = wav_clip(
                    wavs[name], corpus_dir / "heldout" / folder.name / f"{name}.wav"
                )
            except (OSError, RuntimeError, sf.LibsndfileError) as e:
                report.exclude("unreadable_audio", full, str(e))
                continue
            if peak < SILENT_PEAK:
                report.exclude("silent_audio", full, f"peak {peak:.4f}")
                continue
            utts.append(Utt(utt_id(spk, name), spk, "en", str(wav), text, frames / SAMPLE_RATE))
    if not utts:
        raise CorpusError(f"{heldout_dir}: no usable held-out clip (folders with a transcription "
                          "and .wav files)")  # fmt: skip
    return utts


# --- output ----------------------------------------------------------------------------------


def limit(utts: list[Utt], max_utts: int, report: Report) -> list[Utt]:
    """The first ``max_utts`` utterances by id (all when 0); the rest counted."""
    utts = sorted(utts, key=lambda u: u.uttid.encode("utf-8"))
    if max_utts <= 0 or len(utts) <= max_utts:
        return utts
    for u in utts[max_utts:]:
        report.exclude("over_max_utts", u.uttid)
    return utts[:max_utts]


def write_data_dir(d: Path, utts: list[Utt], *, lid: bool = False) -> None:
    """All tables of one set (:func:`rpq_units.pipeline.data.write_data_dir`), text with a
    ``[lang]`` prefix when ``lid``."""
    write_kaldi_dir(d, [(u.uttid, u.wav, f"{lid_tag(u.lang)} {u.text}" if lid else u.text, u.spk,
                         u.lang) for u in utts])


def set_figures(utts: list[Utt]) -> dict:
    return {"utts": len(utts), "prompts": len({u.text for u in utts}),
            "minutes": round(sum(u.seconds for u in utts) / 60, 2)}  # fmt: skip


def check_options(args: argparse.Namespace) -> list[str]:
    """The languages asked for; an OptionError for a bad value."""
    langs = args.langs.split()
    unknown = [x for x in langs if x not in VOICES]
    if not langs or unknown:
        raise OptionError(f"--langs: {' '.join(unknown) or 'none given'}; choose from {' '.join(VOICES)}")  # fmt: skip
    if not (0 < args.train_ratio and 0 < args.dev_ratio and args.train_ratio + args.dev_ratio < 1):
        raise OptionError(f"--train_ratio {args.train_ratio} --dev_ratio {args.dev_ratio}: need both "
                          "above 0 and a sum below 1 (test gets the rest)")  # fmt: skip
    if args.max_utts < 0:
        raise OptionError(f"--max_utts {args.max_utts}: must be 0 (all) or more")
    return langs


def prepare_lang(
    lang: str, args: argparse.Namespace, corpus: Path, out: Path
) -> dict[str, list[Utt]]:
    """Sets of one language (and the held-out set with English), written with their report."""
    report = Report()
    clips, info = scan_asterisk(lang, Path(args.sounds_dir), Path(args.docs_dir), corpus, report)
    by_split: dict[str, list[Utt]] = {s: [] for s in SPLITS}
    for u in clips:
        by_split[split_of(u.text, args.train_ratio, args.dev_ratio, args.split_salt)].append(u)
    sets: dict[str, list[Utt]] = {}
    for split in SPLITS:
        name = f"{split}_{lang}"
        if not by_split[split]:
            raise CorpusError(f"{info['audio_dir']}: no utterance left for {name} (other "
                              "--train_ratio/--dev_ratio/--split_salt?)")  # fmt: skip
        sets[name] = limit(by_split[split], args.max_utts, report)
    asterisk_texts = {u.text for u in clips}
    heldout = None
    if lang == "en" and args.heldout_dir:
        heldout = Report()
        utts = scan_heldout(Path(args.heldout_dir), corpus, heldout)
        sets[HELDOUT_SET] = limit(utts, args.max_utts, heldout)
    for name, utts in sets.items():
        write_data_dir(out / name, utts)
    figures = {name: set_figures(utts) for name, utts in sets.items()}
    doc = {"lang": lang, **info, "sets": figures, **report.as_dict()}
    if heldout is not None:
        shared = sorted({u.text for u in sets[HELDOUT_SET]} & asterisk_texts)
        doc["heldout"] = {"dir": args.heldout_dir, **heldout.as_dict(), "texts_also_in_asterisk_prompts": shared}  # fmt: skip
    doc["settings"] = {k: getattr(args, k) for k in ("train_ratio", "dev_ratio", "split_salt", "max_utts")}  # fmt: skip
    write_text_atomic(out / "local" / f"asterisk_{lang}_report.json",
                      json.dumps(doc, indent=1, ensure_ascii=False) + "\n")  # fmt: skip
    log_summary(lang, info, figures, report, heldout)
    return sets


def prepare(args: argparse.Namespace) -> int:
    langs = check_options(args)
    corpus, out = Path(args.corpus_dir).resolve(), Path(args.datadir)
    (out / "local").mkdir(parents=True, exist_ok=True)  # the reports and the list of sets
    written: list[str] = []
    combined: dict[str, list[Utt]] = {s: [] for s in SPLITS}
    for lang in langs:
        sets = prepare_lang(lang, args, corpus, out)
        written.extend(sets)
        for split in SPLITS:
            combined[split].extend(sets[f"{split}_{lang}"])
    if args.multilingual:
        for split in SPLITS:
            write_data_dir(out / f"{split}_multi", combined[split], lid=args.lid)
            written.append(f"{split}_multi")
            f = set_figures(combined[split])
            logger.info("%s_multi: %d utterances, %.1f min, %d languages", split, f["utts"],
                        f["minutes"], len({u.lang for u in combined[split]}))  # fmt: skip
        tags = "".join(f"{lid_tag(x)}\n" for x in sorted(langs)) if args.lid else ""
        write_text_atomic(out / "nlsyms.txt", tags)
    write_text_atomic(out / "local" / "asterisk_sets", "".join(f"{n}\n" for n in written))
    return 0


def log_summary(lang: str, info: dict, figures: dict, report: Report, heldout: Report | None) -> None:  # fmt: skip
    logger.info("%s (%s): %d audio clips, %d transcript entries", lang, info["voice"],
                info["audio_clips"], info["transcript_entries"])  # fmt: skip
    for name, f in figures.items():
        logger.info("  %-16s %4d utterances %4d prompts %6.1f min", name, f["utts"], f["prompts"], f["minutes"])  # fmt: skip
    for title, rep in (("asterisk", report), ("held-out", heldout)):
        if rep is None:
            continue
        counts = rep.counts()
        logger.info("  %s left out: %s", title,
                    ", ".join(f"{r} {n}" for r, n in counts.items()) or "nothing")  # fmt: skip
        for kind, names in sorted(rep.repaired.items()):
            logger.info("  %s repaired (%s): %s", title, kind, ", ".join(names))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--sounds_dir", "--sounds-dir", default="/usr/share/asterisk/sounds",
                   help="holds the voice folders (en_US_f_Allison/, ...)")  # fmt: skip
    p.add_argument("--docs_dir", "--docs-dir", default="/usr/share/doc",
                   help="holds asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz")  # fmt: skip
    p.add_argument("--heldout_dir", "--heldout-dir", default="/usr/share/pocketsphinx/test/data",
                   help="pocketsphinx test data (librivox/, cards/) for test_heldout_en; '' for none")  # fmt: skip
    p.add_argument("--corpus_dir", "--corpus-dir", default="corpus/asterisk", help="where the decoded wavs go")  # fmt: skip
    p.add_argument("--datadir", default="data", help="where the set dirs go")
    p.add_argument("--langs", default="en", help=f"space-separated, of: {' '.join(VOICES)}")
    p.add_argument("--train_ratio", "--train-ratio", type=float, default=0.80, help="share of prompt texts in train")  # fmt: skip
    p.add_argument("--dev_ratio", "--dev-ratio", type=float, default=0.08, help="share in dev (test: the rest)")  # fmt: skip
    p.add_argument("--split_salt", "--split-salt", default="", help="prepended to each text before hashing: another split")  # fmt: skip
    p.add_argument("--max_utts", "--max-utts", type=int, default=0, help="keep the first N utterances (by id) per set; 0: all")  # fmt: skip
    p.add_argument("--multilingual", type=str2bool, default=False, help="also write {train,dev,test}_multi over --langs")  # fmt: skip
    p.add_argument("--lid", type=str2bool, default=False, help="prefix the multilingual sets' text with [lang]")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    return exit_status(lambda: prepare(args))  # a bad corpus or disk: one line; a bug: traceback


if __name__ == "__main__":
    sys.exit(main())
