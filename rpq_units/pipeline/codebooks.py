"""Codebook files: a fitted quantizer on disk.

A file holds :meth:`rpq_units.quant.base.Quantizer.to_blob`: the config, provenance and plain
tensors, read back with ``torch.load(..., weights_only=True)`` (never pickled library objects,
so files survive library upgrades; files of earlier versions load, their configs rewritten by
:func:`rpq_units.quant.base.canonical_config`)::

    save_codebook(q, "exp/units/codebook.pt"); q2 = load_quantizer("exp/units/codebook.pt")
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from rpq_units.files import write_bytes_atomic
from rpq_units.quant.base import Quantizer, QuantizerError, quantizer_from_blob


def save_codebook(q: Quantizer, path: str | os.PathLike) -> None:
    """Write a fitted quantizer to ``path`` (temporary name, then rename)."""
    blob = q.to_blob()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # serialized in memory, then written by plain file I/O: a full disk gives an OSError naming
    # the file (torch.save to a path raises a RuntimeError), and the bytes do not depend on the
    # file's name
    buf = io.BytesIO()
    torch.save(blob, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_quantizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> Quantizer:
    """Rebuild a quantizer saved with :func:`save_codebook`."""
    path = Path(path)
    if not path.is_file():
        raise QuantizerError(f"{path}: no such codebook file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise QuantizerError(f"{path}: not a readable codebook file ({e})") from e
    return quantizer_from_blob(blob, device=device, where=str(path))
