"""The SSL recipe engine (egs/TEMPLATE/ssl.sh) at tiny size: data, ESPnet SSL statistics, BiRQ
pre-training (two epochs of a 32-dim encoder through the shipped demo config), export, curves;
a rerun skips finished stages; then the unit engine fits units on the exported encoder's layer
(--upstream rpq_ssl) with the encoder's provenance in the codebook."""

from __future__ import annotations

import hashlib

import pytest
import torch
from recipe_helpers import TINY, copy_recipe, have, run

pytestmark = [
    pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)"),
    pytest.mark.espnet,
    pytest.mark.slow,
]

SSL = ["--train_set", "train_clean", "--valid_set", "dev_clean", "--ssl_config", "conf/ssl/birq_demo.yaml",
       "--ssl_tag", "birq", "--data_opts", TINY,
       "--ssl_args", "--max_epoch 2 --encoder_conf output_size=32 --encoder_conf attention_heads=2 "
                     "--encoder_conf linear_units=64 --batch_bins 64000 --num_workers 0 "
                     "--use_matplotlib false --use_tensorboard false"]


@pytest.fixture
def recipe(tmp_path):
    return copy_recipe(tmp_path, conf=True)


def test_ssl_recipe_pretrains_exports_plots_and_feeds_units(recipe):
    from rpq_units.ssl.encoder import load_encoder

    r = run(["./ssl.sh", *SSL], cwd=recipe, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    for n in range(1, 6):
        assert f"Stage {n} done" in r.stderr
    sdir = recipe / "exp" / "ssl_birq"
    enc = load_encoder(sdir / "encoder.pt")
    assert (enc.method, enc.num_layers, enc.output_dim) == ("birq", 4, 32)
    assert (sdir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line.split("\t") for line in (sdir / "curves.tsv").read_text().splitlines()[1:]]
    got = {(part, name, int(epoch)) for part, name, epoch, _ in rows}
    for part in ("train", "valid"):
        for name in ("acc_anchor", "acc_enhanced", "ppl_anchor", "ppl_enhanced"):
            assert {(part, name, 1), (part, name, 2)} <= got, (part, name)
    assert all(0 <= float(v) <= 1 for _, name, _, v in rows if name.startswith("acc"))

    # a rerun skips the finished statistics, training and export
    r = run(["./ssl.sh", "--stage", "2", "--stop_stage", "4", *SSL], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "statistics already collected" in r.stderr and "exp/ssl_birq already trained" in r.stderr
    assert "already exported" in r.stderr

    # units on the exported encoder's layer 3, through the unit engine's stages 2-3
    r = run(["./run.sh", "--stage", "2", "--stop_stage", "3", "--upstream", "rpq_ssl",
             "--upstream_ckpt", "exp/ssl_birq/encoder.pt", "--layer", "3", "--feat_tag", "birq_l3",
             "--discretizers", "rpq", "--feats_portion", "1", "--test_sets", "test_clean", "--nj", "1"],
            cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = torch.load(recipe / "exp" / "units_birq_l3_rpq" / "codebook.pt", weights_only=True)["meta"]
    sha = hashlib.sha256((sdir / "encoder.pt").read_bytes()).hexdigest()
    assert (meta["upstream"], meta["layer"], meta["upstream_kind"], meta["upstream_sha256"]) == (
        "rpq_ssl", 3, "birq", sha)
