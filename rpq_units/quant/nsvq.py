"""Gradient training of VQ codebooks: noise substitution (NSVQ) and the straight-through estimator.

The nearest-codeword choice ``q = c_{argmin_i ||z - c_i||}`` has no useful gradient. Two ways
around it:

* **NSVQ** (Vali & Backstrom, "NSVQ: Noise Substitution in Vector Quantization for Machine
  Learning", IEEE Access 2022) replaces the quantization error by a random vector of the same
  norm::

      out = z + ||z - q|| * v / ||v||,   v ~ N(0, I)

  so ``||out - z|| = ||q - z||`` exactly, and the gradient reaches the codebook through
  ``||z - q||``. The loss is the reconstruction error ``||x - out||^2``.
* **STE** (Bengio et al. 2013; the VQ-VAE losses of van den Oord et al. 2017): the forward pass
  uses ``q``, the backward pass copies the gradient, ``out = z + sg(q - z)``. The codebook learns
  from the codebook loss ``||sg(z) - q||^2``; the commitment term ``beta ||z - sg(q)||^2``
  moves the encoder output (here the input has no trainable encoder, so it only reports).

Codewords no frame chose during the last ``replace_every`` steps are *dead*: they are replaced by
copies of busy codewords (picked in proportion to their use) plus Gaussian noise whose standard
deviation is ``replace_noise`` times the RMS quantization error of that codebook, so each copy
really moves away from its source and the two split the source's cell.

The trainer is generic: it takes codebook tensors and a structure, ``"product"`` (codebook g
quantizes its own sub-vector ``x[:, S_g]``: K-means is one group of all dims, PQ/RPQ one group
per sub-vector), ``"residual"`` (codebook m quantizes the residual left by codebooks < m) or
``"additive"`` (the frame is the sum of one codeword per codebook, chosen by the structure's
own search; under STE codebook m learns from ``x`` minus the other codewords). A quantizer
takes it as its ``trainer: nsvq | ste`` option (:meth:`rpq_units.quant.base.Quantizer.gradient_trainer`):
K-means, PQ and RPQ from Lloyd-fitted codebooks, RVQ from k-means++ seeds of each stage, AVQ
from its residual initialisation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from tqdm import tqdm

from rpq_units.errors import QuantizerError
from rpq_units.quant.search import assign

logger = logging.getLogger(__name__)


def nsvq_output(
    z: torch.Tensor,
    q: torch.Tensor,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise-substituted quantizer output ``z + ||z - q|| v/||v||``, v ~ N(0, I).

    z, q: (..., d). Differentiable in ``z`` and ``q``; ``||out - z|| == ||q - z||`` per vector.
    ``mask`` (broadcastable to z, 0/1) confines the noise to the valid (unpadded) dims.
    """
    v = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    if mask is not None:
        v = v * mask
    v_norm = v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    err_norm = (z - q).pow(2).sum(-1, keepdim=True).clamp_min(1e-24).sqrt()
    return z + err_norm * v / v_norm


def ste_output(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through output: forward value ``q``, gradient passed to ``z`` unchanged."""
    return z + (q - z).detach()


def _nearest(z: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """z: (B, d), book: (K, d) -> codes (B,), no gradient."""
    with torch.no_grad():
        return assign(z.detach().unsqueeze(0), book.detach().unsqueeze(0))[0][0]


class GradientTrainer:
    """Mini-batch gradient training of codebooks by NSVQ or STE.

    Args (keyword-only):
        method: ``"nsvq"`` or ``"ste"``.
        epochs: passes over the training frames.
        batch_size: frames per step.
        lr: initial Adam learning rate, relative to the RMS of the training frames (scale-free),
            decayed to zero on a cosine schedule.
        beta: STE commitment weight.
        replace_every: steps between dead-codeword checks (0 = never).
        replace_noise: noise std of a replaced codeword, relative to the codebook's RMS error.
        seed: seeds batches, noise and replacements.
    """

    def __init__(
        self,
        *,
        method: str = "nsvq",
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 3e-2,
        beta: float = 0.25,
        replace_every: int = 50,
        replace_noise: float = 0.1,
        seed: int = 0,
    ) -> None:
        if method not in ("nsvq", "ste"):
            raise QuantizerError(f"unknown gradient trainer {method!r}; choose nsvq or ste")
        self.method = method
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.beta = float(beta)
        self.replace_every = int(replace_every)
        self.replace_noise = float(replace_noise)
        self.seed = int(seed)
        self.replaced = 0  # total dead codewords replaced (for logs and tests)

    # ---- public entry points ---------------------------------------------------------
    def train_product(
        self, sub: torch.Tensor, codebooks: torch.Tensor, widths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """sub: (G, N, d) sub-vectors, codebook g quantizing ``sub[g]``; codebooks: (G, K, d);
        widths: (G,) valid leading dims of each group (the rest is zero padding), None = all."""
        g, _, d = sub.shape
        mask = None
        if widths is not None:
            mask = (torch.arange(d, device=sub.device) < widths.to(sub.device).unsqueeze(1))
            mask = mask.unsqueeze(1).float()  # (G, 1, d)
        return self._train(sub, codebooks, "product", mask)

    def train_residual(self, x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
        """x: (N, D); codebooks: (M, K, D), stage m quantizing the residual of stages < m."""
        return self._train(x, codebooks, "residual", None)

    def train_additive(
        self, x: torch.Tensor, codebooks: torch.Tensor,
        search: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """x: (N, D); codebooks: (M, K, D) whose codewords add up to the frame; ``search``
        maps a batch (B, D) and the codebooks to codes (B, M) (no gradient needed)."""
        self._search = search
        return self._train(x, codebooks, "additive", None)

    # ---- one forward pass ------------------------------------------------------------
    def _forward(
        self,
        xb: torch.Tensor,
        books: torch.Tensor,
        structure: str,
        mask: torch.Tensor | None,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Loss, per-codebook codes, per-codebook inputs (detached) for one batch.

        xb: (G, B, d) for ``product``, (B, D) for ``residual``."""
        g = books.shape[0]
        codes, inputs = [], []
        loss = xb.new_zeros(())
        if structure == "product":
            for i in range(g):
                z = xb[i]
                c = _nearest(z, books[i].detach())
                q = books[i][c]
                loss = loss + self._vq_loss(z, q, gen, None if mask is None else mask[i])
                codes.append(c)
                inputs.append(z)
            return loss / xb.shape[1], codes, inputs
        if structure == "additive":
            with torch.no_grad():
                c_all = self._search(xb.detach(), books.detach())
            qs = [books[i][c_all[:, i]] for i in range(g)]
            total = sum(q.detach() for q in qs)
            for i in range(g):
                z = xb - (total - qs[i].detach())  # what codebook i has to represent
                codes.append(c_all[:, i])
                inputs.append(z.detach())
                if self.method == "ste":
                    loss = loss + self._vq_loss(z.detach(), qs[i], gen)
            if self.method == "nsvq":
                loss = self._vq_loss(xb, sum(qs), gen)
            return loss / xb.shape[0], codes, inputs
        # residual: stage m sees z_m = x - sum_{j<m} q_j (q_j differentiable in codebook j)
        z = xb
        x_hat = torch.zeros_like(xb)
        for i in range(g):
            c = _nearest(z.detach(), books[i].detach())
            q = books[i][c]
            codes.append(c)
            inputs.append(z.detach())
            if self.method == "ste":
                loss = loss + self._vq_loss(z.detach(), q, gen)
                z = z - q.detach()
            else:
                x_hat = x_hat + q
                z = xb - x_hat
        if self.method == "nsvq":
            loss = self._vq_loss(xb, x_hat, gen)
        return loss / xb.shape[0], codes, inputs

    def _vq_loss(
        self, z: torch.Tensor, q: torch.Tensor, gen: torch.Generator, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.method == "nsvq":
            out = nsvq_output(z, q, gen, mask)
            return (z - out).pow(2).sum()
        codebook = (z.detach() - q).pow(2).sum()
        commitment = (z - q.detach()).pow(2).sum()
        return codebook + self.beta * commitment

    # ---- training loop ---------------------------------------------------------------
    def _train(
        self, x: torch.Tensor, codebooks: torch.Tensor, structure: str, mask: torch.Tensor | None
    ) -> torch.Tensor:
        n = x.shape[1] if structure == "product" else x.shape[0]
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed)
        scale = float(x.pow(2).mean().sqrt().clamp_min(1e-12))
        books = codebooks.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([books], lr=self.lr * scale)
        total_steps = self.epochs * math.ceil(n / self.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, total_steps))
        g, k = books.shape[:2]
        usage = torch.zeros(g, k, device=x.device)
        sq_err = torch.zeros(g, device=x.device)
        seen = 0
        step = 0
        steps_per_epoch = math.ceil(n / self.batch_size)
        bar = tqdm(total=self.epochs * steps_per_epoch, desc=f"{self.method} training", leave=False)
        for epoch in range(self.epochs):
            perm = torch.randperm(n, generator=gen).to(x.device)
            total = 0.0
            for s in range(0, n, self.batch_size):
                idx = perm[s : s + self.batch_size]
                xb = x[:, idx] if structure == "product" else x[idx]
                loss, codes, inputs = self._forward(xb, books, structure, mask, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * idx.numel()
                with torch.no_grad():
                    for i, c in enumerate(codes):
                        usage[i] += torch.bincount(c, minlength=k).to(usage.dtype)
                        sq_err[i] += (inputs[i] - books[i][c]).pow(2).sum()
                    seen += idx.numel()
                step += 1
                bar.update(1)
                if self.replace_every and step % self.replace_every == 0:
                    self.replace_dead(books, usage, sq_err / max(seen, 1), gen, mask)
                    usage.zero_()
                    sq_err.zero_()
                    seen = 0
            logger.info("%s epoch %d/%d: loss %.6g", self.method, epoch + 1, self.epochs, total / n)
        bar.close()
        return books.detach().contiguous()

    @torch.no_grad()
    def replace_dead(
        self,
        books: torch.Tensor,
        usage: torch.Tensor,
        mean_sq_err: torch.Tensor,
        gen: torch.Generator,
        mask: torch.Tensor | None = None,
    ) -> int:
        """Replace codewords with zero ``usage`` by noisy copies of used ones, in place.

        books: (G, K, d); usage: (G, K) counts; mean_sq_err: (G,) mean squared error per frame
        of each codebook, which sets the noise scale; mask: (G, 1, d) valid dims or None.
        Returns the number replaced.
        """
        count = 0
        for i in range(books.shape[0]):
            dead = (usage[i] == 0).nonzero().flatten()
            if dead.numel() == 0 or usage[i].sum() == 0:
                continue
            src = torch.multinomial(usage[i].double().cpu(), dead.numel(), replacement=True,
                                    generator=gen).to(books.device)
            d = books.shape[2] if mask is None else float(mask[i].sum())
            sigma = self.replace_noise * float(mean_sq_err[i].clamp_min(1e-24) / d) ** 0.5
            noise = torch.randn(dead.numel(), books.shape[2], generator=gen).to(books.device) * sigma
            if mask is not None:
                noise = noise * mask[i]
            books.data[i, dead] = books.data[i, src] + noise
            count += dead.numel()
        if count:
            logger.debug("replaced %d dead codewords", count)
        self.replaced += count
        return count
