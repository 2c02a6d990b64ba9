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

    e_{b,u} = GumbelSoftmax(s * cos(R N(h^k_{b,u}), C), tau)      "enhanced" label
    F = mean_{(b,u) masked} -sum_j e_{b,u,j} log softmax(V h_{b,u})_j
    loss = w1 F + w2 G                                            (w1 0.1, w2 2.4)

The loss is the first-order penalty form of the paper's bilevel problem
min F s.t. G - min G <= delta: min G does not depend on the parameters, so its gradient is that
of w1 F + w2 G. R and C are buffers and never change.

Why the enhanced labels carry no gradient (``label_gradient: none``, the default).
Read literally, the penalty form sends F's gradient everywhere, also through the Gumbel-softmax
relaxation of e into the layers that make the labels (``label_gradient: gumbel``, the former
default). Then the labels collapse: in the 2-core demo the batch's enhanced-label perplexity
was 193 in epoch 1 (mean over its steps), 3.3 in epoch 2 and 3.0 in epoch 4
(egs/mini_librispeech/RESULTS.md). The same happens in a
small probe (``tests/ssl/birq_probe.py``: Conformer d 96, 4 layers, k 3, K = K_e = 1024, 8 demo
utterances a step, AdamW 2e-3; seed 0, figures at steps 0 / 50 / 100 / 149 unless stated):

- what collapses: not the codes' scale but the rank. The projected states R N(h^k) over a batch
  become a line: their effective rank (exp of the entropy of the normalised squared singular
  values; 16 at most) fell 13.8 -> 4.4 -> 1.33 -> 1.44 and the top direction's share of the
  energy 0.15 -> 0.62 -> 0.95 -> 0.92, while the perplexity fell 412 -> 48 -> 2.9 -> 3.1. N(h^k)
  itself (96 dims) fell from effective rank 71 to 3.1: every dimension follows nearly the same
  time course, so each dimension's per-utterance normalisation (``enhanced_norm: utterance``)
  leaves it a unit-variance copy of that course, R maps it onto one direction u, and the cosine
  picks the codes nearest +u and -u. The normalisation removed the constant layer (rank 0) as a
  solution, not the rank-1 one.
- which gradient: ablations of the paths, same seed (``--paths``), perplexity at 50 / 100 / 149:
  F through the labels alone (no F gradient through the masked pass) 30 / 2.5 / 2.2; without G
  (w2 0) 2.3 / 1.7 / 2.0; without the label path (F only through the masked pass, and G)
  333 / 201 / 256; G alone training the encoder (F trains only its head V) 321 / 191 / 250;
  F through the masked pass alone 417 / 316 / 289. So F's gradient through the Gumbel labels
  into embed and layers 1..k is the cause and suffices; G slows it (collapse by step ~50 without,
  ~100 with) but does not stop it; F's gradient through the masked pass does nothing measurable
  to the labels. To first order (``--paths label,pred,anchor --steps 200 --every 20``), a step
  along minus that label-path gradient lowered the batch's soft label entropy at every logged
  step of the first 120 (by 0.1-0.7 per unit step), the masked-pass part of F left it unchanged
  (|change| < 0.05), and G's gradient on the same parameters, 1.3-8 times larger in norm
  (steps 20-199), had no consistent sign. The drop of the effective rank from 13.8 to about 8
  without collapse (perplexity 200-250) is G's own: BEST-RQ alone does it.
- what the bilevel form implies: nothing against it. G asks only that the masked pass predict
  the anchor labels, and a label encoder with a rank-1 layer k does that about as well (dev anchor
  loss after 150 steps, seeds 0 / 1: 4.83 / 4.76 collapsed, 4.79-4.82 / 4.77-4.78 not; anchor
  accuracy 0.110-0.119 collapsed, 0.100-0.124 not), so the collapsed encoder satisfies
  G - min G <= delta, and among such encoders it minimises F: the collapse is a solution of the
  problem as stated, not a failure of the penalty or of w1, w2. What the form does not fix is
  what F may move. The reading taken here: the lower level defines the labels, the upper level
  trains against them, so the labels of a step are those of the current parameters, held as
  constants (HuBERT's targets and data2vec's teacher carry no gradient either); F then moves
  every parameter, but only through the masked pass and its head V, G as in BEST-RQ, and the
  labels still change, as the encoder learns from both. Dropping the labels' own derivative is
  the first-order step; it costs no backward pass through the unmasked pass.

Why the label pass runs without dropout (``label_dropout: false``, the default). With the labels
held constant, the demo's training log still showed the enhanced-label perplexity fall from 328
(epoch 1, mean over its steps) to 79 (epoch 3) while the validation pass, which runs without
dropout, stayed at 67-74 over the same epochs (egs/mini_librispeech/RESULTS.md, 2026-12-05). The
training labels were made by the encoder in training mode: each frame's code depended on the
dropout draw. Measured on 24 demo training utterances (1716 label frames) with the demo model
(``tests/ssl/birq_label_noise.py``, the model of that run's 5th epoch): at initialisation a label pass with dropout gives the
code of the pass without it on 10 % of the frames, and two passes with dropout agree on 5 %; after
the 5 epochs of that run, 50 % and 34 %. Dropout also adds codes (perplexity 556 against 499 at
initialisation, 181-186 against 143 after 5 epochs). So most of what the first epoch's figure
counted was dropout noise, and its decline was the encoder learning to be robust to dropout, not
the labels collapsing. The bilevel reading above makes the labels those of the current
parameters; dropout makes them those of a random sub-network. Without dropout in the label pass
(the masked pass keeps it) the labels are a function of the parameters and the input, as a
teacher's are in HuBERT and data2vec; ``label_dropout: true`` keeps the former behaviour.

The Gumbel-softmax selection (the paper's) is kept. With the logits ``s * cos`` (s 10) and tau
0.5 a sample is the nearest code on 9 % of the frames, at initialisation and after 5 epochs
alike, so the training targets are mostly the noise's: their training accuracy stays at
0.01-0.02 while the validation accuracy against the nearest code is 0.09-0.19. In expectation a
hard sample is softmax(s cos / tau), so F trains the head towards that distribution;
``enhanced_target: argmax`` trains on the nearest code instead.

What the demo and the real recordings showed with both defaults (egs/mini_librispeech/RESULTS.md,
egs/asterisk/RESULTS.md, 2026-12-05): on the demo the training stream's lowest perplexity was 0.34,
0.38 and 0.41 of epoch 1 (three trainer seeds; 0.24 with dropout in the label pass). On the
Asterisk recordings, where an epoch is 18 steps, it fell from 290 (epoch 1, mostly the random
encoder's labels) to 40 by epoch 3 (0.14) and rose to 137 by epoch 20: early on the anchor task
narrows layer k, and the labels follow. With w1 0 (BEST-RQ's training, the labels only measured)
they took the same course (291, 83, 41 over epochs 1-3), so the enhanced loss plays no part in it;
labels from a moving-average copy (``label_ema_decay: 0.99``) only delayed it (389 in epoch 1, 54
in epoch 7, 0.14), layer 2 instead of 3 fell to 0.24 (egs/asterisk/RESULTS.md). Only
``enhanced_whiten: true`` kept the floor there (0.79 over 20 epochs; on the demo 0.88, 0.96 and
1.00 for three trainer seeds), so the recipes' BiRQ configs set it (this class's default and the
paper-scale config keep the paper's form, unmeasured with it): with identity covariance per
utterance no narrowing of layer k can gather R N(h) in fewer directions. The cost: weak directions
count as much as strong ones, so the labels follow small changes of the layer (after 5 demo
epochs a dropout draw changed 83 % of them, 54 % without whitening; ``birq_label_noise.py``) and
were predicted at about 0.02 on validation among about 550 codes in use. PQ units of layer 3 on
the demo, three trainer seeds each (egs/mini_librispeech/RESULTS.md): BEST-RQ 43.4-48.2 % WER on
test_clean (mean 45.3), whitened BiRQ 40.9-55.6 (mean 47.6), BiRQ without whitening 40.1-76.9
(mean 56.9): whitening makes BiRQ steadier, not better than BEST-RQ at this scale.

Alternatives kept as options, the same probe after 150 steps (batch perplexity at step 149 /
dev perplexity / dev anchor accuracy; seed 0): ``label_gradient: gumbel`` 3.1 / 2.4 / 0.110
(seed 1: 3.3 / 3.1 / 0.119); ``none`` (default, Gumbel-sampled targets) 193 / 96 / 0.100 (seed 1:
188 / 110 / 0.120); ``none`` with ``enhanced_target: argmax`` (the nearest code, no sampling)
215 / 104 / 0.124 (seed 1: 183 / 106 / 0.120); ``gumbel`` with ``enhanced_whiten: true`` (R N(h)
whitened per utterance before the cosine, so no projected direction can be switched off)
364 / 340 / 0.113: no collapse, but F stays near log K_e (6.83 at step 149 against 6.93;
enhanced accuracy 0.00-0.01 in training, 0.02 on dev), nothing learnt from them yet;
``gumbel`` with ``diversity_weight: 0.1`` (wav2vec 2.0's penalty on the batch's mean code
distribution) 131 at step 100, 16 at 149 / 7.4 / 0.108: it delays the collapse only. Labels from an EMA copy
of the encoder (``label_ema_decay: 0.99``, data2vec's teacher; measured in the probe before it
was an option) 225 / 108 / 0.118, like ``none``. BEST-RQ
alone (w1 0): 210 / 114 / 0.122 (seed 1: 166 / 104 / 0.120). Within 150 steps the variants that
do not collapse cannot be told apart by the anchor task (seed-to-seed spread about 0.01); which
gives the better encoder needs the demo's pre-training and ASR stages.

Stats (ESPnet averages them per epoch into ``train.log`` and plots them under ``images/``):
``loss_anchor``, ``acc_anchor`` (argmax of the head = label, masked frames, mean over
codebooks), ``ppl_anchor`` (exp of the entropy of the batch's label histogram over valid
frames, mean over codebooks), ``masked_fraction`` (masked / valid label frames); for BiRQ also
``loss_enhanced``, ``acc_enhanced`` and ``ppl_enhanced`` (argmax enhanced labels) and, with a
diversity weight, ``loss_diversity``.

Choices the paper leaves open, made here and exposed as options (unverified against the
authors' code): the normalisation N (``enhanced_norm``): ``utterance`` (default: mean 0 / std 1
per dimension over each utterance's valid frames, as BEST-RQ normalises its input) or ``frame``
(LayerNorm over the dimensions of each frame; with label gradients it let every frame of layer
k take one code in the demo, perplexity 13.1 -> 1.0 after one epoch). Under ``utterance`` a
layer k that is constant over time normalises to zero, all logits are equal and the labels
are uniformly random (the cosine is damped for states under 1 % of a normalised state's
length, so rounding noise is not scaled up into a code). The logits ``s * cos`` with
``logit_scale`` s (default 10; with tau 0.5 and 1024 codes in 16 dims a Gumbel sample is the
nearest code for about a third of random directions), hard (straight-through, default) or soft
Gumbel samples (``gumbel_hard``), a separate enhanced head V (default) or the anchor head
shared (``shared_head``, needs K_e = K and M = 1), K_e and p_e equal to the anchor codebook's
unless set. In eval mode the enhanced label is the noiseless argmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from espnet2.ssl.loss.abs_loss import AbsSSLLoss

from rpq_units.ssl.labels import AnchorLabeller, normalise_per_utterance

# where the enhanced loss F may send its gradient (see the module docstring)
LABEL_GRADIENTS = ("none", "gumbel")
# how an enhanced label is chosen from its logits in training
ENHANCED_TARGETS = ("argmax", "gumbel")


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


def whiten_per_utterance(y: torch.Tensor, lengths: torch.Tensor,
                         rel_eps: float = 1e-3) -> torch.Tensor:
    """y: (B, T, p), lengths: (B,) -> (B, T, p) with mean 0 and identity covariance over each
    utterance's valid frames (Cholesky whitening, in float64). The covariance is regularised by
    ``rel_eps`` times its mean eigenvalue (plus 1e-12), so no direction is scaled up more than
    about 1 / sqrt(rel_eps) (32) times as much as one of mean variance; padding frames are
    whitened with their utterance's matrix but belong to no statistic."""
    b, t, p = y.shape
    valid = (torch.arange(t, device=y.device).unsqueeze(0)
             < lengths.unsqueeze(1)).unsqueeze(-1).to(torch.float64)
    x = y.to(torch.float64)
    n = valid.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    x = x - (x * valid).sum(1, keepdim=True) / n
    cov = (x * valid).transpose(1, 2) @ x / n  # (B, p, p)
    eye = torch.eye(p, dtype=x.dtype, device=x.device)
    mean_var = cov.diagonal(dim1=1, dim2=2).mean(-1).reshape(b, 1, 1)
    chol = torch.linalg.cholesky(cov + (rel_eps * mean_var + 1e-12) * eye)
    w = torch.linalg.solve_triangular(chol, x.transpose(1, 2), upper=False).transpose(1, 2)
    return w.to(y.dtype)


def diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """wav2vec 2.0's diversity penalty (Baevski et al., 2020, eq. 4): logits (N, K) ->
    (K - exp(H(p_bar))) / K with p_bar the softmax averaged over the N frames; 0 when every
    code is used equally, (K - 1) / K when all frames choose one."""
    k = logits.shape[-1]
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    p_bar = logits.float().softmax(-1).mean(0)
    ppl = torch.exp(-(p_bar * (p_bar + 1e-7).log()).sum())
    return (k - ppl) / k


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
    ``shared_head`` (False), ``enhanced_seed`` (None: label_seed + 1000), ``label_gradient``
    ("none": the labels are constants of each step; "gumbel": F's gradient also flows through
    the Gumbel-softmax into layers 1..k, the former default, which collapses),
    ``enhanced_target`` ("gumbel" samples or the "argmax" code; "gumbel" is needed by
    ``label_gradient: gumbel``), ``enhanced_whiten`` (False: whiten R N(h) per utterance before
    the cosine), ``diversity_weight`` (0.0: weight of wav2vec 2.0's diversity penalty on the
    batch's mean softmax of the enhanced logits; its gradient reaches layers 1..k),
    ``label_dropout`` (False: the unmasked pass that makes the labels runs without the encoder's
    dropout, read by :class:`rpq_units.ssl.model.BestRQModel`; True: with it, the former default),
    ``label_ema_decay`` (0.0: the labels come from the encoder in training; d in (0, 1): from an
    exponential moving average of its parameters, updated by d per training step before the
    label pass, data2vec's teacher; also read by the model, which keeps the copy).
    """

    def __init__(self, encoder_output_size: int, *, enhanced_layer: int | None = None,
                 enhanced_weight: float = 0.1, anchor_weight: float = 2.4,
                 gumbel_tau: float = 0.5, gumbel_hard: bool = True, logit_scale: float = 10.0,
                 enhanced_norm: str = "utterance", enhanced_codebook_size: int | None = None,
                 enhanced_proj_dim: int | None = None,
                 shared_head: bool = False, enhanced_seed: int | None = None,
                 label_gradient: str = "none", enhanced_target: str = "gumbel",
                 enhanced_whiten: bool = False, diversity_weight: float = 0.0,
                 label_dropout: bool = False, label_ema_decay: float = 0.0,
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
        if label_gradient not in LABEL_GRADIENTS:
            raise ValueError(f"birq: label_gradient must be one of {LABEL_GRADIENTS}, "
                             f"not {label_gradient!r}")
        if enhanced_target not in ENHANCED_TARGETS:
            raise ValueError(f"birq: enhanced_target must be one of {ENHANCED_TARGETS}, "
                             f"not {enhanced_target!r}")
        if label_gradient == "gumbel" and enhanced_target != "gumbel":
            raise ValueError("birq: label_gradient 'gumbel' needs enhanced_target 'gumbel' "
                             "(the gradient flows through the Gumbel-softmax sample)")
        if diversity_weight < 0:
            raise ValueError(f"birq: diversity_weight must be >= 0, not {diversity_weight}")
        self.label_gradient = label_gradient
        self.enhanced_target = enhanced_target
        self.enhanced_whiten = bool(enhanced_whiten)
        self.diversity_weight = float(diversity_weight)
        self.label_dropout = bool(label_dropout)
        if not 0.0 <= label_ema_decay < 1.0:
            raise ValueError(f"birq: label_ema_decay must be in [0, 1), not {label_ema_decay}")
        if label_ema_decay > 0 and (label_gradient == "gumbel" or diversity_weight > 0):
            raise ValueError("birq: label_ema_decay makes the labels with a copy of the encoder, "
                             "which no gradient reaches: it needs label_gradient 'none' and "
                             "diversity_weight 0")
        self.label_ema_decay = float(label_ema_decay)
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

    @property
    def label_needs_grad(self) -> bool:
        """Whether the unmasked pass must keep its graph: only ``label_gradient: gumbel`` and the
        diversity term send a gradient through it."""
        return self.label_gradient == "gumbel" or self.diversity_weight > 0

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
        per-utterance statistics; with ``enhanced_whiten`` the cosine is taken after whitening
        R N(h) per utterance)."""
        with torch.autocast(unmasked_hidden.device.type, enabled=False):  # selection in fp32
            h = unmasked_hidden.float()
            if lengths is None:
                lengths = torch.full(h.shape[:1], h.shape[1], device=h.device)
            lengths = lengths.to(h.device)
            if self.enhanced_norm == "frame":
                h = F.layer_norm(h, h.shape[-1:])  # non-affine
            else:  # as BEST-RQ's input (std floored at sqrt(1e-5), LayerNorm's variance eps)
                h = normalise_per_utterance(h, lengths, eps=math.sqrt(1e-5))
            y = h @ self.enhanced_projection
            # cosine, except for a state far shorter than a normalised one (E|N(h) R| = |R|_F for
            # unit-variance h): a layer k constant over time leaves only rounding noise after the
            # per-utterance normalisation, and scaling that up to unit length would give every
            # frame the same code again; below 1 % of |R|_F the logits shrink towards uniform
            length = y.norm(dim=-1, keepdim=True)
            if self.enhanced_whiten:
                w = whiten_per_utterance(y, lengths)
                y = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12) * (
                    length / length.clamp(min=self._cos_floor))
            else:
                y = y / length.clamp(min=self._cos_floor)
            return self.logit_scale * (y @ self.enhanced_codebook.T)

    def enhanced_targets(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, K_e) -> (N, K_e) targets: one-hot argmax (``enhanced_target: argmax``, and always
        in eval mode) or Gumbel-softmax samples (straight-through one-hot or soft,
        ``gumbel_hard``)."""
        if not self.training or self.enhanced_target == "argmax":
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=self.gumbel_hard)

    def forward(self, encoder_output: list, encoder_output_lengths: torch.Tensor,
                feats: torch.Tensor, feats_lengths: torch.Tensor, mask_info: dict,
                unmasked_hidden: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """As :meth:`BestRQLoss.forward`, plus ``unmasked_hidden`` (B, T', D): layer k of the
        unmasked pass (its gradient is used only by ``label_gradient: gumbel`` and the
        diversity term)."""
        hidden = encoder_output[-1]
        labels, valid, masked = self.anchor_targets(
            feats, feats_lengths, mask_info["mask"], encoder_output_lengths, hidden.shape[1])
        g_loss, stats = self.anchor_loss(hidden, labels, valid, masked)

        label_grad = self.label_gradient == "gumbel"
        if not (label_grad or self.diversity_weight > 0):
            unmasked_hidden = unmasked_hidden.detach()  # the labels are constants of this step
        e_all = self.enhanced_logits(unmasked_hidden, encoder_output_lengths)  # (B, T', K_e)
        e_ids = e_all.argmax(-1).detach()
        sel = e_all[masked]
        target = self.enhanced_targets(sel if label_grad else sel.detach())  # (N, K_e)
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
        if self.diversity_weight > 0:
            d_loss = diversity_loss(e_all[valid])
            loss = loss + self.diversity_weight * d_loss
            stats["loss_diversity"] = d_loss.detach()
        return loss, stats
