#!/usr/bin/env python3
"""How long the model's input is under each source-text setting: tokens per second of speech
of a set, for the units as encoded (ts), repeated frames removed (rm), and sentencepiece
pieces over those (rm + BPE, the model dirs' sentencepiece models) where stage 5 made them.

    python bench/src_lengths.py --recipe egs/mini_librispeech --tag mel_40ms_llast \\
        --discretizers "kmeans pq rpq" --set test_clean

Prints one markdown row per discretizer (README and the demo's RESULTS.md, "Unit options").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sentencepiece as spm
import soundfile as sf

from rpq_units.pipeline.units import read_units


def seconds(data_dir: Path) -> float:
    """Speech in a data dir's wav.scp (plain paths), from the file headers."""
    total = 0.0
    for line in (data_dir / "wav.scp").read_text().splitlines():
        path = line.split(maxsplit=1)[1]
        total += sf.info(path).duration
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", required=True, help="the recipe dir (data/, dump/, exp/)")
    p.add_argument("--tag", required=True, help="feature tag")
    p.add_argument("--discretizers", required=True)
    p.add_argument("--set", required=True)
    a = p.parse_args()
    r = Path(a.recipe)
    secs = seconds(r / "data" / a.set)
    print(f"| units | ts (tokens/s) | rm | sentencepiece models: pieces/s ({a.set}, {secs:.0f} s of speech) |")
    print("|---|---|---|---|")
    for d in a.discretizers.split():
        udir = r / "dump" / f"units_{a.tag}_{d}" / a.set
        row = [f"{sum(len(v.split()) for v in read_units(udir / 'units').values()) / secs:.1f}"]
        rm = udir / "units.rm"
        row.append(f"{sum(len(v.split()) for v in read_units(rm).values()) / secs:.1f}" if rm.is_file() else "-")
        pieces = []
        for model in sorted((r / "exp" / f"units_{a.tag}_{d}").glob("src_*/bpe.model")):
            chars = udir / ("units.rm.chars" if model.parent.name.startswith("src_rm_") else "units.chars")
            if not chars.is_file():
                continue
            sp = spm.SentencePieceProcessor(model_file=str(model))
            n = sum(len(sp.encode(v)) for v in read_units(chars).values())
            pieces.append(f"{model.parent.name[4:]}: {n / secs:.1f}")
        row.append(", ".join(pieces) or "-")
        print(f"| {d} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
