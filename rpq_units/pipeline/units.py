"""Unit files for ESPnet discrete ASR (``asr2`` / MT task).

Codes ``(T, M)`` (M unit streams per frame, each in ``[0, K)``) become one text line per
utterance::

    M = 1:  uttid c_0 c_1 ... c_{T-1}
    M > 1:  uttid c^1_0 c^2_0+K ... c^M_0+(M-1)K  c^1_1 c^2_1+K ...   (frame-interleaved)

Stream ``m`` (0-based) is offset by ``m * K`` so a single source token list serves all streams:
``<blank>``, ``<unk>``, ``0`` .. ``M*K-1``, ``<sos/eos>``. ESPnet's ``frontend: patch`` with
``token_per_frame: M`` reshapes a line of ``T*M`` tokens back to ``(T, M)``.

Files are keyed by utterance id and sorted in byte order (``LC_ALL=C sort``; Python's ``sorted``
on ``str`` gives the same order for UTF-8). Every writer goes through a temporary name and
:func:`os.replace`, so a failed run never leaves a truncated file behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rpq_units.errors import UserError
from rpq_units.files import atomic_path, write_bytes_atomic

logger = logging.getLogger(__name__)

SPECIAL_HEAD = ("<blank>", "<unk>")
SPECIAL_TAIL = ("<sos/eos>",)


class UnitsError(UserError):
    """A malformed unit line or unit file."""


def units_to_tokens(codes: Any, codebook_size: int) -> np.ndarray:
    """codes ``(T, M)`` ints in ``[0, K)`` -> flat ``(T*M,)`` int64 tokens, stream m offset by m*K."""
    c = np.asarray(codes)
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2:
        raise UnitsError(f"codes must be (T, M), got shape {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= codebook_size):
        raise UnitsError(f"codes outside [0, {codebook_size})")
    offsets = np.arange(c.shape[1], dtype=np.int64) * codebook_size
    return (c.astype(np.int64) + offsets).reshape(-1)


def units_to_text(codes: Any, codebook_size: int) -> str:
    """codes ``(T, M)`` -> the token string of one unit line (without the utterance id)."""
    return " ".join(map(str, units_to_tokens(codes, codebook_size).tolist()))


def text_to_units(
    tokens: str | Sequence[str | int], num_codebooks: int, codebook_size: int
) -> np.ndarray:
    """Inverse of :func:`units_to_text`: tokens (a string or a list) -> codes ``(T, M)`` int64.

    Raises :class:`UnitsError` when the token count is not a multiple of M or a token of stream
    m is outside ``[m*K, (m+1)*K)``.
    """
    toks = tokens.split() if isinstance(tokens, str) else list(tokens)
    try:
        flat = np.asarray([int(t) for t in toks], dtype=np.int64)
    except ValueError as e:
        raise UnitsError(f"non-integer unit token ({e})") from e
    m, k = num_codebooks, codebook_size
    if flat.size % m:
        raise UnitsError(f"{flat.size} tokens is not a multiple of num_codebooks={m}")
    codes = flat.reshape(-1, m) - np.arange(m, dtype=np.int64) * k
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        t, s = np.argwhere((codes < 0) | (codes >= k))[0]
        raise UnitsError(
            f"token {flat[t * m + s]} at frame {t} is not in stream {s}'s range "
            f"[{s * k}, {(s + 1) * k})"
        )
    return codes


def token_list(num_codebooks: int, codebook_size: int) -> list[str]:
    """The source token list: ``<blank>``, ``<unk>``, ``0`` .. ``M*K-1``, ``<sos/eos>``."""
    n = num_codebooks * codebook_size
    return [*SPECIAL_HEAD, *map(str, range(n)), *SPECIAL_TAIL]


def write_token_list(path: str | os.PathLike, num_codebooks: int, codebook_size: int) -> None:
    """Write :func:`token_list` to ``path``, one token a line (atomic)."""
    write_lines_atomic(path, token_list(num_codebooks, codebook_size))


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write ``lines`` (each without newline) to ``path`` via ``path.tmp`` and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def read_units(path: str | os.PathLike) -> dict[str, str]:
    """A unit file as ``{uttid: "tok tok ..."}`` (duplicates are an error)."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, _, rest = line.partition(" ")
            if key in out:
                raise UnitsError(f"{path}:{lineno}: duplicate utterance id {key!r}")
            out[key] = rest.strip()
    return out


def write_units(path: str | os.PathLike, units: dict[str, str]) -> None:
    """Write ``{uttid: tokens}`` sorted by utterance id (byte order), atomically."""
    write_lines_atomic(path, (f"{k} {units[k]}" for k in sorted(units)))


def merge_unit_files(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Merge per-shard unit files into one sorted file; returns the number of utterances.

    An utterance id found in two inputs is an error (shards must not overlap).
    """
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    for p in inputs:
        if not Path(p).is_file():
            raise UnitsError(f"{p}: no such unit file")
        for k, v in read_units(p).items():
            if k in merged:
                raise UnitsError(f"utterance {k!r} is in both {origin[k]} and {p}")
            merged[k] = v
            origin[k] = str(p)
    write_units(out, merged)
    return len(merged)


class UnitArkWriter:
    """Collect ``(T, M)`` int32 code arrays and write a kaldiio ark + scp pair atomically.

    The arrays are stored with kaldiio's ``numpy`` write function (Kaldi matrices are float
    only); ``kaldiio.load_scp(scp)[uttid]`` returns them. Written on :meth:`close`, sorted.
    """

    def __init__(self, ark: str | os.PathLike, scp: str | os.PathLike | None = None) -> None:
        self.ark = Path(ark)
        self.scp = Path(scp) if scp is not None else self.ark.with_suffix(".scp")
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, uttid: str, codes: Any) -> None:
        self.arrays[uttid] = np.ascontiguousarray(np.asarray(codes), dtype=np.int32)

    def close(self) -> None:
        import kaldiio

        self.ark.parent.mkdir(parents=True, exist_ok=True)
        self.scp.parent.mkdir(parents=True, exist_ok=True)
        # the ark is renamed first, then the scp that points into it
        with atomic_path(self.scp) as scp_tmp, atomic_path(self.ark) as ark_tmp:
            data = {k: self.arrays[k] for k in sorted(self.arrays)}
            kaldiio.save_ark(str(ark_tmp), data, scp=str(scp_tmp), write_function="numpy")
            # the scp points into the temporary ark: point it at the final name
            lines = []
            with open(scp_tmp, encoding="utf-8") as f:
                for line in f:
                    key, _, loc = line.rstrip("\n").partition(" ")
                    _, _, offset = loc.rpartition(":")
                    lines.append(f"{key} {self.ark}:{offset}")
            write_lines_atomic(scp_tmp, lines)
