"""Export a BEST-RQ / BiRQ pre-training checkpoint as an SSL encoder file.

    python -m rpq_units.ssl.export --config exp/ssl_x/config.yaml \\
        --model exp/ssl_x/valid.loss.best.pth --out exp/ssl_x/encoder.pt

Keeps what feature extraction needs (frontend, normalisation, encoder; format in
:mod:`rpq_units.ssl.encoder`), drops the labeller, heads and masking. ``--model`` may be an
ESPnet model file (``*epoch.pth``, ``valid.*.best.pth``) or the trainer's ``checkpoint.pth``.
BEST-RQ: Chiu et al., ICML 2022; BiRQ: arXiv 2509.15430.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import torch
import yaml

from rpq_units.files import file_sha256
from rpq_units.ssl.encoder import (
    SSLCheckpointError,
    SSLEncoder,
    build_payload,
    read_payload,
    save_payload,
)

logger = logging.getLogger(__name__)


def load_pretraining_model(config: str, model_file: str) -> tuple[torch.nn.Module, dict]:
    """Rebuild the ESPnet SSL model of ``config`` (``model: bestrq``) with the weights of
    ``model_file``; raises :class:`SSLCheckpointError` naming the file that does not fit."""
    from espnet2.tasks.ssl import SSLTask

    from rpq_units.ssl.registry import register

    register()
    try:
        with open(config, encoding="utf-8") as f:
            conf = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise SSLCheckpointError(f"{config}: not a readable config ({type(e).__name__})") from e
    if not isinstance(conf, dict) or conf.get("model") != "bestrq":
        got = conf.get("model") if isinstance(conf, dict) else type(conf).__name__
        raise SSLCheckpointError(f"{config}: not a BEST-RQ/BiRQ pre-training config "
                                 f"(model {got!r}, expected 'bestrq')")
    model = SSLTask.build_model(argparse.Namespace(**conf))
    if not os.path.isfile(model_file):
        raise SSLCheckpointError(f"{model_file}: no such checkpoint")
    try:
        state = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unreadable file: one line)
        raise SSLCheckpointError(f"{model_file}: not a readable PyTorch checkpoint "
                                 f"({type(e).__name__})") from e
    if isinstance(state, dict) and state.get("kind") is not None:
        raise SSLCheckpointError(f"{model_file}: a file of kind {state['kind']!r}, not an ESPnet "
                                 "pre-training checkpoint")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # trainer checkpoint
        state = state["model"]
    if not isinstance(state, dict):
        raise SSLCheckpointError(f"{model_file}: not a model state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise SSLCheckpointError(f"{model_file}: weights do not match {config} "
                                 f"({' '.join(first[:2])[:200]})") from e
    return model.eval(), conf


def export_encoder(config: str, model_file: str, out: str) -> dict[str, Any]:
    """Write the encoder of ``model_file`` (trained with ``config``) to ``out``; returns the
    payload header (without weights). The written file is read back and checked."""
    model, conf = load_pretraining_model(config, model_file)
    methods = {entry.get("name") for entry in conf.get("loss") or []}
    encoder_conf = dict(conf.get("encoder_conf") or {})
    if model.frontend is None:
        raise SSLCheckpointError(f"{config}: has no frontend; an SSL encoder file needs one "
                                 "(waveform input)")
    encoder_conf["input_size"] = model.frontend.output_size()
    enc_state = {k: v for k, v in model.state_dict().items()
                 if k.split(".")[0] in ("frontend", "normalize", "encoder")}
    payload = build_payload(
        method="birq" if "birq" in methods else "bestrq",
        frontend={"name": conf.get("frontend"), "conf": conf.get("frontend_conf") or {}},
        normalize={"name": conf.get("normalize"), "conf": conf.get("normalize_conf") or {}},
        encoder={"name": conf.get("encoder"), "conf": encoder_conf},
        state_dict=enc_state,
        source={"config": os.path.abspath(config), "checkpoint": os.path.abspath(model_file),
                "sha256": file_sha256(model_file)},
    )
    SSLEncoder(payload, path=out).load_state_dict(payload["state_dict"])  # strict check
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_payload(payload, out)
    read_payload(out)
    logger.info("wrote %s (%s, %d layers, dim %d, hop %d samples)", out, payload["method"],
                payload["num_layers"], payload["output_dim"], payload["hop_samples"])
    return {k: v for k, v in payload.items() if k != "state_dict"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rpq_units.ssl.export",
        description="Export a BEST-RQ/BiRQ pre-training checkpoint as an SSL encoder file.")
    parser.add_argument("--config", required=True, help="<exp>/config.yaml of the pre-training")
    parser.add_argument("--model", required=True, help="<exp>/<ckpt>.pth (or checkpoint.pth)")
    parser.add_argument("--out", required=True, help="encoder file to write")
    parser.add_argument("--log_level", default=os.environ.get("LOGLEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s (%(module)s) %(levelname)s: %(message)s")
    try:
        export_encoder(args.config, args.model, args.out)
    except SSLCheckpointError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
