"""``rpq-units transcribe``'s checks before any audio is read or model loaded: a missing or
unfinished model dir, a codebook of another upstream, layer or checkpoint than the units the
model was trained on, a codebook of another size, and the input options. Each stops with one
``error:`` line naming the file (exit 1). Transcribing with a trained model, against the recipe's
own decoding: tests/recipes/test_recipe_src_text.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rpq_units.cli import main
from rpq_units.pipeline.codebooks import load_quantizer, save_codebook
from rpq_units.pipeline.transcribe import ModelDirError, check_codebook_of_model, read_model_dir
from rpq_units.pipeline.units import token_list

ROOT = Path(__file__).resolve().parents[2]
PQ = ROOT / "tests" / "data" / "codebooks_v1" / "pq.pt"  # 2 x 8 codes of 8-dim frames
SHA = "7d89bcae5650d264034f6f87d6657d52e0c5bebddf05c948b56d0a32fa512c7f"
META = {"upstream": "wavlm_local", "upstream_ckpt": "/models/tiny.pt", "upstream_sha256": SHA,
        "layer": 2, "sample_rate": 16000, "frame_rate": 50.0, "feats_dir": "/nowhere"}
STAMP = {"upstream": "wavlm_local", "upstream_ckpt": SHA[:16], "layer": "2", "train_set": "train"}


def run(capsys, *argv) -> tuple[int, str]:
    try:
        rc = main(["transcribe", *map(str, argv)])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def make_model(recipe: Path, meta=None, stamp=None, tokens=None) -> Path:
    """A recipe dir with exp/units_x/codebook.pt (the PQ codebook with ``meta``) and a model dir
    exp/asr_x as stages 7-8 leave it (config.yaml with paths relative to the recipe, units.yaml,
    a model file, the training stamp); returns the model dir."""
    udir, adir = recipe / "exp" / "units_x", recipe / "exp" / "asr_x"
    udir.mkdir(parents=True)
    adir.mkdir()
    q = load_quantizer(PQ)
    q.meta = dict(META if meta is None else meta)
    save_codebook(q, udir / "codebook.pt")
    cfg = {"output_dir": "exp/asr_x", "src_token_type": "word", "token_type": "char",
           "src_token_list": token_list(2, 8) if tokens is None else tokens}
    (adir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (adir / "valid.acc.ave.pth").write_bytes(b"")
    (adir / "units.yaml").write_text("units_dir: exp/units_x\nsrc_case: ts\nsrc_token_type: word\n"
                                     "src_nbpe: 30\nsrc_bpemode: unigram\n")
    st = STAMP if stamp is None else stamp
    (adir / ".done_train").write_text("".join(f"{k}={v}\n" for k, v in sorted(st.items())))
    return adir


def test_relative_paths_start_at_the_recipe_dir(tmp_path, monkeypatch):
    adir = make_model(tmp_path / "recipe")
    monkeypatch.chdir(tmp_path)  # not the recipe dir
    md = read_model_dir(adir)
    assert md.run_dir == tmp_path / "recipe" and md.codebook == tmp_path / "recipe/exp/units_x/codebook.pt"
    assert md.resolve("dump/bpe.model") == str(tmp_path / "recipe/dump/bpe.model")
    assert (md.src_case, md.src_token_type) == ("ts", "word")
    # an older model dir without units.yaml: the units dir beside it, units as words
    (adir / "units.yaml").unlink()
    assert read_model_dir("recipe/exp/asr_x").codebook == tmp_path / "recipe/exp/units_x/codebook.pt"


def test_missing_or_unfinished_model_dir(tmp_path, capsys):
    rc, err = run(capsys, "--model_dir", tmp_path / "exp/asr_nope", tmp_path / "a.wav")
    assert rc == 1 and err == f"error: {tmp_path}/exp/asr_nope: no such model directory (made by units_asr.sh stages 7-8)\n"
    adir = make_model(tmp_path)
    (adir / "valid.acc.ave.pth").unlink()
    rc, err = run(capsys, "--model_dir", adir, tmp_path / "a.wav")
    assert rc == 1 and err.startswith(f"error: {adir}/valid.acc.ave.pth: no such file") and err.count("\n") == 1
    (adir / "valid.acc.ave.pth").write_bytes(b"")
    (tmp_path / "exp/units_x/codebook.pt").unlink()
    with pytest.raises(ModelDirError, match="units_x/codebook.pt: no such codebook"):
        read_model_dir(adir)


@pytest.mark.parametrize("meta, why", [
    ({**META, "upstream": "fbank", "layer": 0}, "of upstream fbank layer 0, but .* units of upstream wavlm_local, layer 2"),
    ({**META, "layer": 1}, "of upstream wavlm_local layer 1, but .* units of layer 2 "),
    ({**META, "upstream_sha256": "0" * 64}, "units of a checkpoint with sha256 7d89bcae5650d264"),
])
def test_a_codebook_of_another_upstream_layer_or_checkpoint_stops(tmp_path, capsys, meta, why):
    import re

    adir = make_model(tmp_path, meta=meta)
    rc, err = run(capsys, "--model_dir", adir, tmp_path / "a.wav")
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: codebook {tmp_path}/exp/units_x/codebook.pt was fit on features")
    assert re.search(why, err) and "(its .done_train)" in err, err


def test_last_layer_is_compared_through_the_codebooks_features(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "feats.json").write_text('{"num_layers": 3, "layer": 2}')
    meta = {**META, "feats_dir": str(feats)}
    md = read_model_dir(make_model(tmp_path, meta=meta, stamp={**STAMP, "layer": "-1"}))
    check_codebook_of_model(md, meta)  # the last of 3 is the codebook's 2
    (feats / "feats.json").write_text('{"num_layers": 4, "layer": 3}')
    with pytest.raises(ModelDirError, match="units of layer -1 "):
        check_codebook_of_model(md, meta)
    check_codebook_of_model(md, {**meta, "feats_dir": str(tmp_path / "gone")})  # not known: passes


def test_several_layers_are_compared_as_a_list(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "feats.json").write_text('{"num_layers": 4, "layer": [1, 3]}')
    meta = {**META, "layer": [1, 3], "feats_dir": str(feats)}
    for i, layer in enumerate(("1,3", "1,-1")):  # -1: the last of 4
        md = read_model_dir(make_model(tmp_path / f"ok{i}", meta=meta, stamp={**STAMP, "layer": layer}))
        check_codebook_of_model(md, meta)
    for i, layer in enumerate(("3,1", "1", "1,2")):
        md = read_model_dir(make_model(tmp_path / f"no{i}", meta=meta, stamp={**STAMP, "layer": layer}))
        with pytest.raises(ModelDirError, match=f"units of layer {layer} "):
            check_codebook_of_model(md, meta)


def test_a_codebook_of_another_size_stops(tmp_path, capsys):
    adir = make_model(tmp_path, tokens=token_list(2, 16))
    rc, err = run(capsys, "--model_dir", adir, tmp_path / "a.wav")
    assert rc == 1 and err == (f"error: {adir}/config.yaml reads 35 source tokens, but codebook "
                               f"{tmp_path}/exp/units_x/codebook.pt (2x8) gives 19: not the units "
                               "the model was trained on\n")


def test_input_options(tmp_path, capsys):
    adir = make_model(tmp_path)
    rc, err = run(capsys, "--model_dir", adir)
    assert rc == 1 and err == "error: give audio files, --wav_scp or --data_dir (one of them)\n"
    rc, err = run(capsys, "--model_dir", adir, "--data_dir", tmp_path, tmp_path / "a.wav")
    assert rc == 1 and "not audio files and --data_dir" in err
    rc, err = run(capsys, "--model_dir", adir, tmp_path / "x/a.wav", tmp_path / "y/a.flac")
    assert rc == 1 and err == f"error: {tmp_path}/y/a.flac and {tmp_path}/x/a.wav: two files named a\n"
    (tmp_path / "wav.scp").write_text("u1 a.wav\nu1 b.wav\n")
    rc, err = run(capsys, "--model_dir", adir, "--wav_scp", tmp_path / "wav.scp")
    assert rc == 1 and err == f"error: {tmp_path}/wav.scp:2: duplicate key 'u1'\n"
