"""Tiny assets for the tests: random-weight s3prl checkpoints, synthetic speech, data dirs.

The checkpoints are built with s3prl's own model classes and saved in the exact formats its
``wavlm_local`` / ``hubert_local`` entries load, so the loading path is the one a real
``wavlm_large`` / ``hubert_large_ll60k`` checkpoint takes (only smaller and untrained).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

# Same CNN layout as WavLM/HuBERT (stride 320, receptive field 400 samples), narrow layers.
_TINY_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"


def make_tiny_wavlm_checkpoint(
    path: str | os.PathLike, *, layers: int = 3, dim: int = 32, seed: int = 0
) -> Path:
    """Write a random-weight WavLM in s3prl's ``wavlm_local`` format,
    ``{"cfg": WavLMConfig attributes, "model": state_dict}``, configured like WavLM Large
    (layer-norm CNN, pre-norm transformer, gated relative positions, normalized input).
    It has ``layers + 1`` hidden states of ``dim`` dims at 50 frames/s."""
    from rpq_units.pipeline.s3prl_compat import install

    install()  # before any s3prl import
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = WavLMConfig()
    cfg.update(
        {
            "extractor_mode": "layer_norm",
            "encoder_layers": layers,
            "encoder_embed_dim": dim,
            "encoder_ffn_embed_dim": 2 * dim,
            "encoder_attention_heads": 2,
            "conv_feature_layers": _TINY_CONV,
            "layer_norm_first": True,
            "normalize": True,
            "conv_pos": 16,
            "conv_pos_groups": 4,
            "relative_position_embedding": True,
            "num_buckets": 32,
            "max_distance": 128,
            "gru_rel_pos": True,
            "dropout": 0.0,
            "attention_dropout": 0.0,
        }
    )
    torch.manual_seed(seed)
    model = WavLM(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)
    return path


def make_tiny_hubert_checkpoint(
    path: str | os.PathLike, *, layers: int = 2, dim: int = 32, seed: int = 0
) -> Path:
    """Write a random-weight HuBERT in s3prl's ``hubert_local`` format, ``{"task_cfg",
    "model_cfg", "model_weight", "dictionaries_symbols"}`` (the output of s3prl's
    ``load_and_convert_fairseq_ckpt``)."""
    from rpq_units.pipeline.s3prl_compat import install

    install()  # before any s3prl import
    from s3prl.upstream.hubert.hubert_model import (
        HubertConfig,
        HubertModel,
        HubertPretrainingConfig,
    )

    task_cfg = HubertPretrainingConfig(label_rate=50.0, normalize=False)
    model_cfg = HubertConfig(
        label_rate=50.0,
        encoder_layers=layers,
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=2 * dim,
        encoder_attention_heads=2,
        conv_feature_layers=_TINY_CONV,
        conv_pos=16,
        conv_pos_groups=4,
        final_dim=dim,
    )
    symbols = [[str(i) for i in range(10)]]
    torch.manual_seed(seed)
    model = HubertModel(model_cfg, task_cfg, symbols)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "task_cfg": _plain(dataclasses.asdict(task_cfg)),
            "model_cfg": _plain(dataclasses.asdict(model_cfg)),
            "model_weight": model.state_dict(),
            "dictionaries_symbols": symbols,
        },
        path,
    )
    return path


def _plain(d: dict) -> dict:
    """Enum-typed config values as plain strings (loadable with ``weights_only=True``)."""
    return {k: (v.value if hasattr(v, "value") else v) for k, v in d.items()}


def sine_speech(
    seconds: float, *, sample_rate: int = 16000, seed: int = 0, channels: int = 1
) -> np.ndarray:
    """A speech-like test signal: a few harmonics of a gliding pitch under a syllable-rate
    envelope, plus a little noise. ``(L,)`` float32, or ``(L, channels)`` when ``channels > 1``."""
    rng = np.random.default_rng(seed)
    n = max(0, round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = rng.uniform(90, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, np.pi)))
    x = 0.3 * env * x + 0.01 * rng.standard_normal(n)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (0.8 + 0.2 * c) for c in range(channels)], axis=1)
    return x


def write_sine_speech(
    path: str | os.PathLike,
    seconds: float,
    *,
    sample_rate: int = 16000,
    seed: int = 0,
    channels: int = 1,
) -> Path:
    """Write :func:`sine_speech` to ``path`` (format from the suffix: .wav, .flac, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(
        path,
        sine_speech(seconds, sample_rate=sample_rate, seed=seed, channels=channels),
        sample_rate,
    )
    return path


def make_data_dir(
    data_dir: str | os.PathLike,
    durations: Sequence[float],
    *,
    wav_dir: str | os.PathLike | None = None,
    prefix: str = "utt",
    sample_rate: int = 16000,
    seed: int = 0,
) -> list[str]:
    """A Kaldi data dir of synthetic utterances (``wav.scp``, ``text``, ``utt2spk``,
    ``spk2utt``); returns the utterance ids (sorted)."""
    d = Path(data_dir)
    wav_dir = Path(wav_dir) if wav_dir is not None else d / "wav"
    d.mkdir(parents=True, exist_ok=True)
    ids = []
    wav_lines, text_lines, spk_lines = [], [], []
    for i, sec in enumerate(durations):
        uttid = f"spk{i % 2}-{prefix}{i:04d}"
        path = write_sine_speech(
            wav_dir / f"{uttid}.wav", sec, sample_rate=sample_rate, seed=seed + i
        )
        ids.append(uttid)
        wav_lines.append(f"{uttid} {path.resolve()}")
        text_lines.append(f"{uttid} HELLO {i}")
        spk_lines.append(f"{uttid} spk{i % 2}")
    order = sorted(range(len(ids)), key=lambda j: ids[j])
    for name, lines in (("wav.scp", wav_lines), ("text", text_lines), ("utt2spk", spk_lines)):
        (d / name).write_text("".join(lines[j] + "\n" for j in order))
    spk2utt: dict[str, list[str]] = {}
    for j in order:
        spk2utt.setdefault(f"spk{j % 2}", []).append(ids[j])
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items())))
    return sorted(ids)
