#!/usr/bin/env python3
"""Pre-training curves of a BEST-RQ / BiRQ run, per epoch: masked-prediction accuracy and label
perplexity (train and valid), as one PNG and a TSV table.

The values are ESPnet's own per-epoch statistics: the trainer's ``Reporter`` state saved in
``<exp>/checkpoint.pth`` (every epoch so far, across resumed runs), under the names the model
reports (``acc_anchor``, ``acc_enhanced``, ``ppl_anchor``, ``ppl_enhanced``, ...).

    plot_ssl_curves.py --exp_dir exp/ssl_bestrq --out exp/ssl_bestrq/curves.png
"""

import argparse
import math
import os
import sys
from fractions import Fraction

PANELS = (("acc", "masked-prediction accuracy"), ("ppl", "label perplexity"))
FLOOR = 0.25  # a changing label stream should stay above this share of its first epoch


def changing(points: list) -> bool:
    """Whether a stream's values change over the epochs (fixed labels' perplexity does not)."""
    return len({v for _, v in points}) > 1


def read_stats(exp_dir: str) -> dict:
    """{epoch: {"train"|"valid": {metric: value}}} from ESPnet's checkpoint.pth."""
    import torch

    path = os.path.join(exp_dir, "checkpoint.pth")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (train first)")
    # ESPnet's own resume file: its reporter state holds numpy scalars, so weights_only=False
    # (the same call ESPnet makes to resume from it)
    states = torch.load(path, map_location="cpu", weights_only=False)
    stats = states["reporter"]["stats"]
    return {int(e): {k: dict(v) for k, v in s.items() if k in ("train", "valid")}
            for e, s in stats.items()}


def curves(stats: dict) -> dict:
    """{(part, metric): [(epoch, value), ...]} for the acc_* and ppl_* metrics."""
    out: dict = {}
    for epoch in sorted(stats):
        for part, values in stats[epoch].items():
            for name, v in values.items():
                if name.split("_")[0] in ("acc", "ppl") and v is not None and math.isfinite(float(v)):
                    out.setdefault((part, name), []).append((epoch, float(v)))
    return out


def collapsed(data: dict, threshold: float = 2.0, drop: float = 0.1) -> list[str]:
    """One warning per label stream whose perplexity (per batch, of the argmax labels) ended
    below ``threshold`` (its labels have (nearly) all become one code) or below ``drop`` times
    its own peak (they shrank to a few codes), so predicting them teaches the encoder little.
    BiRQ's enhanced labels can do this (the model shapes its own targets through the
    Gumbel-softmax); fixed labels (BEST-RQ's anchors) keep their perplexity."""
    out = []
    for (part, name), points in sorted(data.items()):
        if not name.startswith("ppl_") or not points:
            continue
        last_epoch, last = points[-1]
        peak_epoch, peak = max(points, key=lambda p: p[1])
        if last < threshold:
            first = last_epoch  # start of the last stretch of epochs below the threshold
            for e, v in reversed(points):
                if v >= threshold:
                    break
                first = e
            out.append(f"{part} {name} is {last:.2f} at epoch {last_epoch} (below "
                       f"{threshold:g} since epoch {first}): those labels collapsed to one code")
        elif last < drop * peak:
            out.append(f"{part} {name} fell from {peak:.1f} (epoch {peak_epoch}) to {last:.2f} "
                       f"(epoch {last_epoch}): those labels shrank to a few codes per batch")
    return out


def floor_report(data: dict, fraction: float = FLOOR) -> list[tuple[str, bool]]:
    """For each label stream whose perplexity changes over the epochs (BiRQ's enhanced labels;
    fixed labels stay put): its lowest value against ``fraction`` of its first epoch's, as
    (line, below the floor). A stream that falls under a quarter of where it started has lost
    most of its codes, the check BiRQ's pre-training is held to."""
    out = []
    for (part, name), points in sorted(data.items()):
        if not name.startswith("ppl_") or not changing(points):
            continue
        first_epoch, first = points[0]
        low_epoch, low = min(points, key=lambda p: p[1])
        ratio = low / first if first > 0 else 0.0
        below = ratio < fraction
        out.append((f"{part} {name}: lowest {low:.1f} (epoch {low_epoch}) is {ratio:.2f} of epoch "
                    f"{first_epoch}'s {first:.1f} (floor {fraction:g}): "
                    f"{'BELOW the floor' if below else 'above the floor'}", below))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp_dir", required=True, help="ESPnet SSL experiment dir")
    p.add_argument("--out", required=True, help="PNG path (a .tsv of the values is written beside)")
    args = p.parse_args()
    try:
        data = curves(read_stats(args.exp_dir))
    except (FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not data:
        print(f"error: {args.exp_dir}/checkpoint.pth has no acc_*/ppl_* statistics", file=sys.stderr)
        return 1
    for msg in collapsed(data):
        print(f"warning: {args.exp_dir}: {msg}", file=sys.stderr)
    for line, below in floor_report(data):
        print(f"{'warning' if below else 'label floor'}: {args.exp_dir}: {line}", file=sys.stderr)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (prefix, title) in zip(axes, PANELS, strict=True):
        for (part, name), points in sorted(data.items()):
            if name.startswith(prefix + "_") or name == prefix:
                xs, ys = zip(*points, strict=True)
                line, = ax.plot(xs, ys, marker="o", linestyle="-" if part == "valid" else "--",
                                label=f"{part} {name}")
                if prefix == "ppl" and changing(points):  # the floor of floor_report
                    ax.axhline(FLOOR * ys[0], color=line.get_color(), linestyle=":", linewidth=1,
                               label=f"{part} {name}: {Fraction(FLOOR)} of epoch {xs[0]}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(os.path.basename(os.path.normpath(args.exp_dir)))
    fig.tight_layout()
    tmp = args.out + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, args.out)
    rows = ["part\tmetric\tepoch\tvalue"]
    for (part, name), points in sorted(data.items()):
        rows += [f"{part}\t{name}\t{e}\t{v:.6g}" for e, v in points]
    tsv = os.path.splitext(args.out)[0] + ".tsv"
    with open(tsv + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    os.replace(tsv + ".tmp", tsv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
