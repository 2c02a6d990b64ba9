"""One default per option of the unit steps. ``utils/unit_defaults.sh`` states the default of
each option that the engine (``units_asr.sh``) and the step script (``utils/units_steps.sh``)
both take; both declare those options from it, and the commands under them have none of their
own (``rpq-units dump_feats --portion`` is required, ``steps.dump_feats(portion=...)`` too). So
a default changed there, and only there, is what both scripts and the CLI they run do."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from asset_helpers import make_data_dir
from recipe_helpers import TEMPLATE, copy_recipe, run

from rpq_units import cli
from rpq_units.pipeline import steps
from rpq_units.pipeline.shards import FeatureShards, select_portion

ENGINE = TEMPLATE / "units_asr.sh"
STEPS = TEMPLATE / "utils" / "units_steps.sh"
DEFAULTS = TEMPLATE / "utils" / "unit_defaults.sh"
# the step script's name of an engine option, where they differ
STEP_NAME = {"feats_portion": "portion"}


def options(script: Path) -> dict[str, str]:
    """name -> the value as written, of each ``name=value  # ...`` option line of ``script``
    above the line that sources parse_options.sh."""
    text = script.read_text().split("parse_options.sh\n")[0]
    return dict(re.findall(r"^([a-z]\w*)=(\S*)\s+#", text, flags=re.M))


def defaults(path: Path = DEFAULTS) -> dict[str, str]:
    return dict(re.findall(r"^default_(\w+)=(\S+)", path.read_text(), flags=re.M))


def test_each_shared_option_has_its_default_in_one_place():
    engine, step, shared = options(ENGINE), options(STEPS), defaults()
    # an empty value ("": not given, e.g. --upstream_ckpt) is no default to share
    both = {name for name in engine if STEP_NAME.get(name, name) in step and engine[name] != '""'}
    assert both == set(shared), "options both scripts take: their defaults belong in unit_defaults.sh"
    for name in both:
        assert engine[name] == step[STEP_NAME.get(name, name)] == f"${{default_{name}}}", name
    assert shared["feats_portion"] == "0.3" and shared["nj"] == "2"


def test_the_cli_and_the_library_have_no_portion_of_their_own(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["dump_feats", "--data_dir", tmp_path, "--out_dir", tmp_path / "f", "--upstream",
                  "fbank"])
    assert e.value.code == 2 and "--portion" in capsys.readouterr().err
    with pytest.raises(TypeError, match="portion"):
        steps.dump_feats(data_dir=str(tmp_path), out_dir=str(tmp_path / "f"), upstream="fbank")


def test_a_default_changed_in_one_place_reaches_both_scripts_and_the_cli(tmp_path):
    """The feature sample's portion set to 0.5 in a copy of unit_defaults.sh: the engine's help
    and stamp show it, and the step script, run alone, has rpq-units dump_feats sample half of
    the utterances (feats.json records 0.5)."""
    recipe = copy_recipe(tmp_path / "tree")
    utils = recipe.parent / "TEMPLATE" / "utils"
    text = (utils / "unit_defaults.sh").read_text()
    (utils / "unit_defaults.sh").write_text(
        text.replace("default_feats_portion=0.3 ", "default_feats_portion=0.5 "))
    assert defaults(utils / "unit_defaults.sh")["feats_portion"] == "0.5"

    sets = ["--train_set", "train", "--valid_set", "dev", "--test_sets", "test"]
    res = run(["./units_asr.sh", *sets, "--help"], cwd=recipe)
    assert res.returncode == 0 and re.search(r"--feats_portion +\[0\.5\]", res.stdout), res.stderr
    res = run(["./units_asr.sh", *sets, "--show_stamp", "feats"], cwd=recipe)
    assert res.returncode == 0 and "feats_portion=0.5" in res.stdout.splitlines(), res.stderr

    user = tmp_path / "user_recipe"  # the step script alone, from another dir, as a user runs it
    user.mkdir()
    os.symlink(utils, user / "units_utils")
    ids = make_data_dir(user / "data" / "train", [0.5, 0.6, 0.4, 0.5, 0.7, 0.6],
                        wav_dir=tmp_path / "wav")
    mel = recipe / "conf" / "upstream" / "mel_40ms.yaml"
    res = run(["units_utils/units_steps.sh", "--data_dir", "data/train", "--upstream",
               "baseline_local", "--upstream_ckpt", mel, "--nj", "1", "--feats_dir", "dump/feats",
               "feats"], cwd=user)
    assert res.returncode == 0, res.stderr[-3000:]
    assert " --portion 0.5 " in (user / "dump/feats/log/dump_feats.1.log").read_text()
    assert json.loads((user / "dump/feats/feats.json").read_text())["portion"] == 0.5
    want = [ids[i] for i in select_portion(len(ids), 0.5, 0)]
    assert FeatureShards(user / "dump/feats").ids == sorted(want) and len(want) == 3
