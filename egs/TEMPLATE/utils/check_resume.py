#!/usr/bin/env python3
"""Make an ESPnet output dir safe to resume with ``--resume true`` after a killed run.

ESPnet's trainer writes ``checkpoint.pth`` (model, optimizers, schedulers, reporter) and then
``<N>epoch.pth`` straight to their final names at the end of every epoch, so a job killed while
writing leaves a truncated file that the next run trusts: a truncated ``checkpoint.pth`` stops
the resumed run at ``torch.load``; a missing or truncated ``<N>epoch.pth`` (the epoch the
checkpoint records) stops it at the very end, when the n-best models are averaged.

    check_resume.py <output_dir>

- ``checkpoint.pth`` unreadable: moved to ``checkpoint.pth.bad`` (training restarts from
  epoch 1; nothing else holds the optimizer state);
- ``<N>epoch.pth`` missing or unreadable while the checkpoint is whole: rewritten from the
  checkpoint's model state, which is the same state ESPnet saves there.

Prints one line per repair on stderr; exits 0 (also when there is nothing to resume).
ESPnet offers no such check (its ``resume`` loads the file as is), hence this script.
"""

import argparse
import io
import os
import pickle
import sys
from pathlib import Path


def _load(path: Path):
    """The object in ``path``, or None when the file is truncated or not a torch file."""
    import torch  # here: a fresh training (no checkpoint) is checked without loading torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:  # zip/pickle errors of a cut file
        sys.stderr.write(f"check_resume.py: {path}: unreadable ({str(e).splitlines()[0][:200]})\n")
        return None


def _save(obj, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def check(output_dir: Path) -> int:
    """Repair ``output_dir`` for resuming; returns the number of repairs."""
    ckpt = output_dir / "checkpoint.pth"
    if not ckpt.is_file():
        return 0
    states = _load(ckpt)
    if not isinstance(states, dict) or "model" not in states or "reporter" not in states:
        bad = ckpt.with_name(ckpt.name + ".bad")
        os.replace(ckpt, bad)
        sys.stderr.write(
            f"check_resume.py: {ckpt} is not a whole checkpoint (a run killed while writing it): "
            f"moved to {bad.name}; training restarts from epoch 1\n"
        )
        return 1
    epoch = int(states["reporter"].get("epoch", 0))
    model = output_dir / f"{epoch}epoch.pth"
    if epoch > 0 and (not model.is_file() or _load(model) is None):
        _save(states["model"], model)
        sys.stderr.write(
            f"check_resume.py: {model} was missing or cut short (a run killed after saving "
            f"{ckpt.name}): rewritten from {ckpt.name}\n"
        )
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output_dir", type=Path, help="ESPnet training output dir")
    args = p.parse_args()
    check(args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
