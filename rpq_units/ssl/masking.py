"""BEST-RQ span masking of input frames with noise (Chiu et al., ICML 2022, section 3.1).

Every valid input frame ``t`` starts a span with probability ``mask_prob``; a span covers frames
``t .. t + mask_length - 1``, cut at the utterance's end (padding is never masked). Masked frames
are replaced by noise drawn from N(0, noise_std^2). Expected masked fraction away from the edges:

    1 - (1 - mask_prob) ** mask_length        (0.01, 40 -> 0.33; 0.15, 4 -> 0.48)

Defaults follow NeMo and wenet (0.01, 40 frames = 400 ms, noise std 0.1); SpeechBrain uses 0.15
with spans of 4 frames (DESIGN.md section 9). An utterance that drew fewer than ``min_spans``
span starts gets that many extra random ones (short utterances would otherwise give no masked frame).
"""

from __future__ import annotations

import torch


def span_mask(
    lengths: torch.Tensor,
    max_len: int,
    mask_prob: float,
    mask_length: int,
    min_spans: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Span mask for a padded batch.

    Args:
        lengths: (B,) long, valid frames per utterance.
        max_len: T, padded length.
        mask_prob: probability that a valid frame starts a span.
        mask_length: span length in frames.
        min_spans: an utterance that drew fewer starts gets ``min_spans`` extra random ones.
        generator: optional torch generator (on ``lengths.device``); else the global RNG.
    Returns:
        (B, T) bool, True = masked; always False at t >= lengths[b].
    """
    device = lengths.device
    b = lengths.shape[0]
    t = torch.arange(max_len, device=device)
    valid = t.unsqueeze(0) < lengths.unsqueeze(1)
    starts = (torch.rand(b, max_len, device=device, generator=generator) < mask_prob) & valid
    if min_spans > 0:
        # random scores on valid frames; the top-min_spans frames become starts where needed
        score = torch.rand(b, max_len, device=device, generator=generator).masked_fill(~valid, -1)
        k = min(min_spans, max_len)
        top = score.topk(k, dim=1).indices
        extra = torch.zeros_like(starts).scatter_(1, top, True) & valid
        need = starts.sum(1, keepdim=True) < min_spans
        starts = starts | (extra & need)
    # frame t is masked if a span started in (t - mask_length, t]
    c = torch.cumsum(starts.to(torch.int32), dim=1)
    shifted = torch.nn.functional.pad(c, (mask_length, 0))[:, :max_len]
    return ((c - shifted) > 0) & valid


class SpanMasking(torch.nn.Module):
    """ESPnet SSL util (``util: [{name: span_mask, conf: {...}}]``): masks input frames with noise.

    Args (keyword): ``mask_prob`` (0.01), ``mask_length`` (40 frames), ``noise_std`` (0.1),
    ``min_spans`` (1).
    """

    def __init__(self, *, mask_prob: float = 0.01, mask_length: int = 40, noise_std: float = 0.1,
                 min_spans: int = 1) -> None:
        super().__init__()
        if not 0.0 <= mask_prob <= 1.0 or mask_length < 1 or noise_std < 0 or min_spans < 0:
            raise ValueError(f"span_mask: need 0 <= mask_prob <= 1, mask_length >= 1, "
                             f"noise_std >= 0, min_spans >= 0; got {mask_prob}, {mask_length}, "
                             f"{noise_std}, {min_spans}")
        self.mask_prob = float(mask_prob)
        self.mask_length = int(mask_length)
        self.noise_std = float(noise_std)
        self.min_spans = int(min_spans)

    def expected_fraction(self) -> float:
        """Masked fraction far from utterance edges, without ``min_spans``."""
        return 1.0 - (1.0 - self.mask_prob) ** self.mask_length

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """x: (B, T, F) float, pad_mask: (B, T) bool (True = padding) ->
        (x with masked frames replaced by noise (B, T, F), {"mask": (B, T) bool})."""
        lengths = (~pad_mask).sum(1)
        mask = span_mask(lengths, x.shape[1], self.mask_prob, self.mask_length, self.min_spans)
        noise = torch.randn_like(x) * self.noise_std
        return torch.where(mask.unsqueeze(-1), noise, x), {"mask": mask}
