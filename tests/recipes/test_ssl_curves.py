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


def test_label_floor_is_a_quarter_of_the_first_epoch():
    """The check BiRQ's pre-training is held to, on the demo's two runs of 2026-12-05: with
    dropout in the label pass the training stream went to 0.24 of epoch 1 (below), without it
    to 0.34; fixed labels are not listed."""
    mod = load()
    old = (328.472, 164.329, 78.7456, 101.33, 122.001)
    new = (189.969, 91.6501, 63.84, 97.6786, 115.164)
    stats = {e: {"train": {"ppl_enhanced": o, "ppl_anchor": 116.656, "ppl_new": n}}
             for e, (o, n) in enumerate(zip(old, new, strict=True), start=1)}
    report = mod.floor_report(mod.curves(stats))
    assert [below for _, below in report] == [True, False]
    assert report[0][0] == ("train ppl_enhanced: lowest 78.7 (epoch 3) is 0.24 of epoch 1's 328.5 "
                            "(floor 0.25): BELOW the floor")
    assert report[1][0].startswith("train ppl_new: lowest 63.8 (epoch 3) is 0.34 of epoch 1's 190.0")
