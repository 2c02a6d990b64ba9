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
per sub-vector) or ``"residual"`` (codebook m quantizes the residual left by codebooks < m).
:class:`GradientVQ` exposes it as quantization methods ``"nsvq"`` and ``"ste"`` over
``base = "kmeans" | "pq" | "rpq"``; :class:`rpq_units.rvq.ResidualVectorQuantizer` takes
``trainer="nsvq"|"ste"``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from tqdm import tqdm

from rpq_units.base import Quantizer, QuantizerError, make_quantizer
from rpq_units.search import assign

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


# ---- quantization methods "nsvq" and "ste": K-means / PQ / RPQ with gradient-trained codebooks


class GradientVQ(Quantizer):
    """A K-means, PQ or RPQ quantizer whose codebooks are trained by NSVQ (method ``"nsvq"``).

    ``make_quantizer("nsvq", base="pq", num_codebooks=4, codebook_size=256)`` wraps the
    ``base`` quantizer (:mod:`rpq_units.pq`): it is fitted with
    ``init_iter`` Lloyd passes from k-means++ seeds, then its codebooks are trained by
    :class:`GradientTrainer` (options in ``trainer_conf``). Encoding, decoding and the saved
    state are the base quantizer's (its analysis surface is forwarded).

    Args (keyword-only): ``base`` (``kmeans``, ``pq`` or ``rpq``), ``num_codebooks``,
    ``codebook_size``, ``seed``, ``device``, ``init_iter``, ``base_conf`` (other keyword
    arguments of the base, e.g. ``dims_ratio``, ``max_frames``), ``trainer_conf``.
    """

    method = "nsvq"
    BASES = ("kmeans", "pq", "rpq")

    def __init__(
        self,
        *,
        base: str = "pq",
        num_codebooks: int = 4,
        codebook_size: int = 256,
        seed: int = 0,
        device: str | torch.device = "cpu",
        init_iter: int = 1,
        base_conf: dict[str, Any] | None = None,
        trainer_conf: dict[str, Any] | None = None,
    ) -> None:
        if base not in self.BASES:
            raise QuantizerError(
                f"unknown base {base!r} for {self.method}; choose one of {', '.join(self.BASES)}"
            )
        super().__init__(
            num_codebooks=num_codebooks, codebook_size=codebook_size, seed=seed, device=device
        )
        self.base = base
        self.init_iter = int(init_iter)
        self.base_conf = dict(base_conf or {})
        self.trainer_conf = dict(trainer_conf or {})
        self.inner = make_quantizer(
            base, num_codebooks=num_codebooks, codebook_size=codebook_size, seed=seed,
            device=device, max_iter=self.init_iter, **self.base_conf,
        )

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        """(G, N, d) sub-vectors the base's codebooks quantize."""
        if self.base == "kmeans":
            return x.unsqueeze(0)
        return self.inner.sub_vectors(x)

    def _fit(self, x: torch.Tensor) -> None:
        inner = self.inner
        inner.fit(x)
        sub = self._groups(x)
        widths = torch.tensor([len(s) for s in inner.subspace_indices()])
        trainer = GradientTrainer(method=self.method, seed=self.seed, **self.trainer_conf)
        inner.codebooks = trainer.train_product(sub, inner.codebooks, widths)
        _, dist = assign(sub, inner.codebooks)
        inner.inertia = dist.mean(1)
        if hasattr(inner, "train_distortion"):
            inner.train_distortion = inner.distortion(x)
        logger.info("%s (base %s): %d dead codewords replaced; per-codebook MSE %s", self.method,
                    self.base, trainer.replaced, [round(v, 6) for v in inner.inertia.tolist()])

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner._encode(x)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.inner._decode(codes)

    # analysis surface of the base quantizer
    @property
    def codebooks(self) -> torch.Tensor:
        return self.inner.codebooks

    @property
    def inertia(self) -> torch.Tensor:
        return self.inner.inertia

    def subspace_indices(self) -> list[torch.Tensor]:
        return self.inner.subspace_indices()

    def distortion(self, x: Any) -> float:
        return self.inner.distortion(x)

    def sub_decode(self, codes: Any) -> list[torch.Tensor]:
        """Per-sub-quantizer reconstructions (PQ/RPQ bases; K-means has a single codebook)."""
        return self.inner.sub_decode(codes)

    def _config(self) -> dict[str, Any]:
        return {"base": self.base, "init_iter": self.init_iter, "base_conf": dict(self.base_conf),
                "trainer_conf": dict(self.trainer_conf)}

    def _state(self) -> dict[str, torch.Tensor]:
        return self.inner._state()

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.inner.dim = self.dim
        self.inner.meta = self.meta
        self.inner._load_state(state)


class STEVQ(GradientVQ):
    """:class:`GradientVQ` trained with the straight-through estimator (method ``"ste"``)."""

    method = "ste"
