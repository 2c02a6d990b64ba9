#!/usr/bin/env python3
"""What a recipe's units hold for deduplication and BPE: frames, repeated frames, and how many
distinct frame tuples there are (the alphabet BPE would need if each M-code frame were one
symbol) and how many test frames are tuples never seen in training.

    python bench/unit_tuples.py --dump egs/mini_librispeech/dump --tag mel_40ms_llast \\
        --discretizers "kmeans pq rpq" --train train_clean --test test_clean

Prints one markdown row per discretizer (README, "Unit options").
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from rpq_units.pipeline.codebooks import load_quantizer
from rpq_units.pipeline.unit_text import dedup_frames
from rpq_units.pipeline.units import read_units


def frames(units: dict[str, str], m: int) -> list[list[tuple[str, ...]]]:
    out = []
    for line in units.values():
        t = line.split()
        out.append([tuple(t[i:i + m]) for i in range(0, len(t), m)])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dump", required=True, help="the recipe's dump dir")
    p.add_argument("--exp", default=None, help="the recipe's exp dir (default: beside --dump)")
    p.add_argument("--tag", required=True, help="feature tag")
    p.add_argument("--discretizers", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    a = p.parse_args()
    exp = Path(a.exp) if a.exp else Path(a.dump).parent / "exp"
    print("| units | train frames | repeated frames (rm drops) | distinct frame tuples | seen once "
          "| test frames of unseen tuples |")
    print("|---|---|---|---|---|---|")
    for d in a.discretizers.split():
        q = load_quantizer(exp / f"units_{a.tag}_{d}" / "codebook.pt")
        m = q.num_codebooks
        udir = Path(a.dump) / f"units_{a.tag}_{d}"
        tr = read_units(udir / a.train / "units")
        ftr = [f for utt in frames(tr, m) for f in utt]
        kept = sum(len(dedup_frames(line.split(), m)) // m for line in tr.values())
        count = Counter(ftr)
        fte = [f for utt in frames(read_units(udir / a.test / "units"), m) for f in utt]
        unseen = sum(f not in count for f in fte)
        once = sum(v == 1 for v in count.values())
        print(f"| {d} {m}x{q.codebook_size} | {len(ftr)} | {100 * (1 - kept / len(ftr)):.1f} % | "
              f"{len(count)} | {once} | {100 * unseen / max(len(fte), 1):.1f} % |")


if __name__ == "__main__":
    main()
