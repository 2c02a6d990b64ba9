"""Sharding of keyed lists and feature shards on disk.

:func:`shard_range` splits ``n`` items into ``nshard`` contiguous parts (0-based ``rank``).
Shell recipes use 1-based ``JOB`` indices and pass ``JOB - 1``.

A feature directory holds, per rank ``r``::

    feats.<r>.npy   (T_r, D) float32, the frames of all its utterances, concatenated
    feats.<r>.len   one frame count per line, in the order of feats.<r>.ids
    feats.<r>.ids   one utterance id per line
    feats.json      upstream, upstream_ckpt, layer, dim, frame_rate, nshard, portion, seed

The ``.npy`` file is written as a stream (frames are appended as they are computed, the header is
filled in at the end) under a temporary name and renamed, so it is never left truncated.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rpq_units.errors import OptionError, UserError
from rpq_units.files import discard, named_os_error, tmp_path, write_text_atomic, writer_suffix

logger = logging.getLogger(__name__)

FEATS_JSON = "feats.json"
_NPY_HEADER_BYTES = 128  # fixed, so the header can be rewritten in place once T is known


class ShardError(UserError):
    """A missing, inconsistent or unreadable feature shard."""


def shard_range(n: int, nshard: int, rank: int) -> range:
    """Indices of shard ``rank`` (0-based) of ``n`` items split into ``nshard`` contiguous parts.

    Every index in ``range(n)`` falls in exactly one shard; shard sizes differ by at most one.
    """
    if n < 0:
        raise OptionError(f"n must be >= 0, got {n}")
    if nshard < 1:
        raise OptionError(f"nshard must be >= 1, got {nshard}")
    if not 0 <= rank < nshard:
        raise OptionError(f"rank must be in [0, {nshard}) (0-based), got {rank}")
    return range(n * rank // nshard, n * (rank + 1) // nshard)


def shard_file(feats_dir: str | os.PathLike, rank: int, ext: str) -> Path:
    """``<feats_dir>/feats.<rank>.<ext>``."""
    return Path(feats_dir) / f"feats.{rank}.{ext}"


def select_portion(n: int, portion: float, seed: int) -> list[int]:
    """A seeded, sorted random subset of ``round(portion * n)`` (at least 1) of ``range(n)``."""
    if not 0.0 < portion <= 1.0:
        raise OptionError(f"portion must be in (0, 1], got {portion}")
    if portion >= 1.0 or n == 0:
        return list(range(n))
    k = max(1, round(portion * n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


# ---- streaming .npy writer -------------------------------------------------------------


def _npy_header(shape: tuple[int, int]) -> bytes:
    """A version-1.0 ``.npy`` header for float32 C-order ``shape``, padded to a fixed size."""
    d = repr({"descr": "<f4", "fortran_order": False, "shape": shape})
    prefix = np.lib.format.magic(1, 0)
    room = _NPY_HEADER_BYTES - len(prefix) - 2  # 2 bytes of header length
    body = d.encode("latin1")
    if len(body) + 1 > room:
        raise ShardError(f"shape {shape} too large for the npy header")
    body = body + b" " * (room - len(body) - 1) + b"\n"
    return prefix + len(body).to_bytes(2, "little") + body


class FeatureShardWriter:
    """Append utterance features to ``<out_dir>/feats.<rank>.{npy,len,ids}``.

    Use as a context manager; files appear under their final names only when the block ends
    without an exception (temporary names, then :func:`os.replace`).
    """

    def __init__(self, out_dir: str | os.PathLike, rank: int) -> None:
        self.out_dir = Path(out_dir)
        self.rank = int(rank)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = shard_file(self.out_dir, self.rank, "npy")
        self._tmp = tmp_path(self.path)
        self._fh: Any = None
        self.dim: int | None = None
        self.ids: list[str] = []
        self.lens: list[int] = []

    def __enter__(self) -> FeatureShardWriter:
        self._fh = open(self._tmp, "wb")  # closed in __exit__
        try:
            self._fh.write(b"\0" * _NPY_HEADER_BYTES)
        except OSError as e:
            discard(self._fh, self._tmp)
            raise named_os_error(e, self.path) from e
        return self

    def add(self, uttid: str, feats: np.ndarray) -> None:
        """Append ``feats: (T, D)`` of utterance ``uttid``."""
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise ShardError(
                f"{uttid}: features must be (T, D) with T > 0, got shape {feats.shape}"
            )
        if self.dim is None:
            self.dim = int(feats.shape[1])
        elif feats.shape[1] != self.dim:
            raise ShardError(f"{uttid}: feature dimension {feats.shape[1]} != {self.dim}")
        if any(c.isspace() for c in uttid) or not uttid:
            raise ShardError(f"utterance id {uttid!r} is empty or contains whitespace")
        try:
            self._fh.write(np.ascontiguousarray(feats, dtype="<f4").tobytes())
        except OSError as e:  # e.g. a full disk: name the shard (a failing write names none)
            raise named_os_error(e, self.path) from e
        self.ids.append(uttid)
        self.lens.append(int(feats.shape[0]))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        fh, self._fh = self._fh, None
        if exc_type is not None:
            discard(fh, self._tmp)
            return
        try:
            fh.seek(0)
            fh.write(_npy_header((sum(self.lens), self.dim or 0)))
            fh.close()
            write_text_atomic(
                shard_file(self.out_dir, self.rank, "len"), "".join(f"{n}\n" for n in self.lens)
            )
            write_text_atomic(
                shard_file(self.out_dir, self.rank, "ids"), "".join(f"{u}\n" for u in self.ids)
            )
            os.replace(self._tmp, self.path)
        except OSError as e:
            discard(fh, self._tmp)
            raise named_os_error(e, self.path) from e
        except BaseException:
            discard(fh, self._tmp)
            raise


def write_feats_json(out_dir: str | os.PathLike, info: dict[str, Any]) -> None:
    """Write ``feats.json`` (sorted keys, atomic). Every shard's job writes the same file, and
    jobs of an array end together: each renames its own temporary file."""
    write_text_atomic(Path(out_dir) / FEATS_JSON, json.dumps(info, indent=2, sort_keys=True) + "\n",
                      writer_suffix())


# ---- reader ------------------------------------------------------------------------------


class FeatureShards:
    """All feature shards of a directory, memory-mapped.

    ``info`` is ``feats.json``; ``ids``/``lens`` list every utterance in rank order;
    :meth:`frames` samples frames (all, or ``max_frames`` of them, seeded).
    """

    def __init__(self, feats_dir: str | os.PathLike) -> None:
        self.dir = Path(feats_dir)
        meta = self.dir / FEATS_JSON
        if not meta.is_file():
            raise ShardError(f"{meta}: no such file (run 'rpq-units dump_feats' first)")
        try:
            self.info: dict[str, Any] = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise ShardError(f"{meta}: not valid JSON ({e})") from e
        nshard = int(self.info.get("nshard", 1))
        self.arrays: list[np.ndarray] = []
        self.ids: list[str] = []
        self.lens: list[int] = []
        missing = []
        for r in range(nshard):
            files = {ext: shard_file(self.dir, r, ext) for ext in ("npy", "len", "ids")}
            if not all(f.is_file() for f in files.values()):
                missing.append(r)
                continue
            arr = _load_npy(files["npy"])
            ids = files["ids"].read_text().split()
            lens = [int(v) for v in files["len"].read_text().split()]
            if len(ids) != len(lens) or sum(lens) != arr.shape[0]:
                raise ShardError(
                    f"{self.dir}/feats.{r}.*: {len(ids)} ids, {len(lens)} lengths summing to {sum(lens)}, "
                    f"but {arr.shape[0]} frames: the shard is inconsistent"
                )
            self.arrays.append(arr)
            self.ids.extend(ids)
            self.lens.extend(lens)
        if missing:
            raise ShardError(
                f"{self.dir}: feature shard(s) {missing} of {nshard} are missing "
                f"(feats.<rank>.npy/.len/.ids)"
            )
        dims = {a.shape[1] for a in self.arrays if a.shape[0]}
        if len(dims) > 1:
            raise ShardError(f"{self.dir}: shards have different feature dimensions {sorted(dims)}")
        self.dim = int(self.info.get("dim") or (dims.pop() if dims else 0))
        if len(set(self.ids)) != len(self.ids):
            raise ShardError(f"{self.dir}: an utterance id appears in more than one shard")

    @property
    def num_frames(self) -> int:
        return sum(a.shape[0] for a in self.arrays)

    def utterances(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(uttid, feats (T, D))`` for every utterance, in shard order (views, not copies)."""
        k = 0
        for arr in self.arrays:
            off = 0
            while off < arr.shape[0]:
                n = self.lens[k]
                yield self.ids[k], arr[off : off + n]
                off += n
                k += 1

    def frames(self, max_frames: int | None = None, seed: int = 0) -> np.ndarray:
        """All frames ``(N, D)`` float32, or a seeded random subset of ``max_frames`` of them
        (kept in storage order)."""
        total = self.num_frames
        if max_frames is None or max_frames >= total:
            if not self.arrays:
                return np.zeros((0, self.dim), np.float32)
            return np.concatenate([np.asarray(a, dtype=np.float32) for a in self.arrays], axis=0)
        if max_frames < 1:
            raise OptionError(f"max_frames must be >= 1, got {max_frames}")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(total, size=max_frames, replace=False))
        out = np.empty((max_frames, self.dim), np.float32)
        start = 0
        for arr in self.arrays:
            lo, hi = np.searchsorted(idx, [start, start + arr.shape[0]])
            out[lo:hi] = arr[idx[lo:hi] - start]
            start += arr.shape[0]
        return out


    def utterance_frames(
        self, max_frames: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, list[int]]:
        """Frames ``(N, D)`` float32 of whole utterances and their lengths (frames per
        utterance, summing to N), for quantizers whose codes look at neighbouring frames.

        All utterances, or a seeded random choice of utterances until ``max_frames`` are
        reached (the last one cut to fit), kept in storage order; every utterance stays a
        contiguous run of frames, so windows can be kept inside it."""
        total = self.num_frames
        spans = []  # (array index, start, length) of each utterance
        k = 0
        for a, arr in enumerate(self.arrays):
            off = 0
            while off < arr.shape[0]:
                spans.append((a, off, self.lens[k]))
                off += self.lens[k]
                k += 1
        if max_frames is not None and max_frames < 1:
            raise OptionError(f"max_frames must be >= 1, got {max_frames}")
        if max_frames is not None and max_frames < total:
            order = np.random.default_rng(seed).permutation(len(spans))
            chosen, room = [], max_frames
            for i in order:
                if room <= 0:
                    break
                a, off, n = spans[i]
                chosen.append((int(i), min(n, room)))
                room -= n
            spans = [(spans[i][0], spans[i][1], n) for i, n in sorted(chosen)]
        if not spans:
            return np.zeros((0, self.dim), np.float32), []
        x = np.concatenate([np.asarray(self.arrays[a][off : off + n], dtype=np.float32)
                            for a, off, n in spans], axis=0)  # fmt: skip
        return x, [n for _, _, n in spans]


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError, SyntaxError) as e:
        raise ShardError(f"{path}: not a readable .npy feature shard ({e})") from e
    if arr.ndim != 2:
        raise ShardError(f"{path}: expected a (T, D) array, got shape {arr.shape}")
    return arr


__all__ = [
    "FeatureShardWriter",
    "FeatureShards",
    "ShardError",
    "select_portion",
    "shard_file",
    "shard_range",
    "write_feats_json",
]
