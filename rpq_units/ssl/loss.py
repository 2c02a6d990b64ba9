"""BEST-RQ and BiRQ objectives as ESPnet SSL losses (``loss: [{name: bestrq | birq, conf}]``).

BEST-RQ (Chiu et al., ICML 2022): a linear head per codebook predicts the anchor labels
(:mod:`rpq_units.ssl.labels`) from the last encoder layer of the masked pass; cross-entropy on
masked frames only, averaged over codebooks:

    G = mean_{(b,u) masked} mean_m CE(W_m h_{b,u}, label_{b,u,m})

A label frame u (S input frames) counts as masked when any of its S input frames is masked.

BiRQ (arXiv 2509.15430, details from the authors' project page, no code released): the same
encoder also runs the unmasked input through its first k layers; those states, normalised without
affine parameters (N), go through a frozen random projection R (D -> p_e) and are matched
against a frozen codebook C (K_e unit vectors) with Gumbel-softmax (temperature tau):

    e_{b,u} = GumbelSoftmax(s * cos(R N(h^k_{b,u}), C), tau)      "enhanced" label, with gradient
    F = mean_{(b,u) masked} -sum_j e_{b,u,j} log softmax(V h_{b,u})_j
    loss = w1 F + w2 G                                            (w1 0.1, w2 2.4)

The loss is the first-order penalty form of the paper's bilevel problem
min F s.t. G - min G <= delta: min G does not depend on the parameters, so its gradient is that
of w1 F + w2 G. Gradients of F reach the first k layers through the Gumbel-softmax relaxation
(and through the head V everywhere); R and C are buffers and never change.

Stats (ESPnet averages them per epoch into ``train.log`` and plots them under ``images/``):
``loss_anchor``, ``acc_anchor`` (argmax of the head = label, masked frames, mean over
codebooks), ``ppl_anchor`` (exp of the entropy of the batch's label histogram over valid
frames, mean over codebooks), ``masked_fraction`` (masked / valid label frames); for BiRQ also
``loss_enhanced``, ``acc_enhanced`` and ``ppl_enhanced`` (argmax enhanced labels).

Choices the paper leaves open, made here and exposed as options (unverified against the
authors' code): the normalisation N (``enhanced_norm``): ``utterance`` (default: mean 0 / std 1
per dimension over each utterance's valid frames, as BEST-RQ normalises its input) or ``frame``
(LayerNorm over the dimensions of each frame). With gradients through the labels the model can
lower F by making its own labels trivial; under ``frame`` it can map every frame of layer k to
one direction and so to one code, which it did in the 2-core demo (enhanced-label perplexity
13.1 -> 1.0 after one epoch, egs/mini_librispeech/RESULTS.md). Under ``utterance`` a layer k
that is constant over time normalises to zero, all logits are equal and the labels are
uniformly random (the cosine is damped for states under 1 % of a normalised state's length,
so rounding noise is not scaled up into a code), the worst case for F: collapse is no longer a
minimum. The logits ``s * cos`` with ``logit_scale`` s (default 10), hard (straight-through,
default) or soft Gumbel samples (``gumbel_hard``), a separate enhanced head V (default) or the
anchor head shared (``shared_head``, needs K_e = K and M = 1), K_e and p_e equal to the anchor
codebook's unless set. In eval mode the enhanced label is the noiseless argmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from espnet2.ssl.loss.abs_loss import AbsSSLLoss

from rpq_units.ssl.labels import AnchorLabeller, normalise_per_utterance


def label_perplexity(labels: torch.Tensor, valid: torch.Tensor, codebook_size: int) -> float:
    """exp(entropy) of the label histogram over ``valid`` frames, averaged over codebooks.

    labels: (B, U, M) long; valid: (B, U) bool."""
    ppl = []
    for m in range(labels.shape[-1]):
        x = labels[..., m][valid]
        if x.numel() == 0:
            continue
        p = torch.bincount(x, minlength=codebook_size).float() / x.numel()
        p = p[p > 0]
        ppl.append(math.exp(float(-(p * p.log()).sum())))
    return sum(ppl) / len(ppl) if ppl else 0.0


def label_frame_mask(mask: torch.Tensor, stack: int, num_frames: int) -> torch.Tensor:
    """mask: (B, T_in) bool at the input rate -> (B, num_frames) bool at the label rate
    (a label frame is masked if any of its ``stack`` input frames is)."""
    b, t = mask.shape
    u = (t + stack - 1) // stack
    grouped = F.pad(mask, (0, u * stack - t)).reshape(b, u, stack).any(-1)
    if grouped.shape[1] < num_frames:
        grouped = F.pad(grouped, (0, num_frames - grouped.shape[1]))
    return grouped[:, :num_frames]


class BestRQLoss(AbsSSLLoss):
    """BEST-RQ masked prediction of random-projection labels (see module docstring).

    Args: ``encoder_output_size`` D (given by ESPnet), keyword ``num_codebooks`` M (1),
    ``codebook_size`` K (8192), ``proj_dim`` p (16), ``stack_frames`` S (4, must equal the
    encoder's subsampling), ``label_seed`` (0). The labeller is built by :meth:`setup` (called by
    :class:`rpq_units.ssl.model.BestRQModel`, which knows the input dimension).
    """

    def __init__(self, encoder_output_size: int, *, num_codebooks: int = 1,
                 codebook_size: int = 8192, proj_dim: int = 16, stack_frames: int = 4,
                 label_seed: int = 0) -> None:
        super().__init__()
        self.util_attributes = ["span_mask"]
        self.required_inputs = ["encoder_output", "encoder_output_lengths", "feats",
                                "feats_lengths", "mask_info"]
        self.num_codebooks = int(num_codebooks)
        self.codebook_size = int(codebook_size)
        self.proj_dim = int(proj_dim)
        self.stack_frames = int(stack_frames)
        self.label_seed = int(label_seed)
        self.head = torch.nn.Linear(encoder_output_size, self.num_codebooks * self.codebook_size)
        self.labeller: AnchorLabeller | None = None

    def setup(self, input_dim: int, num_layers: int) -> None:
        """Draw the frozen labeller for ``input_dim``-dim input frames (an N-layer encoder)."""
        self.labeller = AnchorLabeller(
            input_dim=input_dim, num_codebooks=self.num_codebooks,
            codebook_size=self.codebook_size, proj_dim=self.proj_dim,
            stack_frames=self.stack_frames, seed=self.label_seed)

    def anchor_targets(self, feats: torch.Tensor, feats_lengths: torch.Tensor,
                       mask: torch.Tensor, out_lens: torch.Tensor, num_frames: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> labels (B, T', M), valid (B, T') bool, masked (B, T') bool at the encoder rate."""
        labels, _ = self.labeller(feats, feats_lengths)
        if labels.shape[1] < num_frames:
            labels = F.pad(labels, (0, 0, 0, num_frames - labels.shape[1]), value=-1)
        labels = labels[:, :num_frames]
        valid = (torch.arange(num_frames, device=labels.device).unsqueeze(0)
                 < out_lens.unsqueeze(1)) & (labels[..., 0] >= 0)
        masked = label_frame_mask(mask, self.stack_frames, num_frames) & valid
        return labels, valid, masked

    def anchor_loss(self, hidden: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                    masked: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """hidden: (B, T', D) -> CE over masked frames (mean over codebooks), stats."""
        logits = self.head(hidden[masked]).float().reshape(-1, self.num_codebooks,
                                                          self.codebook_size)
        target = labels[masked]  # (N, M)
        if target.shape[0] == 0:
            loss = logits.sum() * 0.0
            acc = 0.0
        else:
            loss = F.cross_entropy(logits.reshape(-1, self.codebook_size), target.reshape(-1))
            acc = float((logits.argmax(-1) == target).float().mean())
        return loss, {"loss_anchor": loss.detach(), "acc_anchor": acc,
                      "ppl_anchor": label_perplexity(labels, valid, self.codebook_size),
                      "masked_fraction": float(masked.sum()) / max(1, int(valid.sum()))}

    def forward(self, encoder_output: list, encoder_output_lengths: torch.Tensor,
                feats: torch.Tensor, feats_lengths: torch.Tensor,
                mask_info: dict) -> tuple[torch.Tensor, dict]:
        """encoder_output: list of (B, T', D) (last = final layer), feats: (B, T_in, F) unmasked
        normalised input, mask_info["mask"]: (B, T_in) bool -> (loss, stats)."""
        hidden = encoder_output[-1]
        labels, valid, masked = self.anchor_targets(
            feats, feats_lengths, mask_info["mask"], encoder_output_lengths, hidden.shape[1])
        loss, stats = self.anchor_loss(hidden, labels, valid, masked)
        return loss, stats


class BiRQLoss(BestRQLoss):
    """BiRQ: BEST-RQ's anchor loss plus Gumbel-softmax enhanced labels from the first k layers of
    an unmasked pass (see module docstring).

    Extra keyword args: ``enhanced_layer`` k (None: round(0.7 N)), ``enhanced_weight`` w1 (0.1),
    ``anchor_weight`` w2 (2.4), ``gumbel_tau`` (0.5), ``gumbel_hard`` (True), ``logit_scale``
    (10.0), ``enhanced_norm`` ("utterance" or "frame"), ``enhanced_codebook_size`` K_e and
    ``enhanced_proj_dim`` p_e (None: as the anchor's),
    ``shared_head`` (False), ``enhanced_seed`` (None: label_seed + 1000).
    """

    def __init__(self, encoder_output_size: int, *, enhanced_layer: int | None = None,
                 enhanced_weight: float = 0.1, anchor_weight: float = 2.4,
                 gumbel_tau: float = 0.5, gumbel_hard: bool = True, logit_scale: float = 10.0,
                 enhanced_norm: str = "utterance", enhanced_codebook_size: int | None = None,
                 enhanced_proj_dim: int | None = None,
                 shared_head: bool = False, enhanced_seed: int | None = None,
                 **kwargs) -> None:
        super().__init__(encoder_output_size, **kwargs)
        self.required_inputs = self.required_inputs + ["unmasked_hidden"]
        self.enhanced_layer = enhanced_layer
        self.enhanced_weight = float(enhanced_weight)
        self.anchor_weight = float(anchor_weight)
        self.gumbel_tau = float(gumbel_tau)
        self.gumbel_hard = bool(gumbel_hard)
        self.logit_scale = float(logit_scale)
        if enhanced_norm not in ("utterance", "frame"):
            raise ValueError(f"birq: enhanced_norm must be 'utterance' or 'frame', not {enhanced_norm!r}")
        self.enhanced_norm = enhanced_norm
        self.enhanced_codebook_size = int(enhanced_codebook_size or self.codebook_size)
        self.shared_head = bool(shared_head)
        if self.shared_head and (self.enhanced_codebook_size != self.codebook_size
                                 or self.num_codebooks != 1):
            raise ValueError("birq: shared_head needs enhanced_codebook_size == codebook_size "
                             "and num_codebooks == 1")
        self.enhanced_head = (None if self.shared_head else
                              torch.nn.Linear(encoder_output_size, self.enhanced_codebook_size))
        seed = self.label_seed + 1000 if enhanced_seed is None else int(enhanced_seed)
        g = torch.Generator().manual_seed(seed)
        p = int(enhanced_proj_dim or self.proj_dim)
        bound = math.sqrt(6.0 / (encoder_output_size + p))  # Xavier uniform, as the anchor's
        self.register_buffer("enhanced_projection",
                             (torch.rand(encoder_output_size, p, generator=g) * 2 - 1) * bound)
        # the frozen projection's 1 % length floor of the cosine (enhanced_logits), once
        self._cos_floor = 0.01 * float(self.enhanced_projection.norm())
        c = torch.randn(self.enhanced_codebook_size, p, generator=g)
        self.register_buffer("enhanced_codebook", c / c.norm(dim=1, keepdim=True))

    def setup(self, input_dim: int, num_layers: int) -> None:
        super().setup(input_dim, num_layers)
        if self.enhanced_layer is None:
            self.enhanced_layer = max(1, round(0.7 * num_layers))
        if not 1 <= int(self.enhanced_layer) <= num_layers:
            raise ValueError(f"birq: enhanced_layer {self.enhanced_layer} is beyond the "
                             f"encoder's {num_layers} layers")
        self.enhanced_layer = int(self.enhanced_layer)

    def enhanced_logits(self, unmasked_hidden: torch.Tensor,
                        lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T', D) layer-k states and their (B,) valid lengths -> (B, T', K_e) logits
        s * cos(R N(h), C), float32 (N: see ``enhanced_norm``; padded frames do not enter the
        per-utterance statistics)."""
        with torch.autocast(unmasked_hidden.device.type, enabled=False):  # selection in fp32
            h = unmasked_hidden.float()
            if self.enhanced_norm == "frame":
                h = F.layer_norm(h, h.shape[-1:])  # non-affine
            else:  # as BEST-RQ's input (std floored at sqrt(1e-5), LayerNorm's variance eps)
                if lengths is None:
                    lengths = torch.full(h.shape[:1], h.shape[1], device=h.device)
                h = normalise_per_utterance(h, lengths.to(h.device), eps=math.sqrt(1e-5))
            y = h @ self.enhanced_projection
            # cosine, except for a state far shorter than a normalised one (E|N(h) R| = |R|_F for
            # unit-variance h): a layer k constant over time leaves only rounding noise after the
            # per-utterance normalisation, and scaling that up to unit length would give every
            # frame the same code again; below 1 % of |R|_F the logits shrink towards uniform
            y = y / y.norm(dim=-1, keepdim=True).clamp(min=self._cos_floor)
            return self.logit_scale * (y @ self.enhanced_codebook.T)

    def enhanced_targets(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K_e) -> (N, K_e) one-hot (straight-through) or soft Gumbel samples; argmax in
        eval mode."""
        if not self.training:
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=self.gumbel_hard)

    def forward(self, encoder_output: list, encoder_output_lengths: torch.Tensor,
                feats: torch.Tensor, feats_lengths: torch.Tensor, mask_info: dict,
                unmasked_hidden: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """As :meth:`BestRQLoss.forward`, plus ``unmasked_hidden`` (B, T', D): layer k of the
        unmasked pass, with gradient."""
        hidden = encoder_output[-1]
        labels, valid, masked = self.anchor_targets(
            feats, feats_lengths, mask_info["mask"], encoder_output_lengths, hidden.shape[1])
        g_loss, stats = self.anchor_loss(hidden, labels, valid, masked)

        e_all = self.enhanced_logits(unmasked_hidden, encoder_output_lengths)  # (B, T', K_e)
        e_ids = e_all.argmax(-1).detach()
        target = self.enhanced_targets(e_all[masked])  # (N, K_e)
        head = self.head if self.shared_head else self.enhanced_head
        pred = head(hidden[masked]).float()
        if target.shape[0] == 0:
            f_loss = pred.sum() * 0.0 + target.sum() * 0.0
            acc = 0.0
        else:
            f_loss = -(target * pred.log_softmax(-1)).sum(-1).mean()
            acc = float((pred.argmax(-1) == target.argmax(-1)).float().mean())
        loss = self.enhanced_weight * f_loss + self.anchor_weight * g_loss
        stats.update({"loss_enhanced": f_loss.detach(), "acc_enhanced": acc,
                      "ppl_enhanced": label_perplexity(e_ids.unsqueeze(-1), valid,
                                                       self.enhanced_codebook_size)})
        return loss, stats
