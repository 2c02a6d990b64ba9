"""Units of several layers through the engine (``--layer 1,3``) on a tiny demo corpus and a tiny
random-weight WavLM: the features are named after both layers, each discretizer is fit per
layer, the units of a frame are all layers' codes (PQ 2 x 8 per layer: 4 streams), the patch
frontend reads the whole tuple, deduplication keeps whole tuples, and stage 12 names the
discretizer per layer with the number of layers."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml
from asset_helpers import make_tiny_wavlm_checkpoint
from recipe_helpers import TINY, copy_recipe, env, have, write_tiny_confs

from rpq_units.pipeline.codebooks import load_quantizer
from rpq_units.pipeline.unit_text import dedup_frames
from rpq_units.pipeline.units import read_units

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)"),
]

TAG = "tiny_wavlm_l1+last"  # --layer 1,-1


def test_two_layers_as_unit_streams(tmp_path):
    recipe = copy_recipe(tmp_path)
    write_tiny_confs(recipe, max_epoch=1, keep_nbest_models=1)
    ckpt = make_tiny_wavlm_checkpoint(tmp_path / "tiny_wavlm.pt", layers=3, dim=32)
    opts = ["--upstream", "wavlm_local", "--upstream_ckpt", ckpt, "--layer", "1,-1",
            "--discretizers", "kmeans pq", "--units_conf_dir", "conf/tiny", "--feats_portion", "0.5",
            "--test_sets", "test_clean", "--nj", "2", "--inference_nj", "1", "--token_type", "char",
            "--asr_config", "conf/tiny/asr.yaml", "--inference_args", "--beam_size 2 --maxlenratio 0.3"]
    r = subprocess.run(["./run.sh", *map(str, opts), "--data_opts", TINY, "--src_case", "rm",
                        "--stage", "1", "--stop_stage", "12"],
                       cwd=recipe, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (recipe / "dump" / f"feats_{TAG}_train_clean" / "feats.json").is_file()
    for d, m in (("kmeans", 1), ("pq", 2)):
        q = load_quantizer(recipe / "exp" / f"units_{TAG}_{d}" / "codebook.pt")
        assert (q.method, q.inner, q.layer_dims, q.meta["layer"]) == ("layers", d, [32, 32], [1, 3])
        assert q.num_codebooks == 2 * m
        udump = recipe / "dump" / f"units_{TAG}_{d}" / "test_clean"
        units, src = read_units(udump / "units"), read_units(udump / "units.rm")
        for u, line in units.items():
            assert len(line.split()) % (2 * m) == 0
            codes = np.array(line.split(), int).reshape(-1, 2 * m)
            # layer 3's streams follow layer 1's: unit ids from stream m on
            assert (codes[:, m:] >= m * q.codebook_size).all()
            assert src[u].split() == dedup_frames(line.split(), 2 * m)
        adir = recipe / "exp" / f"asr_{TAG}_{d}_rm"
        cfg = yaml.safe_load((adir / "config.yaml").read_text())
        assert cfg["frontend"] == "patch" and cfg["frontend_conf"]["token_per_frame"] == 2 * m
        assert (adir / "decode_test_clean_nolm" / "hyp").is_file()
        assert "layer=1,-1" in (adir / ".done_train").read_text().splitlines()
    table = (recipe / "RESULTS.md").read_text()
    assert f"| {TAG}_pq_rm | pq 2x8 x 2 layers, rm |" in table
    assert f"| {TAG}_kmeans_rm | kmeans 1x16 x 2 layers, rm |" in table
    assert f"| {TAG}_pq_rm | {TAG}_kmeans_rm |" in table  # against the K-means of the same layers
