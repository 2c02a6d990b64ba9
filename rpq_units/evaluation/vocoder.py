"""A HiFi-GAN vocoder from frame features (continuous SSL layers or decoded units) to 16 kHz audio.

HiFi-GAN (Kong et al., NeurIPS 2020, arXiv 2010.05646): ESPnet's implementation of the generator
and the multi-scale + multi-period discriminators (``espnet2.gan_tts.hifigan``) with the
paper's objective, least-squares GAN:

    L_D = E[(D(y) - 1)^2] + E[D(G(s))^2]
    L_G = E[(D(G(s)) - 1)^2] + lambda_fm * L_FM + lambda_mel * || logmel(y) - logmel(G(s)) ||_1

(``L_FM``: L1 between the discriminators' hidden feature maps on real and generated audio,
averaged over layers and discriminators; ``lambda_fm = 2``, ``lambda_mel = 45``). The vocoder
is trained on the *continuous* features of a training set and then fed each discretizer's
``decode(codes)``, as unit vocoders (kNN-VC's WavLM HiFi-GAN; SpeechBrain's unit HiFi-GAN)
are used. Published vocoders train for about 10^6 GPU steps; the demo's CPU configuration
trains for minutes and gives a rough vocoder.

Why a short loop here and not ESPnet's ``GANTrainer``: that trainer runs ESPnet tasks whose
models compute their own losses from dataset files (``gan_tts``: text -> speech), and a
features -> waveform vocoder would need a new task, model and data iterator. The loop below is
the plain alternating D/G update of the paper. The three loss terms are written out (one line
each, checked against ESPnet's ``GeneratorAdversarialLoss``, ``DiscriminatorAdversarialLoss``
and ``FeatureMatchLoss`` in the tests) because importing ``espnet2.gan_tts.hifigan.loss`` pulls
librosa and ESPnet's feature stack in through its mel loss, and the GPU benchmark runs with
torch, numpy and the espnet wheel alone; the mel filterbank (:func:`mel_filterbank`, HTK
triangles, checked against ``torchaudio.functional.melscale_fbanks``) likewise.

Shapes: features ``(T, D)`` at ``hop`` samples per frame; audio ``(T * hop,)``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rpq_units.errors import UserError
from rpq_units.files import atomic_path

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

DEFAULT_TRAIN = {
    "steps": 2000,
    "batch_size": 8,
    "segment_frames": 16,
    "lr": 2e-4,
    "betas": [0.8, 0.99],
    "lr_decay": 0.999,  # per 100 steps
    "lambda_mel": 45.0,
    "lambda_fm": 2.0,
    "adv_start_step": 0,  # steps trained on the mel loss alone before the discriminators join
    "log_every": 50,
    "save_every": 500,
    "seed": 0,
}
DEFAULT_MEL_LOSS = {"n_fft": 1024, "hop": 256, "n_mels": 80}


class VocoderError(UserError):
    """Bad vocoder config or checkpoint, or features the vocoder was not trained for."""


# ---- pieces ------------------------------------------------------------------------------


def upsample_scales_for(hop: int) -> list[int]:
    """Factor ``hop`` into upsampling steps of at most 8, largest first (320 -> 8, 8, 5;
    640 -> 8, 8, 5, 2)."""
    scales, rest = [], int(hop)
    while rest > 1:
        f = next((f for f in range(8, 1, -1) if rest % f == 0), None)
        if f is None:
            raise VocoderError(f"hop {hop} has a prime factor above 8; give upsample_scales")
        scales.append(f)
        rest //= f
    return scales


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """``(n_fft/2 + 1, n_mels)`` HTK-mel triangles over 0..sr/2, no normalization (what
    ``torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")`` returns)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    m_max = 2595.0 * math.log10(1.0 + (sample_rate / 2) / 700.0)
    m_pts = torch.linspace(0, m_max, n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - freqs.unsqueeze(1)  # (F, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0).float()


class LogMel(torch.nn.Module):
    """``(B, L)`` audio -> ``(B, n_mels, frames)`` natural-log mel magnitude (floor 1e-5)."""

    def __init__(self, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_fft, n_mels), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            wav, self.n_fft, self.hop, window=self.window, center=True, return_complex=True
        ).abs()
        return torch.log(torch.clamp(self.fb.T @ spec, min=1e-5))


def generator_adv_loss(outs_fake: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """LSGAN generator loss, averaged over discriminators (their last output)."""
    return sum(F.mse_loss(o[-1], torch.ones_like(o[-1])) for o in outs_fake) / len(outs_fake)


def discriminator_adv_loss(
    outs_fake: Sequence[Sequence[torch.Tensor]], outs_real: Sequence[Sequence[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """LSGAN discriminator losses ``(real, fake)``, averaged over discriminators."""
    n = len(outs_real)
    real = sum(F.mse_loss(o[-1], torch.ones_like(o[-1])) for o in outs_real) / n
    fake = sum(F.mse_loss(o[-1], torch.zeros_like(o[-1])) for o in outs_fake) / n
    return real, fake


def feature_match_loss(
    outs_fake: Sequence[Sequence[torch.Tensor]], outs_real: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """L1 between hidden feature maps (final outputs excluded), averaged over layers and then
    discriminators."""
    total = 0.0
    for f, r in zip(outs_fake, outs_real, strict=True):
        total = total + sum(F.l1_loss(a, b.detach()) for a, b in zip(f[:-1], r[:-1], strict=True)) / (len(f) - 1)
    return total / len(outs_fake)


# ---- the vocoder -------------------------------------------------------------------------


def _generator_params(cfg: dict[str, Any], in_dim: int, hop: int) -> dict[str, Any]:
    p = dict(cfg.get("generator_params", {}))
    scales = p.get("upsample_scales", "auto")
    if scales in (None, "auto"):
        scales = upsample_scales_for(hop)
    if int(np.prod(scales)) != hop:
        raise VocoderError(
            f"generator upsample_scales {scales} multiply to {int(np.prod(scales))}, "
            f"not the feature hop {hop}"
        )
    p["upsample_scales"] = list(scales)
    if p.get("upsample_kernel_sizes", "auto") in (None, "auto"):
        p["upsample_kernel_sizes"] = [2 * s for s in scales]
    p["in_channels"] = in_dim
    p["out_channels"] = 1
    return p


class Vocoder:
    """Features ``(T, in_dim)`` at ``hop`` samples per frame -> waveform ``(T * hop,)``.

    ``config``: ``{"generator_params": {...}, "discriminator_params": {...}, "train": {...},
    "mel_loss": {...}}`` (ESPnet's ``HiFiGANGenerator`` / ``HiFiGANMultiScaleMultiPeriod
    Discriminator`` keyword arguments; ``upsample_scales: auto`` factors the hop).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        hop: int,
        config: dict[str, Any],
        device: str | torch.device = "cpu",
    ) -> None:
        from espnet2.gan_tts.hifigan import HiFiGANGenerator

        self.in_dim, self.hop = int(in_dim), int(hop)
        self.config = copy.deepcopy(config)
        self.device = torch.device(device)
        self.generator = HiFiGANGenerator(**_generator_params(config, in_dim, hop)).to(self.device)
        self.feat_mean = torch.zeros(in_dim, device=self.device)
        self.feat_std = torch.ones(in_dim, device=self.device)
        self.steps = 0

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.feat_mean) / self.feat_std

    @torch.no_grad()
    def __call__(self, feats: Any) -> np.ndarray:
        """``feats: (T, in_dim)`` -> ``(T * hop,)`` float32 audio."""
        x = torch.as_tensor(np.asarray(feats, dtype=np.float32), device=self.device)
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise VocoderError(
                f"vocoder expects (T, {self.in_dim}) features, got {tuple(x.shape)}"
            )
        self.generator.eval()
        y = self.generator(self.normalize(x).T.unsqueeze(0))  # (1, 1, T * hop)
        return y.view(-1).clamp(-1, 1).cpu().numpy()

    def state(self) -> dict[str, Any]:
        return {
            "format": "rpq_units.evaluation.vocoder/1",
            "in_dim": self.in_dim,
            "hop": self.hop,
            "config": self.config,
            "steps": self.steps,
            "feat_mean": self.feat_mean.cpu(),
            "feat_std": self.feat_std.cpu(),
            "generator": {k: v.cpu() for k, v in self.generator.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the generator, feature statistics and config (atomic)."""
        _save_atomic(self.state(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Vocoder:
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as e:
            raise VocoderError(f"{path}: cannot read vocoder checkpoint ({e})") from e
        if not isinstance(st, dict) or st.get("format") != "rpq_units.evaluation.vocoder/1":
            raise VocoderError(f"{path}: not an rpq_units vocoder checkpoint")
        v = cls(in_dim=st["in_dim"], hop=st["hop"], config=st["config"], device=device)
        v.generator.load_state_dict(st["generator"])
        v.feat_mean = st["feat_mean"].to(v.device)
        v.feat_std = st["feat_std"].to(v.device)
        v.steps = int(st["steps"])
        return v


def _save_atomic(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class SegmentSampler:
    """Random aligned training segments: ``segment_frames`` feature frames and the
    ``segment_frames * hop`` audio samples from the same start (short utterances padded)."""

    def __init__(
        self,
        feats: Sequence[np.ndarray],
        wavs: Sequence[np.ndarray],
        *,
        hop: int,
        segment_frames: int,
        seed: int = 0,
    ) -> None:
        if not feats:
            raise VocoderError("no training utterances")
        self.feats = [torch.as_tensor(np.asarray(f, np.float32)) for f in feats]
        self.wavs = [torch.as_tensor(np.asarray(w, np.float32)) for w in wavs]
        self.hop, self.seg = hop, segment_frames
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, segment_frames, D)`` features and ``(n, segment_frames * hop)`` audio."""
        xs, ys = [], []
        for i in self.rng.integers(0, len(self.feats), n):
            f, w = self.feats[i], self.wavs[i]
            s = int(self.rng.integers(0, max(1, f.shape[0] - self.seg + 1)))
            x = f[s : s + self.seg]
            y = w[s * self.hop : (s + self.seg) * self.hop]
            xs.append(F.pad(x, (0, 0, 0, self.seg - x.shape[0])))
            ys.append(F.pad(y, (0, self.seg * self.hop - y.shape[0])))
        return torch.stack(xs), torch.stack(ys)


def _resume_training(
    resume: Path, vocoder: Vocoder, disc: torch.nn.Module, opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> None:
    """Load the generator, discriminator, optimizers and step count saved in ``resume``."""
    st = torch.load(resume, map_location="cpu", weights_only=True)
    vocoder.generator.load_state_dict(st["generator"])
    disc.load_state_dict(st["discriminator"])
    opt_g.load_state_dict(st["opt_g"])
    opt_d.load_state_dict(st["opt_d"])
    vocoder.steps = int(st["steps"])
    logger.info("vocoder: resumed from %s at step %d", resume, vocoder.steps)


def _save_training(
    out: str | os.PathLike, resume: Path, vocoder: Vocoder, disc: torch.nn.Module,
    opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
) -> None:
    """Save the vocoder to ``out`` and what resuming needs to ``resume``."""
    vocoder.save(out)
    _save_atomic(
        {
            "generator": vocoder.generator.state_dict(),
            "discriminator": disc.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "steps": vocoder.steps,
        },
        resume,
    )


def _gan_step(
    vocoder: Vocoder, disc: torch.nn.Module, melspec: torch.nn.Module,
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer], x: torch.Tensor, y: torch.Tensor,
    *, adv: bool, tc: dict[str, Any],
) -> dict[str, float]:
    """One HiFi-GAN step on normalized features ``x: (B, T, D)`` and waveforms ``y: (B, L)``:
    the generator's mel L1 loss (plus, with ``adv``, its adversarial and feature-matching
    losses), then with ``adv`` the discriminator's; returns the step's losses."""
    opt_g, opt_d = opts
    hist: dict[str, float] = {}
    y_hat = vocoder.generator(x.transpose(1, 2))  # (B, 1, L)
    mel_loss = F.l1_loss(melspec(y_hat.squeeze(1)), melspec(y))
    loss_g = tc["lambda_mel"] * mel_loss
    if adv:
        outs_fake = disc(y_hat)
        with torch.no_grad():
            outs_real = disc(y.unsqueeze(1))
        loss_g = loss_g + generator_adv_loss(outs_fake) + tc["lambda_fm"] * (
            feature_match_loss(outs_fake, outs_real)
        )
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    if adv:
        real, fake = discriminator_adv_loss(disc(y_hat.detach()), disc(y.unsqueeze(1)))
        opt_d.zero_grad(set_to_none=True)
        (real + fake).backward()
        opt_d.step()
        hist["d_loss"] = float((real + fake).detach())
    hist["mel_l1"] = float(mel_loss.detach())
    hist["g_loss"] = float(loss_g.detach())
    return hist


def train_hifigan(
    vocoder: Vocoder,
    feats: Sequence[np.ndarray],
    wavs: Sequence[np.ndarray],
    *,
    out: str | os.PathLike | None = None,
    train_steps: int | None = None,
) -> dict[str, Any]:
    """Train ``vocoder`` on utterances ``feats[i]: (T_i, D)`` / ``wavs[i]: (L_i,)`` up to
    ``train_steps`` steps in all (default: the config's ``train.steps``); resumes
    from ``<out>.train`` when present, saves ``out`` (and the resumable ``<out>.train``) every
    ``save_every`` steps and at the end. Returns a summary with losses and speed."""
    from espnet2.gan_tts.hifigan import HiFiGANMultiScaleMultiPeriodDiscriminator

    tc = {**DEFAULT_TRAIN, **vocoder.config.get("train", {})}
    total = int(train_steps if train_steps is not None else tc["steps"])
    dev = vocoder.device
    torch.manual_seed(int(tc["seed"]))
    disc = HiFiGANMultiScaleMultiPeriodDiscriminator(
        **vocoder.config.get("discriminator_params", {})
    ).to(dev)
    melspec = LogMel(**{**DEFAULT_MEL_LOSS, **vocoder.config.get("mel_loss", {})}).to(dev)
    opt_g = torch.optim.Adam(vocoder.generator.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]))
    opt_d = torch.optim.Adam(disc.parameters(), lr=tc["lr"], betas=tuple(tc["betas"]))
    frames = np.concatenate([np.asarray(f, np.float32) for f in feats])
    vocoder.feat_mean = torch.as_tensor(frames.mean(0), device=dev)
    vocoder.feat_std = torch.as_tensor(frames.std(0) + 1e-5, device=dev)
    resume = Path(f"{out}.train") if out is not None else None
    if resume is not None and resume.is_file():
        _resume_training(resume, vocoder, disc, opt_g, opt_d)
    sampler = SegmentSampler(
        feats, wavs, hop=vocoder.hop, segment_frames=int(tc["segment_frames"]),
        seed=int(tc["seed"]) + vocoder.steps,
    )

    def save() -> None:
        if out is not None:
            _save_training(out, resume, vocoder, disc, opt_g, opt_d)

    from tqdm import tqdm

    vocoder.generator.train()
    disc.train()
    hist: dict[str, float] = {}
    t0 = time.perf_counter()
    start = vocoder.steps
    bar = tqdm(range(start, total), desc="vocoder", unit="step", mininterval=5.0)
    for step in bar:
        lr = tc["lr"] * tc["lr_decay"] ** (step / 100)
        for o in (opt_g, opt_d):
            for g in o.param_groups:
                g["lr"] = lr
        x, y = sampler.batch(int(tc["batch_size"]))
        x, y = vocoder.normalize(x.to(dev)), y.to(dev)
        hist.update(_gan_step(vocoder, disc, melspec, (opt_g, opt_d), x, y,
                              adv=step >= int(tc["adv_start_step"]), tc=tc))
        vocoder.steps = step + 1
        if vocoder.steps % int(tc["log_every"]) == 0 or vocoder.steps == total:
            logger.info(
                "vocoder step %d/%d: %s (%.2f steps/s)", vocoder.steps, total,
                ", ".join(f"{k} {v:.4f}" for k, v in sorted(hist.items())),
                (vocoder.steps - start) / (time.perf_counter() - t0),
            )
        if vocoder.steps % int(tc["save_every"]) == 0:
            save()
    save()
    secs = time.perf_counter() - t0
    done = vocoder.steps - start
    return {
        "steps": vocoder.steps,
        "steps_this_run": done,
        "seconds": round(secs, 2),
        "steps_per_second": round(done / secs, 3) if done else None,
        **{k: round(v, 5) for k, v in hist.items()},
    }
