"""The source text an ESPnet model reads, made from unit lines: repeats removed, units as characters.

ESPnet's ``asr2`` recipes do two things to units before the model sees them: ``src_case rm``
drops a unit equal to the one before it, and ``src_token_type bpe`` learns sentencepiece pieces
over the unit strings, each unit spelled as one CJK character so that sentencepiece sees words
of characters. This module does the same for this project's unit lines (:mod:`.units`), which
may hold M streams per frame (PQ, RPQ, RVQ), frame-interleaved:

- ``case="rm"``: a **frame** equal to the frame before it (all M codes the same) is dropped. The
  frame stays whole, so ESPnet's ``patch`` frontend (``token_per_frame: M``) still reads M
  tokens per frame. Dropping repeats per stream would give the streams different lengths,
  which no ESPnet frontend reads.
- ``chars=True``: every token ``t`` (``0 .. M*K-1``, stream offsets included) becomes the
  character ``chr(0x4E00 + t)``, with no space between the tokens of one utterance, the input
  sentencepiece is trained on and ESPnet's ``src_token_type bpe`` tokenizes. Pieces are learned
  over the frame-interleaved stream, so a piece may join the codes of one frame (the common
  case: frequent pairs are within a frame) or run across frames; the model then reads pieces
  with the ``embed`` frontend, one embedding per piece. The alternative, one character per
  observed frame tuple, was measured on the demo and left out (README, "Unit options").

The inverse of ``chars`` is :func:`from_chars`; ``rm`` has no inverse (the run lengths are
gone), which is its purpose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence

from rpq_units.pipeline.units import UnitsError, read_units, write_lines_atomic

logger = logging.getLogger(__name__)

CASES = ("ts", "rm")  # ESPnet asr2's names: ts keeps the units as they are, rm removes repeats
CHAR_BASE = 0x4E00  # the first CJK unified ideograph, as ESPnet's asr2 recipes map units
CHAR_COUNT = 0x9FFF - CHAR_BASE + 1  # 20992 units at most


def dedup_frames(tokens: Sequence[str], num_codebooks: int) -> list[str]:
    """Tokens of one line without the frames equal to the frame before them."""
    m = num_codebooks
    if len(tokens) % m:
        raise UnitsError(f"{len(tokens)} tokens is not a multiple of num_codebooks={m}")
    out: list[str] = []
    prev: Sequence[str] = ()
    for i in range(0, len(tokens), m):
        frame = tokens[i:i + m]
        if frame != prev:
            out.extend(frame)
        prev = frame
    return out


def to_chars(tokens: Sequence[str]) -> str:
    """Unit tokens -> one character each (``chr(0x4E00 + t)``), no spaces."""
    try:
        ids = [int(t) for t in tokens]
    except ValueError as e:
        raise UnitsError(f"non-integer unit token ({e})") from e
    bad = [t for t in ids if not 0 <= t < CHAR_COUNT]
    if bad:
        raise UnitsError(f"unit {bad[0]} cannot be spelled as a character (0 .. {CHAR_COUNT - 1})")
    return "".join(chr(CHAR_BASE + t) for t in ids)


def from_chars(text: str) -> list[str]:
    """Inverse of :func:`to_chars` (spaces, as sentencepiece's pieces leave them, are ignored)."""
    out = []
    for ch in text:
        if ch.isspace() or ch == "\u2581":  # sentencepiece's word-boundary mark
            continue
        t = ord(ch) - CHAR_BASE
        if not 0 <= t < CHAR_COUNT:
            raise UnitsError(f"character {ch!r} does not spell a unit")
        out.append(str(t))
    return out


def source_line(units: str, num_codebooks: int, case: str, chars: bool) -> str:
    """One unit line's text (without the utterance id) as the model reads it."""
    if case not in CASES:
        raise UnitsError(f"case must be one of {', '.join(CASES)}, got {case!r}")
    tokens = units.split()
    if case == "rm":
        tokens = dedup_frames(tokens, num_codebooks)
    return to_chars(tokens) if chars else " ".join(tokens)


def source_lines(units: dict[str, str], num_codebooks: int, case: str, chars: bool) -> Iterator[str]:
    """``uttid text`` lines, in the order of ``units``; a bad line names its utterance."""
    for uttid, line in units.items():
        try:
            yield f"{uttid} {source_line(line, num_codebooks, case, chars)}"
        except UnitsError as e:
            raise UnitsError(f"utterance {uttid}: {e}") from None


def write_source_text(units_file: str | os.PathLike, out: str | os.PathLike, *, num_codebooks: int,
                      case: str, chars: bool) -> tuple[int, int]:
    """Write the source text of a unit file (atomic); returns (tokens in, tokens out)."""
    units = read_units(units_file)
    try:
        lines = list(source_lines(units, num_codebooks, case, chars))
    except UnitsError as e:
        raise UnitsError(f"{units_file}: {e}") from None
    write_lines_atomic(out, lines)
    n_in = sum(len(v.split()) for v in units.values())
    n_out = sum(len(line.split(" ", 1)[1]) if chars else len(line.split()) - 1 for line in lines)
    return n_in, n_out


def src_text(*, units: str, out: str, case: str, chars: bool, codebook: str | None = None,
             num_codebooks: int | None = None) -> tuple[int, int]:
    """The ``src_text`` step: a unit file -> its source text (M from ``codebook`` or given)."""
    if codebook is not None:
        from rpq_units.pipeline.codebooks import load_quantizer

        num_codebooks = load_quantizer(codebook).num_codebooks
    if num_codebooks is None:
        raise UnitsError("give --codebook or --num_codebooks")
    n_in, n_out = write_source_text(units, out, num_codebooks=num_codebooks, case=case, chars=chars)
    logger.info(
        "src_text: %s -> %s: %d unit tokens -> %d (%.1f %%), case %s%s", units, out, n_in, n_out,
        100.0 * n_out / max(n_in, 1), case, ", as characters" if chars else "")
    return n_in, n_out
