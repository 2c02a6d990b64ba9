"""The recipe's upstream forward options (``--feats_autocast``, ``--feats_batch_size``) reach
``dump_feats`` and ``encode``, are stamped, and stage 4 encodes the training utterances of
stage 2's sample from their dumped features."""

from __future__ import annotations

import json
import shutil

import pytest
from asset_helpers import make_data_dir
from recipe_helpers import ROOT, run

pytestmark = pytest.mark.slow

UNITS = "method: kmeans\nnum_codebooks: 1\ncodebook_size: 4\nseed: 0\nmax_iter: 3\n"


@pytest.fixture
def toy(tmp_path):
    shutil.copytree(ROOT / "egs" / "TEMPLATE", tmp_path / "egs" / "TEMPLATE")
    recipe = tmp_path / "egs" / "toy"
    recipe.mkdir()
    for name in ("cmd.sh", "path.sh", "units_asr.sh", "utils"):
        (recipe / name).symlink_to(f"../TEMPLATE/{name}")
    (recipe / "conf" / "units").mkdir(parents=True)
    (recipe / "conf" / "units" / "km.yaml").write_text(UNITS)
    data = recipe / "data"
    make_data_dir(data / "train", [0.6, 1.1, 0.5, 0.8], seed=0)
    make_data_dir(data / "dev", [0.7], prefix="dev", seed=20)
    make_data_dir(data / "test", [0.8], prefix="tst", seed=30)
    return recipe


def stages_2_4(recipe, *extra):
    args = ["./units_asr.sh", "--train_set", "train", "--valid_set", "dev", "--test_sets", "test",
            "--upstream", "mel", "--discretizers", "km", "--nj", "1", "--feats_portion", "0.5",
            "--stage", "2", "--stop_stage", "4", *extra]
    return run(args, cwd=recipe, timeout=900)


def test_forward_options_reach_the_commands_and_are_stamped(toy):
    r = stages_2_4(toy, "--feats_autocast", "bf16", "--feats_batch_size", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    featdir = toy / "dump" / "feats_mel_llast_train"
    info = json.loads((featdir / "feats.json").read_text())
    assert info["autocast"] == "bf16" and info["batch_size"] == 2
    stamp = (featdir / ".done").read_text()
    assert "feats_autocast=bf16" in stamp and "feats_batch_size=2" in stamp
    log = (toy / "dump" / "units_mel_llast_km" / "train" / "log" / "encode.1.log").read_text()
    assert "2 of 4 utterances from the features in" in log and " --autocast bf16 " in log
    # the dev set's features, dumped once for every discretizer, with the same options
    devdir = toy / "dump" / "feats_mel_llast_dev"
    dev_info = json.loads((devdir / "feats.json").read_text())
    assert dev_info["autocast"] == "bf16" and dev_info["batch_size"] == 2
    assert "feats_autocast=bf16" in (devdir / ".done").read_text()
    assert " --autocast bf16 " in (devdir / "log" / "dump_feats.1.log").read_text()
    dev_log = (toy / "dump" / "units_mel_llast_km" / "dev" / "log" / "encode.1.log").read_text()
    assert "utterances from the features in dump/feats_mel_llast_dev, 0 through the upstream" in dev_log
    # back to the defaults: everything redone, the stamps without the options
    r = stages_2_4(toy)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "made with other settings (feats_autocast" in r.stderr
    assert "feats_autocast" not in (featdir / ".done").read_text()
    assert "feats_autocast" not in (devdir / ".done").read_text()
    assert json.loads((devdir / "feats.json").read_text())["batch_size"] == 1
    assert json.loads((featdir / "feats.json").read_text())["batch_size"] == 1
    r = stages_2_4(toy, "--feats_autocast", "fp64")
    assert r.returncode == 2 and "--feats_autocast must be none, bf16 or fp16" in r.stderr
