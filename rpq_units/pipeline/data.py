"""Kaldi data directories and audio loading.

A data dir holds utterance-keyed text tables, sorted by key::

    wav.scp    recid  /path/to/file.{wav,flac,...}      (any format soundfile reads)
               recid  sox in.sph -t wav - |               (a shell command writing audio to stdout)
    segments   uttid  recid  start_s  end_s                (optional; without it uttid = recid;
                                                           end_s -1 = end of the recording)
    text       uttid  transcript                           (optional)
    utt2spk    uttid  spkid                                (optional)

:func:`load_data_dir` returns the utterances sorted by id; :func:`load_audio` returns one as a
16 kHz mono float32 waveform (channels averaged, resampled with
``torchaudio.functional.resample`` when the source rate differs).

Bad input raises :class:`AudioError` with one line naming the utterance, its source and the
problem (unreadable or empty audio, zero-length segment, segment past the end of the recording,
a failing pipe command). The library never skips; callers decide (the command line skips with a
warning and a count by default, or stops with ``--strict``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from rpq_units.errors import UserError
from rpq_units.files import atomic_path

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class DataDirError(UserError):
    """A missing or malformed data-dir table."""


class AudioError(UserError):
    """Audio of one utterance could not be loaded; the message names the utterance."""


@dataclass(frozen=True)
class Utterance:
    """One utterance of a data dir. ``start``/``end`` (seconds) are set when it is a segment."""

    uttid: str
    recid: str
    source: str  # the wav.scp value: a path, or a command ending in '|'
    start: float | None = None
    end: float | None = None
    text: str | None = None
    speaker: str | None = None

    @property
    def is_pipe(self) -> bool:
        return self.source.endswith("|")


def read_table(
    path: str | os.PathLike, *, num_fields: int | None = None, allow_empty: bool = False
) -> dict[str, str]:
    """A Kaldi table ``key value...`` as ``{key: value}`` (value keeps its inner spaces).

    ``num_fields`` (counting the key) checks lines that must have exactly that many fields.
    Empty lines are ignored; duplicate keys are errors, and so are lines without a value
    unless ``allow_empty`` (e.g. an empty transcript in ``text``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: no such file")
    out: dict[str, str] = {}
    with open(path, "rb") as f:
        for lineno, data in enumerate(f, 1):
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataDirError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{data[e.start]:02x} at column "
                    f"{e.start + 1}); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from e
            line = raw.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if num_fields is not None and len(line.split()) != num_fields:
                raise DataDirError(
                    f"{path}:{lineno}: expected {num_fields} fields, got {len(line.split())}: "
                    f"{line[:80]!r}"
                )
            if not value and not allow_empty:
                raise DataDirError(f"{path}:{lineno}: key {key!r} has no value")
            if key in out:
                raise DataDirError(f"{path}:{lineno}: duplicate key {key!r}")
            out[key] = value
    return out


def write_data_dir(d: str | os.PathLike, utts: list[tuple[str, str, str, str, str]]) -> None:
    """A Kaldi data dir from ``(uttid, wav, text, spk, lang)`` rows: ``wav.scp``, ``text``,
    ``utt2spk``, ``utt2lang`` and ``spk2utt``, each sorted by key in byte order (as
    ``LC_ALL=C sort``), each written to a temporary name, then all renamed."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    spk2utt: dict[str, list[str]] = {}
    for uttid, _, _, spk, _ in utts:
        spk2utt.setdefault(spk, []).append(uttid)
    tables = {
        "wav.scp": [(u[0], u[1]) for u in utts],
        "text": [(u[0], u[2]) for u in utts],
        "utt2spk": [(u[0], u[3]) for u in utts],
        "utt2lang": [(u[0], u[4]) for u in utts],
        "spk2utt": [(s, " ".join(sorted(v, key=str.encode))) for s, v in spk2utt.items()],
    }
    with contextlib.ExitStack() as renames:  # renamed when all are written (last one first)
        for name, rows in tables.items():
            tmp = renames.enter_context(atomic_path(d / name))
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(f"{k} {v}\n" for k, v in sorted(rows, key=lambda r: r[0].encode("utf-8")))


def load_data_dir(data_dir: str | os.PathLike) -> list[Utterance]:
    """Utterances of a Kaldi data dir (``wav.scp`` + optional ``segments``/``text``/``utt2spk``),
    sorted by utterance id."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataDirError(f"{d}: no such data directory")
    wav = read_table(d / "wav.scp")
    text = read_table(d / "text", allow_empty=True) if (d / "text").is_file() else {}
    spk = read_table(d / "utt2spk", num_fields=2) if (d / "utt2spk").is_file() else {}
    utts: list[Utterance] = []
    if (d / "segments").is_file():
        seg = read_table(d / "segments", num_fields=4)
        for uttid, value in seg.items():
            recid, start_s, end_s = value.split()
            if recid not in wav:
                raise DataDirError(f"{d / 'segments'}: {uttid}: recording {recid!r} not in wav.scp")
            try:
                start, end = float(start_s), float(end_s)
            except ValueError as e:
                raise DataDirError(f"{d / 'segments'}: {uttid}: bad start/end times ({e})") from e
            if end < 0:  # Kaldi: a negative end time means the end of the recording
                end = None
            utts.append(
                Utterance(uttid, recid, wav[recid], start, end, text.get(uttid), spk.get(uttid))
            )
    else:
        for uttid, source in wav.items():
            utts.append(
                Utterance(uttid, uttid, source, None, None, text.get(uttid), spk.get(uttid))
            )
    utts.sort(key=lambda u: u.uttid)
    return utts


def _describe(utt: Utterance) -> str:
    src = utt.source if len(utt.source) <= 120 else utt.source[:117] + "..."
    return f"utterance {utt.uttid} ({src})"


def _read_pipe(utt: Utterance) -> tuple[np.ndarray, int]:
    cmd = utt.source[:-1].strip()
    proc = subprocess.run(cmd, shell=True, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        tail = f": {err[-1]}" if err else ""
        raise AudioError(f"{_describe(utt)}: command exited with status {proc.returncode}{tail}")
    if not proc.stdout:
        raise AudioError(f"{_describe(utt)}: command wrote no audio")
    try:
        wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{_describe(utt)}: command output is not readable audio ({e})") from e
    return wav, sr


def _read_file(utt: Utterance) -> tuple[np.ndarray, int]:
    path = utt.source
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = "no such file" if not os.path.exists(path) else str(e)
        raise AudioError(f"{_describe(utt)}: unreadable audio ({reason})") from e
    sr = info.samplerate
    start = 0 if utt.start is None else round(utt.start * sr)
    stop = None if utt.end is None else round(utt.end * sr)
    if (
        utt.start is not None
        and info.frames > 0
        and (start >= info.frames or (stop or 0) > info.frames)
    ):
        _check_segment(utt, info.frames, sr)
    try:
        wav, sr = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{_describe(utt)}: unreadable audio ({e})") from e
    return wav, sr


def _check_segment(utt: Utterance, n: int, sr: int) -> None:
    """Raise if the segment of ``utt`` is empty or reaches past ``n`` samples at ``sr``."""
    if utt.start is None:
        return
    if utt.end is not None and utt.end <= utt.start:
        raise AudioError(
            f"{_describe(utt)}: zero-length segment (start {utt.start:.3f} s, end {utt.end:.3f} s)"
        )
    dur = n / sr
    # a sample of tolerance: segment times are rounded
    if utt.start >= dur or (utt.end is not None and round(utt.end * sr) > n + 1):
        end = "end" if utt.end is None else f"{utt.end:.3f} s"
        raise AudioError(
            f"{_describe(utt)}: segment {utt.start:.3f} s - {end} reaches past the end of "
            f"the recording ({dur:.3f} s)"
        )


class AudioLoader:
    """Loads utterances as 16 kHz mono float32; keeps the last piped recording so the segments
    of one recording run its command once (data dirs are sorted, segments of a recording are
    usually adjacent)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._cache: tuple[str, np.ndarray, int] | None = None

    def __call__(self, utt: Utterance) -> np.ndarray:
        if utt.start is not None and utt.end is not None and utt.end <= utt.start:
            _check_segment(utt, 1, 1)
        if utt.is_pipe:
            if self._cache is not None and self._cache[0] == utt.source:
                _, wav, sr = self._cache
            else:
                wav, sr = _read_pipe(utt)
                self._cache = (utt.source, wav, sr)
            if utt.start is not None:
                _check_segment(utt, wav.shape[0], sr)
                stop = None if utt.end is None else round(utt.end * sr)
                wav = wav[round(utt.start * sr) : stop]
        else:
            wav, sr = _read_file(utt)
        if wav.shape[0] == 0:
            what = "segment" if utt.start is not None else "audio"
            raise AudioError(f"{_describe(utt)}: empty {what} (0 samples)")
        mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
        if not np.isfinite(mono).all():
            raise AudioError(f"{_describe(utt)}: audio contains NaN or Inf samples")
        if sr != self.sample_rate:
            mono = resample(mono, sr, self.sample_rate)
        return np.ascontiguousarray(mono, dtype=np.float32)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D float32 waveform with ``torchaudio.functional.resample``."""
    import torch
    import torchaudio.functional as taf

    return taf.resample(torch.from_numpy(np.ascontiguousarray(wav)), orig_sr, new_sr).numpy()


def load_audio(utt: Utterance, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One utterance as a 1-D float32 waveform at ``sample_rate`` (mono)."""
    return AudioLoader(sample_rate)(utt)
