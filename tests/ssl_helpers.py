"""Tiny SSL encoder files in the real export format, for tests (no pre-training needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from rpq_units.ssl.encoder import SSLEncoder, build_payload, save_payload

TINY_FRONTEND = {"name": "default",
                 "conf": {"fs": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
                          "n_mels": 80}}
TINY_NORMALIZE = {"name": "utterance_mvn", "conf": {"norm_means": True, "norm_vars": True}}


def tiny_encoder_conf(num_layers: int = 2, dim: int = 32) -> dict:
    """ESPnet Conformer conf (80-dim input, conv2d 4x subsampling) of a tiny encoder."""
    return {"input_size": 80, "output_size": dim, "attention_heads": 2, "linear_units": 2 * dim,
            "num_blocks": num_layers, "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
            "attention_dropout_rate": 0.0, "input_layer": "conv2d", "normalize_before": True,
            "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
            "rel_pos_type": "latest", "macaron_style": True, "use_cnn_module": True,
            "cnn_module_kernel": 5}


def build_tiny_encoder_file(path: str | Path, seed: int = 0, *, num_layers: int = 2,
                            dim: int = 32, method: str = "bestrq") -> Path:
    """Write a random-weight (seeded) Conformer encoder in the ``rpq_units.ssl_encoder`` format:
    80-dim log-mel every 10 ms, 4x subsampling (hop 640 samples), ``num_layers`` layers of ``dim``.
    Same seed, same file content."""
    torch.manual_seed(seed)
    encoder = {"name": "conformer", "conf": tiny_encoder_conf(num_layers, dim)}
    skeleton = build_payload(method=method, frontend=TINY_FRONTEND, normalize=TINY_NORMALIZE,
                             encoder=encoder, state_dict={},
                             source={"config": None, "checkpoint": None, "sha256": None})
    model = SSLEncoder(skeleton)
    skeleton["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_payload(skeleton, path)
    return Path(path)
