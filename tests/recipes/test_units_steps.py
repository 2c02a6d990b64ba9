"""egs/TEMPLATE/utils/units_steps.sh outside the engine: the unit steps (stages 2-5) from a
directory that is not one of our recipes, as a user adding units to an ESPnet recipe would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asset_helpers import make_data_dir
from recipe_helpers import ROOT, run

from rpq_units.pipeline import steps

STEPS = ROOT / "egs" / "TEMPLATE" / "utils" / "units_steps.sh"
MEL = ROOT / "egs" / "mini_librispeech" / "conf" / "upstream" / "mel_40ms.yaml"
UPSTREAM = ["--upstream", "baseline_local", "--upstream_ckpt", str(MEL)]


@pytest.fixture
def espnet_recipe(tmp_path):
    """A directory laid out like an ESPnet recipe, with our utils linked in as units_utils."""
    rdir = tmp_path / "asr2_recipe"
    rdir.mkdir()
    os.symlink(STEPS.parent, rdir / "units_utils")
    make_data_dir(rdir / "data" / "train", [0.9, 1.2, 0.7, 1.0, 0.8, 1.1], wav_dir=tmp_path / "wav")
    make_data_dir(rdir / "data" / "test", [1.0, 0.6, 0.9], wav_dir=tmp_path / "wav_test",
                  prefix="tst", seed=10)
    (rdir / "pq.yaml").write_text("method: pq\nnum_codebooks: 2\ncodebook_size: 8\nmax_iter: 5\n")
    return rdir


@pytest.mark.slow
def test_all_steps_outside_the_engine(espnet_recipe):
    r = espnet_recipe
    res = run(["units_utils/units_steps.sh", "--nj", "2", "--data_dir", "data/train", *UPSTREAM,
               "--portion", "1.0", "--feats_dir", "dump/feats", "--config", "pq.yaml",
               "--units_dir", "exp/units_pq", "--out_dir", "dump/units_pq/train",
               "feats", "fit", "encode", "token_list"], cwd=r)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (r / "exp/units_pq/codebook.pt").is_file()
    assert (r / "exp/units_pq/analysis").is_dir()
    assert (r / "dump/feats/log/dump_feats.2.log").is_file()  # two jobs
    units = (r / "dump/units_pq/train/units").read_text().splitlines()
    ids = [line.split()[0] for line in units]
    want = [line.split()[0] for line in (r / "data/train/wav.scp").read_text().splitlines()]
    assert ids == sorted(want)
    assert all(len(line.split()) > 1 and (len(line.split()) - 1) % 2 == 0 for line in units)
    text = (r / "dump/units_pq/train/text").read_text().splitlines()
    assert [t.split()[0] for t in text] == ids
    assert (r / "dump/units_pq/train/failed").read_text() == ""
    tokens = (r / "exp/units_pq/tokens.txt").read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and len(tokens) == 2 * 8 + 3

    # a second data dir with the fitted codebook; the same units as the library step
    res = run(["units_utils/units_steps.sh", "--data_dir", "data/test", *UPSTREAM,
               "--units_dir", "exp/units_pq", "--out_dir", "dump/units_pq/test", "encode"], cwd=r)
    assert res.returncode == 0, res.stderr[-3000:]
    steps.encode(data_dir=str(r / "data/test"), codebook=str(r / "exp/units_pq/codebook.pt"),
                 out=str(r / "direct"))
    assert (r / "dump/units_pq/test/units").read_text() == (r / "direct").read_text()


def test_usage_errors(espnet_recipe):
    r = espnet_recipe
    res = run(["units_utils/units_steps.sh", "--data_dir", "data/train", "dump"], cwd=r)
    assert res.returncode == 2 and "unknown step 'dump'" in res.stderr
    res = run(["units_utils/units_steps.sh", "--data_dir", "data/train", "fit"], cwd=r)
    assert res.returncode == 2 and "--feats_dir is required" in res.stderr
    res = run(["units_utils/units_steps.sh", "--feats_dir", "f", "--config", "nope.yaml",
               "--units_dir", "u", "fit"], cwd=r)  # fmt: skip
    assert res.returncode == 1 and "missing discretizer config nope.yaml" in res.stderr
    assert not Path(r / "u").exists()
