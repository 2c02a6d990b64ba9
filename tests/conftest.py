"""Shared fixtures: tiny random-weight s3prl checkpoints and synthetic Kaldi data dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels of rpq_units.quant.search_triton run in Triton's interpreter on
# CPU; it must be chosen before triton is first imported.
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from asset_helpers import make_data_dir, make_tiny_wavlm_checkpoint

# durations (s) of the shared tiny corpus: short enough for CPU, long enough for several frames
DURATIONS = [0.6, 1.1, 0.5, 1.4, 0.8, 0.7, 1.2]


def pytest_addoption(parser):
    parser.addoption(
        "--slow", action="store_true",
        help="also run the slow tier: the tests marked slow (ESPnet training, recipe runs, Slurm, "
             "kill-and-rerun; each over about 10 s). `-m slow --slow` runs the slow tier alone.",
    )


def pytest_configure(config):
    """Deprecation warnings raised inside torch by s3prl's model code are not ours."""
    for msg in (
        "`torch.nn.utils.weight_norm` is deprecated",
        "Support for mismatched key_padding_mask",
    ):
        config.addinivalue_line("filterwarnings", f"ignore:{msg}")


def pytest_collection_modifyitems(config, items):
    """The tiers: without --slow, each test marked slow is skipped with the reason, so that the
    plain `pytest -q` is the fast tier and still lists what it left out (a test named on the
    command line is no exception: it says to add --slow)."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow tier (ESPnet training, recipe runs, Slurm, kill-and-rerun): "
                                   "run with --slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory) -> Path:
    """A random-weight 3-layer WavLM in s3prl's ``wavlm_local`` format (4 hidden states, 32 dims)."""
    return make_tiny_wavlm_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny_wavlm.pt", layers=3, dim=32
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A Kaldi data dir of synthetic utterances (wav.scp with plain paths, text, utt2spk)."""
    d = tmp_path_factory.mktemp("data") / "train"
    make_data_dir(d, DURATIONS)
    return d
