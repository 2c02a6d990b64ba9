"""``utils/plot_ssl_curves.py``: label streams whose perplexity collapsed are named."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "egs" / "TEMPLATE" / "utils" / "plot_ssl_curves.py"


def load():
    spec = importlib.util.spec_from_file_location("plot_ssl_curves", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_collapsed_label_streams_are_named():
    mod = load()
    stats = {1: {"train": {"acc_anchor": 0.1, "ppl_anchor": 116.7, "ppl_enhanced": 13.1},
                 "valid": {"ppl_enhanced": 1.0}},
             2: {"train": {"acc_anchor": 0.12, "ppl_anchor": 116.7, "ppl_enhanced": 1.0},
                 "valid": {"ppl_enhanced": 1.0}}}
    msgs = mod.collapsed(mod.curves(stats))
    assert len(msgs) == 2
    assert msgs[0].startswith("train ppl_enhanced is 1.00 at epoch 2 (below 2 since epoch 2)")
    assert msgs[1].startswith("valid ppl_enhanced is 1.00 at epoch 2 (below 2 since epoch 1)")
    assert not any("ppl_anchor" in m for m in msgs)


def test_collapse_is_dated_from_the_last_stretch_below_the_threshold():
    mod = load()
    stats = {e: {"train": {"ppl_enhanced": v}} for e, v in ((1, 1.0), (2, 5.0), (3, 1.5), (4, 1.0))}
    assert mod.collapsed(mod.curves(stats)) == [
        "train ppl_enhanced is 1.00 at epoch 4 (below 2 since epoch 3): those labels collapsed to one code"]


def test_a_stream_that_shrank_to_a_few_codes_is_named():
    """BiRQ with the per-utterance normalisation (demo run of 2026-11-28): the enhanced labels
    went from 193 to about 3 codes per batch, above the one-code threshold."""
    mod = load()
    train = ((1, 193.3, 116.7), (2, 3.34, 116.7), (3, 3.31, 116.7), (4, 2.98, 116.7))
    stats = {e: {"train": {"ppl_enhanced": v, "ppl_anchor": a}} for e, v, a in train}
    stats[5] = {"train": {"ppl_rising": 50.0}}
    for e in range(1, 5):
        stats[e]["train"]["ppl_rising"] = 10.0 * e
    assert mod.collapsed(mod.curves(stats)) == [
        "train ppl_enhanced fell from 193.3 (epoch 1) to 2.98 (epoch 4): those labels shrank to "
        "a few codes per batch"]
