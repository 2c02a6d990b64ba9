"""A pre-trained BEST-RQ / BiRQ encoder as a feature extractor: export file format and loader.

BEST-RQ: Chiu et al., "Self-supervised Learning with Random-projection Quantizer for Speech
Recognition", ICML 2022. BiRQ: arXiv 2509.15430. Pre-training runs on ESPnet's SSL task
(:mod:`rpq_units.ssl.train`); :mod:`rpq_units.ssl.export` turns its checkpoint into one file that
holds only what feature extraction needs (frontend, normalisation, encoder), no label or loss
parts, as plain tensors and dicts (no pickled objects)::

    torch.save({
        "kind": "rpq_units.ssl_encoder", "format_version": 1,
        "method": "bestrq" | "birq",
        "frontend": {"name": "default", "conf": {...}},      # ESPnet SSL task frontend choice
        "normalize": {"name": "utterance_mvn" | None, "conf": {...}},
        "encoder": {"name": "conformer" | "transformer", "conf": {...}},  # incl. input_size
        "state_dict": {...},            # of SSLEncoder: frontend.*, normalize.*, encoder.*
        "num_layers": N, "output_dim": D, "hop_samples": 640, "sample_rate": 16000,
        "source": {"config": ..., "checkpoint": ..., "sha256": ...},
    }, path)

``load_encoder(path, device)`` rebuilds an :class:`SSLEncoder` (eval mode) whose
``forward(wavs (B, S) float, wav_lens (B,) long, max_layer=None)`` returns
``(hidden, out_lens)``: ``hidden[0]`` is the encoder input after subsampling (B, T, D),
``hidden[i]`` the output of layer ``i`` (1..N), the last one after the encoder's final
LayerNorm (as ESPnet's SSL model feeds its losses); ``out_lens`` (B,) long. ``max_layer`` stops
after that layer (``hidden`` then has ``max_layer + 1`` entries). Any unreadable file, another
kind, an unsupported format version, or a layer beyond the depth raises
:class:`SSLCheckpointError` (a ``ValueError``) with one line naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from rpq_units.errors import UserError
from rpq_units.files import atomic_path

logger = logging.getLogger(__name__)

KIND = "rpq_units.ssl_encoder"
FORMAT_VERSION = 1

# ESPnet encoder input layers and their time subsampling factor
SUBSAMPLING = {"conv2d": 4, "conv2d1": 1, "conv2d2": 2, "conv2d6": 6, "conv2d8": 8,
               "linear": 1, "embed": 1, None: 1}


class SSLCheckpointError(UserError):
    """An SSL encoder file (or request against it) that cannot be used; one line, names the file."""


def subsampling_factor(encoder_conf: dict[str, Any]) -> int:
    """Time subsampling of an ESPnet Conformer/Transformer ``encoder_conf`` (default conv2d: 4)."""
    layer = encoder_conf.get("input_layer", "conv2d")
    if layer not in SUBSAMPLING:
        raise ValueError(f"encoder input_layer {layer!r} is not supported "
                         f"(one of {sorted(k for k in SUBSAMPLING if k)})")
    return SUBSAMPLING[layer]


def encoder_hidden_states(
    encoder: torch.nn.Module,
    feats: torch.Tensor,
    feats_lens: torch.Tensor,
    max_layer: int | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run an ESPnet Conformer/Transformer encoder layer by layer, stopping after ``max_layer``.

    ESPnet's ``forward(return_all_hs=True)`` always runs every layer and drops the subsampled
    input; BiRQ's unmasked pass needs only the first k layers and export needs the input too, so
    this walks ``encoder.embed`` and ``encoder.encoders`` itself (written by hand: ESPnet has no
    such call).

    Args:
        encoder: ``espnet2.asr.encoder.{conformer,transformer}_encoder`` instance.
        feats: (B, T_in, F) float, encoder input frames.
        feats_lens: (B,) long.
        max_layer: last layer to run (1..N); None runs all N.
    Returns:
        hidden: list of ``max_layer + 1`` tensors (B, T, D): subsampled input, then each layer;
            the N-th (last) layer's output goes through ``after_norm`` when the encoder has one.
        out_lens: (B,) long.
    """
    from espnet.nets.pytorch_backend.nets_utils import make_pad_mask

    num_layers = len(encoder.encoders)
    upto = num_layers if max_layer is None else int(max_layer)
    if not 0 <= upto <= num_layers:
        raise ValueError(f"layer {upto} is beyond the encoder's {num_layers} layers")
    masks = (~make_pad_mask(feats_lens, maxlen=feats.shape[1])[:, None, :]).to(feats.device)
    if getattr(encoder, "embed", None) is None:
        x = feats
    elif isinstance(encoder.embed, torch.nn.Sequential) or not _takes_mask(encoder.embed):
        x = encoder.embed(feats)
    else:
        x, masks = encoder.embed(feats, masks)
    hidden = [x[0] if isinstance(x, tuple) else x]
    for layer in list(encoder.encoders)[:upto]:
        x, masks = layer(x, masks)
        hidden.append(x[0] if isinstance(x, tuple) else x)
    if upto == num_layers and getattr(encoder, "normalize_before", False):
        hidden[-1] = encoder.after_norm(hidden[-1])
    return hidden, masks.squeeze(1).sum(1)


@contextlib.contextmanager
def dropout_off(module: torch.nn.Module):
    """Within the block, every dropout layer of ``module`` acts as in eval mode; everything else
    (BatchNorm's batch statistics in training) is left as it is, and the modes come back after.
    BiRQ's label pass uses it: its labels are then a function of the parameters and the input."""
    drops = [m for m in module.modules()
             if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training]
    for m in drops:
        m.training = False
    try:
        yield
    finally:
        for m in drops:
            m.training = True


def _takes_mask(embed: torch.nn.Module) -> bool:
    from espnet.nets.pytorch_backend.transformer.subsampling import (
        Conv2dSubsampling,
        Conv2dSubsampling1,
        Conv2dSubsampling2,
        Conv2dSubsampling6,
        Conv2dSubsampling8,
    )

    return isinstance(embed, (Conv2dSubsampling, Conv2dSubsampling1, Conv2dSubsampling2,
                              Conv2dSubsampling6, Conv2dSubsampling8))


# the ESPnet SSL task's choices that an encoder file may name, imported one by one: importing
# espnet2.tasks.ssl itself costs tens of seconds (text front ends) that feature extraction
# does not need
ESPNET_CLASSES = {
    "frontend": {"default": ("espnet2.asr.frontend.default", "DefaultFrontend")},
    "normalize": {"utterance_mvn": ("espnet2.layers.utterance_mvn", "UtteranceMVN"),
                  "global_mvn": ("espnet2.layers.global_mvn", "GlobalMVN")},
    "encoder": {"conformer": ("espnet2.asr.encoder.conformer_encoder", "ConformerEncoder"),
                "transformer": ("espnet2.asr.encoder.transformer_encoder", "TransformerEncoder")},
}


def _espnet_class(part: str, name: str, path: str) -> type:
    import importlib

    if name not in ESPNET_CLASSES[part]:
        raise SSLCheckpointError(f"{path}: {part} {name!r} is not supported "
                                 f"(one of {sorted(ESPNET_CLASSES[part])})")
    module, cls = ESPNET_CLASSES[part][name]
    return getattr(importlib.import_module(module), cls)


class SSLEncoder(torch.nn.Module):
    """Waveform -> hidden states of a pre-trained BEST-RQ/BiRQ encoder (see module docstring).

    Attributes: ``num_layers``, ``output_dim``, ``hop_samples``, ``sample_rate``, ``method``,
    ``path`` (the file it came from, for messages).
    """

    def __init__(self, payload: dict[str, Any], path: str = "<memory>") -> None:
        super().__init__()
        self.path = str(path)
        fe = payload["frontend"]
        self.frontend = _espnet_class("frontend", fe["name"], self.path)(**fe["conf"])
        norm = payload.get("normalize") or {}
        self.normalize = (_espnet_class("normalize", norm["name"], self.path)(
            **norm.get("conf", {})) if norm.get("name") else None)
        enc = payload["encoder"]
        self.encoder = _espnet_class("encoder", enc["name"], self.path)(**enc["conf"])
        self.method = str(payload.get("method", ""))
        self.num_layers = int(payload["num_layers"])
        self.output_dim = int(payload["output_dim"])
        self.hop_samples = int(payload["hop_samples"])
        self.sample_rate = int(payload["sample_rate"])

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` if 0 <= layer <= num_layers, else raise :class:`SSLCheckpointError`."""
        if not 0 <= int(layer) <= self.num_layers:
            raise SSLCheckpointError(
                f"{self.path}: layer {layer} is beyond the encoder's depth "
                f"(hidden states 0..{self.num_layers})")
        return int(layer)

    def features(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
        """wavs: (B, S) float, wav_lens: (B,) long -> encoder input (B, T_in, F), (B,) long."""
        wavs = wavs[:, : int(wav_lens.max())]
        feats, lens = self.frontend(wavs, wav_lens)
        if self.normalize is not None:
            feats, lens = self.normalize(feats, lens)
        return feats, lens

    def forward(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor, max_layer: int | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """wavs: (B, S) float, wav_lens: (B,) long -> (hidden: list of (B, T, D), out_lens (B,))."""
        if max_layer is not None:
            self.check_layer(max_layer)
        feats, lens = self.features(wavs, wav_lens)
        return encoder_hidden_states(self.encoder, feats, lens, max_layer)


def build_payload(
    *,
    method: str,
    frontend: dict[str, Any],
    normalize: dict[str, Any] | None,
    encoder: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble an export payload; ``state_dict`` is an :class:`SSLEncoder` state dict.

    Args: ``frontend``/``normalize``/``encoder`` are ``{"name": <SSL task choice>, "conf": {...}}``
    (the encoder conf includes ``input_size``)."""
    enc_conf = dict(encoder["conf"])
    fe_conf = dict(frontend["conf"])
    hop = int(fe_conf.get("hop_length", 128)) * subsampling_factor(enc_conf)
    fs = fe_conf.get("fs", 16000)
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    payload = {
        "kind": KIND, "format_version": FORMAT_VERSION, "method": method,
        "frontend": {"name": frontend["name"], "conf": fe_conf},
        "normalize": {"name": (normalize or {}).get("name"),
                      "conf": dict((normalize or {}).get("conf") or {})},
        "encoder": {"name": encoder["name"], "conf": enc_conf},
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "num_layers": int(enc_conf.get("num_blocks", 6)),
        "output_dim": int(enc_conf.get("output_size", 256)),
        "hop_samples": hop, "sample_rate": int(fs),
        "source": dict(source or {}),
    }
    return payload


def save_payload(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Write atomically (temp name, then rename)."""
    with atomic_path(path, f".tmp{os.getpid()}") as tmp:  # one temporary name per writer
        torch.save(payload, tmp)


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate an export file's header; raises :class:`SSLCheckpointError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SSLCheckpointError(f"{path}: no such SSL encoder file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unreadable file: one line, not a traceback)
        raise SSLCheckpointError(f"{path}: not a readable SSL encoder file "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from e
    if not isinstance(payload, dict) or "kind" not in payload:
        what = "an ESPnet/PyTorch state dict" if isinstance(payload, dict) else type(
            payload).__name__
        raise SSLCheckpointError(f"{path}: not an SSL encoder file (found {what} without a "
                                 f"'kind' field; export a checkpoint with "
                                 f"python -m rpq_units.ssl.export)")
    if payload["kind"] != KIND:
        raise SSLCheckpointError(f"{path}: file of kind {payload['kind']!r}, expected {KIND!r}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise SSLCheckpointError(f"{path}: format_version {payload.get('format_version')!r} is "
                                 f"not supported (this version reads {FORMAT_VERSION})")
    return payload


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> SSLEncoder:
    """Load an exported encoder file as an :class:`SSLEncoder` in eval mode on ``device``."""
    payload = read_payload(path)
    model = SSLEncoder(payload, path=os.fspath(path))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise SSLCheckpointError(f"{path}: weights do not match the stored configuration "
                                 f"({str(e).splitlines()[0][:160]})") from e
    return model.to(device).eval()
