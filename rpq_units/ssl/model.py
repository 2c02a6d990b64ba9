"""The BEST-RQ / BiRQ SSL model for ESPnet's SSL task (``model: bestrq``).

BEST-RQ: Chiu et al., ICML 2022; BiRQ: arXiv 2509.15430. ESPnet's :class:`ESPnetSSLModel` masks
after the pre-encoder with a learned embedding (HuBERT style) and hands its losses only the
encoder output; BEST-RQ needs the unmasked normalised input frames (for the labels) and noise on
masked input frames, and BiRQ a second, unmasked pass through the first k layers. This subclass
keeps ESPnet's ``forward`` (losses, stats, weights, step counter) and replaces ``encode``:

    speech (B, S) -> frontend -> log-mel (B, T_in, F) -> normalize -> x
    x -> span_mask util (noise on masked frames) -> encoder, all layers -> encoder_output
    x -> encoder layers 1..k (only when a loss asks for ``unmasked_hidden``; without a graph
         unless the loss sends a gradient through it, without dropout unless its
         ``label_dropout`` asks for it; with ``label_ema_decay`` d > 0 through a moving-average
         copy of the encoder instead, updated once per training forward after the first step:
         theta' <- d theta' + (1 - d) theta)

and gives the losses ``feats`` (= x, unmasked), ``mask_info`` and ``unmasked_hidden``.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet2.ssl.espnet_model import ESPnetSSLModel

from rpq_units.ssl.encoder import dropout_off, encoder_hidden_states, subsampling_factor


class BestRQModel(ESPnetSSLModel):
    """ESPnet SSL model for the ``bestrq`` / ``birq`` losses.

    Takes ESPnet's model arguments (built by ``SSLTask.build_model``) plus ``input_size``
    (model_conf; only needed when features come from the data loader, no frontend). The losses'
    labellers are drawn here, where the input dimension is known.
    """

    def __init__(self, *, frontend, specaug, normalize, preencoder, encoder, losses,
                 util_attributes, required_inputs, util_modules, token_list=None,
                 input_size: int | None = None, **kwargs: Any) -> None:
        if specaug is not None:
            raise ValueError("model bestrq masks its input itself: set specaug to null")
        if preencoder is not None:
            raise ValueError("model bestrq labels the frontend's frames: set preencoder to null")
        super().__init__(frontend=frontend, specaug=None, normalize=normalize, preencoder=None,
                         encoder=encoder, losses=losses, util_attributes=set(util_attributes),
                         required_inputs=set(required_inputs), util_modules=util_modules,
                         token_list=list(token_list or ["<unused>"]), **kwargs)
        if frontend is not None:
            input_size = frontend.output_size()
        if input_size is None:
            raise ValueError("model bestrq: without a frontend, set model_conf input_size")
        sub = _encoder_subsampling(encoder)
        num_layers = len(encoder.encoders)
        self.enhanced_layer = None
        self.label_ema_decay = 0.0
        for loss in self.losses:
            if not hasattr(loss, "setup"):
                raise ValueError(f"model bestrq: loss {type(loss).__name__} is not a BEST-RQ "
                                 "loss (use bestrq or birq)")
            if loss.stack_frames != sub:
                raise ValueError(f"model bestrq: stack_frames {loss.stack_frames} must equal the "
                                 f"encoder's subsampling {sub} (labels align with its frames)")
            loss.setup(int(input_size), num_layers)
            if "unmasked_hidden" in loss.required_inputs:
                self.enhanced_layer = loss.enhanced_layer
                self.label_ema_decay = getattr(loss, "label_ema_decay", 0.0)
        # BiRQ's labels from a delayed copy (written by hand: ESPnet 202511's SSL task has no EMA
        # teacher); its weights are saved with the model, so a resumed run keeps them
        self.label_encoder = None
        if self.label_ema_decay > 0:
            self.label_encoder = copy.deepcopy(encoder).requires_grad_(False)
        if "span_mask" not in self.util_modules:
            raise ValueError("model bestrq needs the span_mask util")

    def collect_feats(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
                      **kwargs: Any) -> dict[str, torch.Tensor]:
        """For ``--collect_stats``: ESPnet's version requires ``text``, which BEST-RQ has not."""
        feats, feats_lengths = self._extract_feats(speech, speech_lengths)
        return {"feats": feats, "feats_lengths": feats_lengths}

    def encode(self, speech: torch.Tensor, speech_lengths: torch.Tensor,
               text: torch.Tensor | None = None, text_lengths: torch.Tensor | None = None,
               use_final_output: bool = True) -> dict:
        """speech: (B, S), speech_lengths: (B,) -> dict with ``encoder_output`` (list of
        (B, T', D), last = final output), ``encoder_output_lengths`` (B,), ``feats``
        (B, T_in, F) unmasked normalised input, ``feats_lengths``, ``mask_info`` {"mask":
        (B, T_in) bool} and, for BiRQ, ``unmasked_hidden`` (B, T', D) layer k (with a graph only
        when the loss's ``label_needs_grad``)."""
        feats, lens = self._extract_feats(speech, speech_lengths)
        if self.normalize is not None:
            feats, lens = self.normalize(feats, lens)
        pad_masks = make_pad_mask(lens, maxlen=feats.shape[1]).to(feats.device)
        masked, mask_info = self.util_modules["span_mask"](feats, pad_masks)
        out, out_lens, _ = self.encoder(masked, lens, masks=pad_masks, return_all_hs=True)
        if isinstance(out, tuple):  # ESPnet: (final, [layer outputs]) with return_all_hs
            hidden = out[1][:-1] + [out[0]] if use_final_output else out[1]
        else:
            hidden = [out]
        data = {"encoder_output": hidden, "encoder_output_lengths": out_lens,
                "feats": feats, "feats_lengths": lens, "mask_info": mask_info}
        if self.enhanced_layer is not None:
            # without a gradient through the labels (BiRQ's default) the unmasked pass keeps no graph
            keep = any(getattr(loss, "label_needs_grad", False) for loss in self.losses)
            # and, by default, no dropout: the labels are those of the current parameters
            quiet = not any(getattr(loss, "label_dropout", True) for loss in self.losses)
            # ESPnet's SSL model counts a step per training forward (accum_grad 1 assumed, as
            # its own EMA); the first forward has no update behind it yet
            if self.label_encoder is not None and self.training and int(self.global_step) > 0:
                self.update_label_encoder()
            teacher = self.labeller
            with torch.set_grad_enabled(torch.is_grad_enabled() and keep), \
                    (dropout_off(teacher) if quiet else contextlib.nullcontext()):
                states, _ = encoder_hidden_states(teacher, feats, lens, self.enhanced_layer)
            data["unmasked_hidden"] = states[self.enhanced_layer]
        return data

    @property
    def labeller(self) -> torch.nn.Module:
        """The encoder whose unmasked pass makes BiRQ's enhanced labels: the moving-average copy
        under ``label_ema_decay``, else the encoder in training."""
        return self.encoder if self.label_encoder is None else self.label_encoder

    @torch.no_grad()
    def update_label_encoder(self) -> None:
        """theta' <- d theta' + (1 - d) theta for the label encoder's weights; its buffers
        (BatchNorm statistics) are the encoder's."""
        d = self.label_ema_decay
        mine = list(self.label_encoder.parameters())
        torch._foreach_lerp_(mine, [p.detach() for p in self.encoder.parameters()], 1.0 - d)
        for b_t, b_s in zip(self.label_encoder.buffers(), self.encoder.buffers(), strict=True):
            b_t.copy_(b_s)


def _encoder_subsampling(encoder: torch.nn.Module) -> int:
    """Time subsampling of an ESPnet encoder from its input layer class."""
    from espnet.nets.pytorch_backend.transformer.subsampling import (
        Conv2dSubsampling,
        Conv2dSubsampling1,
        Conv2dSubsampling2,
        Conv2dSubsampling6,
        Conv2dSubsampling8,
    )

    table = {Conv2dSubsampling: "conv2d", Conv2dSubsampling1: "conv2d1",
             Conv2dSubsampling2: "conv2d2", Conv2dSubsampling6: "conv2d6",
             Conv2dSubsampling8: "conv2d8"}
    name = table.get(type(encoder.embed), "linear")
    return subsampling_factor({"input_layer": name})
