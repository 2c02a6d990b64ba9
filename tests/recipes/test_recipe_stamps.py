"""Reruns with changed settings, end to end on a toy recipe (ESPnet training of one epoch):
a changed option gives new results or a clear refusal, never a mixed table, and an utterance
that cannot be encoded is never silently left out of a score."""

from __future__ import annotations

import shutil
import textwrap

import pytest
from asset_helpers import make_data_dir
from recipe_helpers import ROOT, run

from rpq_units.evaluation.scoring import read_result

pytestmark = [pytest.mark.espnet, pytest.mark.slow]

UNITS = "method: kmeans\nnum_codebooks: 1\ncodebook_size: 8\nseed: 0\nmax_iter: 5\n"
ASR = textwrap.dedent("""\
    frontend: embed
    frontend_conf: {embed_dim: 16, positional_dropout_rate: 0.0}
    model: discrete_asr
    model_conf: {ctc_weight: 0.3, extract_feats_in_collect_stats: false}
    encoder: transformer
    encoder_conf: {output_size: 16, attention_heads: 2, linear_units: 16, num_blocks: 1, input_layer: conv1d2}
    decoder: transformer
    decoder_conf: {attention_heads: 2, linear_units: 16, num_blocks: 1}
    optim: adam
    optim_conf: {lr: 0.002}
    batch_type: folded
    batch_size: 4
    max_epoch: 1
    num_workers: 0
    best_model_criterion: [[valid, acc, max]]
    keep_nbest_models: 1
    num_att_plot: 0
    use_matplotlib: false
    use_tensorboard: false
    seed: 0
    """)
DECODE = "beam_size: 1\nctc_weight: 0.3\nmaxlenratio: 0.5\n"
TAG = "mel_llast_km"


def make_toy_recipe(root, name: str = "toy", units_dir: str = "units", asr_dir: str = "asr"):
    """``<root>/egs/<name>``: a recipe dir linked to a copy of the engine, with the tiny
    discretizer (``conf/<units_dir>/km.yaml``) and ASR configs (``conf/<asr_dir>/``)."""
    shutil.copytree(ROOT / "egs" / "TEMPLATE", root / "egs" / "TEMPLATE")
    recipe = root / "egs" / name
    recipe.mkdir()
    for link in ("cmd.sh", "path.sh", "units_asr.sh", "utils"):
        (recipe / link).symlink_to(f"../TEMPLATE/{link}")
    (recipe / "conf" / units_dir).mkdir(parents=True)
    (recipe / "conf" / asr_dir).mkdir()
    (recipe / "conf" / units_dir / "km.yaml").write_text(UNITS)
    (recipe / "conf" / asr_dir / "train.yaml").write_text(ASR)
    (recipe / "conf" / asr_dir / "decode.yaml").write_text(DECODE)
    return recipe


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A recipe dir linked to a copy of the engine, with tiny configs and data dirs; the test
    set holds one utterance whose audio file is corrupt."""
    recipe = make_toy_recipe(tmp_path_factory.mktemp("repo"))
    data = recipe / "data"
    make_data_dir(data / "train", [0.6, 1.1, 0.5, 1.4, 0.8, 0.7], seed=0)
    make_data_dir(data / "dev", [0.7, 0.9], prefix="dev", seed=20)
    make_data_dir(data / "test", [0.8, 0.6, 1.0], prefix="tst", seed=30)
    (data / "test" / "wav" / "spk1-tst0001.wav").write_bytes(b"RIFF, but not audio")
    return recipe


def engine(recipe, *extra):
    args = ["./units_asr.sh", "--train_set", "train", "--valid_set", "dev", "--test_sets", "test",
            "--upstream", "mel", "--discretizers", "km", "--token_type", "char", "--nj", "1",
            "--inference_nj", "1", "--asr_config", "conf/asr/train.yaml",
            "--inference_config", "conf/asr/decode.yaml", "--feats_portion", "0.5", *extra]
    return run([str(a) for a in args], cwd=recipe, timeout=1800)


def test_reruns_with_changed_settings(toy):
    short = "spk1-tst0001"
    # an utterance that cannot be encoded stops stage 4 by default, naming it
    r = engine(toy, "--stage", "2", "--stop_stage", "4")
    assert r.returncode == 1
    assert f"error: encoding test with km failed: error: utterance {short}" in r.stderr
    assert "--on_encode_error delete" in r.stderr

    # --on_encode_error delete: named and counted, scored as a full deletion (and in the stamp)
    r = engine(toy, "--stage", "2", "--stop_stage", "12", "--on_encode_error", "delete")
    assert r.returncode == 0, r.stderr[-4000:]
    assert "features already dumped" in r.stderr and f"exp/units_{TAG} already fitted" in r.stderr
    assert "test: 1 of 3 utterances could not be encoded" in r.stderr and short in r.stderr
    ddir = toy / "exp" / f"asr_{TAG}" / "decode_test_nolm"
    assert short not in (ddir / "hyp").read_text()
    result = read_result(ddir / "result.txt")
    assert result["N"] == 6 and result["Del"] >= 2  # "HELLO 1" of the short utterance, deleted
    assert f"Missing 1\n# no hypothesis (scored as deleted): {short}" in (ddir / "result.txt").read_text()
    first = (toy / "RESULTS.md").read_text()
    rows = [line for line in first.splitlines() if line.startswith(f"| {TAG}")]
    assert len(rows) == 1 and "`conf/units/km.yaml`" in rows[0]

    # another decoding option: the decode is redone, the table holds only the new row
    r = engine(toy, "--stage", "2", "--stop_stage", "12", "--on_encode_error", "delete",
               "--inference_args", "--beam_size 2")
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"exp/asr_{TAG} already trained" in r.stderr
    assert (f"exp/asr_{TAG}/decode_test_nolm: made with other settings (inference_args:  -> "
            "--beam_size 2): redoing it") in r.stderr
    assert "inference_args=--beam_size 2" in (ddir / ".done").read_text()
    table = (toy / "RESULTS.md").read_text()
    assert len([line for line in table.splitlines() if line.startswith(f"| {TAG}")]) == 1

    # another feature sample under a trained model: refused before anything is touched
    codebook = toy / "exp" / f"units_{TAG}" / "codebook.pt"
    mtime = codebook.stat().st_mtime_ns
    r = engine(toy, "--stage", "2", "--stop_stage", "12", "--on_encode_error", "delete",
               "--feats_portion", "1.0")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert (f"exp/asr_{TAG} was trained with other settings (feats_portion: 0.5 -> 1.0); to keep "
            "it, rerun with a new --expdir (and --dumpdir)") in errors[0]
    assert codebook.stat().st_mtime_ns == mtime and "Stage 2" not in r.stderr

    # a model dir of a discretizer not asked for now is not in the table
    shutil.copytree(toy / "exp" / f"asr_{TAG}", toy / "exp" / "asr_mel_llast_old")
    r = engine(toy, "--stage", "12", "--stop_stage", "12", "--on_encode_error", "delete",
               "--inference_args", "--beam_size 2")
    assert r.returncode == 0, r.stderr[-4000:]
    assert (toy / "RESULTS.md").read_text().count("| mel_llast_") == 1
