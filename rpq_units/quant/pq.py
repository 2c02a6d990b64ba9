"""K-means, product quantization (PQ) and random product quantization (RPQ).

The three split a frame ``x: (D,)`` into M sub-vectors ``x[S_m]`` and quantize each with its
own K-centroid k-means codebook, giving M unit streams per frame (codes ``(N, M)``); they differ
only in the subsets ``S_m``:

* **K-means** (the whole-vector structure; HuBERT-style units, ESPnet ``asr2``): M = 1 and
  ``S_1`` is every dimension, so a frame becomes the index of its nearest centroid,
  ``argmin_k ||x - c_k||^2``.
* **PQ** (Jegou et al., 2011): ``S_m`` are M contiguous blocks of dimensions. When D is not
  divisible by M the first ``D % M`` blocks get one extra dimension.
* **RPQ** (arXiv 2504.04721, "Random Product Quantization"): each ``S_m`` is a random subset
  of ``round(dims_ratio * D)`` dimensions, drawn without replacement inside a subset and
  independently across subsets (so a dimension may be shared by several subsets or used by
  none). The subsets come from ``seed`` through a CPU ``torch.Generator`` and are saved with
  the model. The paper's argument: random subsets lower the correlation ``rho`` between the
  sub-quantizers' errors, and the RPQ error is lower-bounded by ``rho * eps_kmeans``.

All M k-means problems are fitted together by :func:`rpq_units.quant.lloyd.fit_kmeans` (Lloyd,
1982, from a k-means++ seeding, Arthur & Vassilvitskii, 2007) on a ``(M, N, d_max)`` batch; PQ
blocks narrower than ``d_max`` are padded with zero columns, which changes no distance, and
their centroids keep zeros there.

Analysis surface (the same for the three):

* ``codebooks``: ``(M, K, d_max)`` float32; sub-codebook m is ``codebooks[m, :, :len(S_m)]``.
* :meth:`subspace_indices` -> list of M int64 tensors ``S_m`` (feature dims of sub-vector m).
* :meth:`sub_vectors` / :meth:`sub_decode`: ``x[:, S_m]`` and its reconstruction by sub-quantizer
  m, so the per-codebook error ``e_m = x[:, S_m] - sub_decode(codes)[m]`` (and ``rho``) follow.
* ``inertia``: ``(M,)`` training mean squared error of each sub-quantizer on its own sub-vector.
* ``train_distortion``: training mean over frames of ``||x - decode(encode(x))||^2``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from rpq_units.quant import lloyd, search
from rpq_units.quant.base import GRADIENT_TRAINERS, IterativeQuantizer, QuantizerError

logger = logging.getLogger(__name__)


def pq_blocks(dim: int, m: int) -> list[torch.Tensor]:
    """M contiguous blocks covering ``range(dim)``; the first ``dim % m`` get one extra dim."""
    if m > dim:
        raise QuantizerError(f"pq: num_codebooks={m} exceeds the feature dimension {dim}")
    base, extra = divmod(dim, m)
    out, start = [], 0
    for i in range(m):
        w = base + (1 if i < extra else 0)
        out.append(torch.arange(start, start + w))
        start += w
    return out


def rpq_subsets(dim: int, m: int, size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """M sorted random subsets of ``size`` dims of ``range(dim)``: without replacement inside a
    subset, independent across subsets (arXiv 2504.04721)."""
    return [torch.randperm(dim, generator=generator)[:size].sort().values for _ in range(m)]


class _SubspaceQuantizer(IterativeQuantizer):
    """Shared machinery: M codebooks on the sub-vectors ``x[:, S_m]``, learned by ``trainer``:
    ``lloyd`` (k-means, :func:`rpq_units.quant.lloyd.fit_kmeans`) or ``nsvq`` / ``ste`` (gradient
    training, :class:`rpq_units.quant.nsvq.GradientTrainer` with ``trainer_conf``, from the
    codebooks of ``max_iter`` Lloyd passes). Options: those of
    :class:`rpq_units.quant.base.IterativeQuantizer`."""

    trainers = ("lloyd", "nsvq", "ste")
    streams = True
    defaults = {"num_codebooks": 4, "codebook_size": 2000, "max_iter": 100}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.codebooks: torch.Tensor | None = None  # (M, K, d_max)
        self.inertia: torch.Tensor | None = None  # (M,)
        self.train_distortion: float | None = None
        self._dims: torch.Tensor | None = None  # (M, d_max) int64, -1 = padding
        self._widths: torch.Tensor | None = None  # (M,) int64

    # ---- subsets ---------------------------------------------------------------------------
    def _make_subsets(self, dim: int) -> list[torch.Tensor]:
        raise NotImplementedError

    def _set_subsets(self, subsets: list[torch.Tensor]) -> None:
        widths = torch.tensor([len(s) for s in subsets], dtype=torch.long)
        dims = torch.full((len(subsets), int(widths.max())), -1, dtype=torch.long)
        for i, s in enumerate(subsets):
            dims[i, : len(s)] = s
        self._dims, self._widths = dims.to(self.device), widths.to(self.device)

    def subspace_indices(self) -> list[torch.Tensor]:
        """Feature dimensions ``S_m`` of each sub-vector: M int64 tensors (on ``device``)."""
        self._check_fitted()
        return [self._dims[i, : int(w)] for i, w in enumerate(self._widths.tolist())]

    # ---- analysis helpers ------------------------------------------------------------------
    def sub_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, D)`` -> ``(M, N, d_max)``: sub-vector m in ``[m, :, :len(S_m)]``, zero padded
        (for the whole-vector structure, a view of x)."""
        n = x.shape[0]
        m, dmax = self._dims.shape
        if m == 1 and dmax == x.shape[1]:  # one sorted subset of all D dims: x itself
            return x.unsqueeze(0)
        out = torch.zeros(m, n, dmax, dtype=torch.float32, device=x.device)
        for i, s in enumerate(self.subspace_indices()):
            out[i, :, : len(s)] = x.index_select(1, s.to(x.device))
        return out

    @torch.no_grad()
    def sub_decode(self, codes: Any) -> list[torch.Tensor]:
        """codes ``(N, M)`` -> M tensors ``(N, len(S_m))``: each sub-quantizer's reconstruction
        of its own sub-vector ``x[:, S_m]``."""
        c = torch.as_tensor(codes, device=self.device).long()
        return [
            self.codebooks[i].index_select(0, c[:, i])[:, : len(s)]
            for i, s in enumerate(self.subspace_indices())
        ]

    def distortion(self, x: Any) -> float:
        """Mean over frames of ``||x - decode(encode(x))||^2`` for ``x: (N, D)``."""
        t = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        x_hat = torch.as_tensor(self.decode(self.encode(x)), device=self.device)
        return float(((t - x_hat) ** 2).sum(1).mean())

    # ---- Quantizer hooks -------------------------------------------------------------------
    def _fit(self, x: torch.Tensor) -> None:
        self._set_subsets(self._make_subsets(x.shape[1]))
        x = self._training_subset(x, self.max_frames, 1)
        if x.shape[0] < self.codebook_size:
            raise QuantizerError(
                f"max_frames={self.max_frames} leaves {x.shape[0]} frames, fewer than "
                f"codebook_size={self.codebook_size}"
            )
        self._fit_extra(x)
        sub = self.sub_vectors(x)
        self.codebooks, self.inertia = lloyd.fit_kmeans(
            sub, self.codebook_size, max_iter=self.max_iter, tol=self.tol, seed=self.seed,
            device=self.device, memory_budget=getattr(self, "_memory_budget", None),
        )
        if self.trainer in GRADIENT_TRAINERS:
            trainer = self.gradient_trainer()
            self.codebooks = trainer.train_product(sub, self.codebooks, self._widths)
            self.inertia = search.assign(sub, self.codebooks)[1].mean(1)
            logger.info("%s: %d dead codewords replaced", self.trainer, trainer.replaced)
        del sub
        self.train_distortion = self._train_distortion(x)
        logger.info(
            "%s M=%d K=%d D=%d: per-codebook inertia %s, distortion %.6g",
            self.method, self.num_codebooks, self.codebook_size, self.dim,
            [round(v, 6) for v in self.inertia.tolist()], self.train_distortion,
        )

    def _fit_extra(self, x: torch.Tensor) -> None:
        """Hook for statistics a subclass needs from the training frames."""

    def _train_distortion(self, x: torch.Tensor) -> float:
        return self.distortion(x)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        codes, _ = search.assign(self.sub_vectors(x), self.codebooks)
        return codes.transpose(0, 1).contiguous()

    def _state(self) -> dict[str, torch.Tensor]:
        return {
            "codebooks": self.codebooks,
            "inertia": self.inertia,
            "dims": self._dims,
            "widths": self._widths,
            "train_distortion": torch.tensor(float(self.train_distortion)),
        }

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        dims, widths, cb = state["dims"].long(), state["widths"].long(), state["codebooks"].float()
        m = self.num_codebooks
        if dims.shape[0] != m or widths.shape != (m,) or cb.shape != (m, self.codebook_size, dims.shape[1]):
            raise QuantizerError(
                f"{self.method} state: codebooks {tuple(cb.shape)} / dims {tuple(dims.shape)} do not "
                f"match M={m}, K={self.codebook_size}"
            )
        if int(dims.max()) >= self.dim:
            raise QuantizerError(f"{self.method} state: dimension index beyond D={self.dim}")
        self._dims, self._widths = dims.to(self.device), widths.to(self.device)
        self.codebooks = cb.to(self.device).contiguous()
        self.inertia = state["inertia"].to(self.device)
        self.train_distortion = float(state["train_distortion"])


class ProductQuantizer(_SubspaceQuantizer):
    """PQ: M contiguous blocks of dimensions, one K-means codebook each.

    Keyword-only args: ``num_codebooks`` (M), ``codebook_size`` (K), ``seed``, ``device``,
    ``max_iter``, ``tol``, ``max_frames`` (fit on a seeded subset of at most this many frames),
    ``trainer`` (``lloyd``, ``nsvq`` or ``ste``) and ``trainer_conf``.
    Block m covers ``S_m`` (see :func:`pq_blocks`); decode concatenates the M sub-codewords.
    With M = 1 this is :class:`KMeansQuantizer`.
    """

    method = "pq"

    def _make_subsets(self, dim: int) -> list[torch.Tensor]:
        return pq_blocks(dim, self.num_codebooks)

    def _train_distortion(self, x: torch.Tensor) -> float:
        # Blocks partition the dimensions: the full squared error is the sum of the blocks'.
        return float(self.inertia.sum())

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        out = torch.empty(codes.shape[0], self.dim, dtype=torch.float32, device=self.device)
        for s, rec in zip(self.subspace_indices(), self.sub_decode(codes), strict=True):
            out[:, s] = rec
        return out


class KMeansQuantizer(ProductQuantizer):
    """K-means units: the whole-vector structure, one codebook over all D dims (M = 1).

    Keyword-only args: as :class:`ProductQuantizer`, with ``num_codebooks`` 1 (use ``pq`` or
    ``rpq`` for several streams). Saved state: ``codebooks`` (1, K, D) and ``inertia`` (1,).
    """

    method = "kmeans"

    def __init__(self, *, num_codebooks: int = 1, **options: Any) -> None:
        if num_codebooks != 1:
            raise QuantizerError(
                f"kmeans has a single codebook (num_codebooks=1), got {num_codebooks}; "
                "use method 'pq' or 'rpq' for several unit streams"
            )
        super().__init__(num_codebooks=1, **options)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"codebooks": self.codebooks, "inertia": self.inertia}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        cb = state["codebooks"]
        if cb.dim() != 3 or tuple(cb.shape) != (1, self.codebook_size, self.dim):
            raise QuantizerError(
                f"kmeans state: codebooks of shape {tuple(cb.shape)} do not match "
                f"(1, {self.codebook_size}, {self.dim})"
            )
        self._set_subsets(self._make_subsets(self.dim))
        self.codebooks = cb.float().to(self.device).contiguous()
        self.inertia = state["inertia"].float().to(self.device)
        self.train_distortion = float(self.inertia.sum())


class RandomProductQuantizer(_SubspaceQuantizer):
    """RPQ (arXiv 2504.04721): M random subsets of ``round(dims_ratio * D)`` dimensions.

    Keyword-only args: as :class:`ProductQuantizer`, plus ``dims_ratio`` (p, default ``1/M``).
    The subsets are drawn from ``seed`` (CPU ``torch.Generator``), saved in the state and
    reloaded, never redrawn.

    Decode: a dimension covered by several subsets is reconstructed as the mean of the
    sub-codewords covering it; a dimension covered by none gets its training mean (stored as
    ``dim_mean``).
    """

    method = "rpq"

    def __init__(self, *, dims_ratio: float | None = None, **options: Any) -> None:
        super().__init__(**options)
        if dims_ratio is None:
            dims_ratio = 1.0 / self.num_codebooks
        if not 0.0 < float(dims_ratio) <= 1.0:
            raise QuantizerError(f"dims_ratio must be in (0, 1], got {dims_ratio}")
        self.dims_ratio = float(dims_ratio)
        self.dim_mean: torch.Tensor | None = None  # (D,)

    def subset_size(self, dim: int) -> int:
        """``round(dims_ratio * D)`` (halves round up), at least 1."""
        return max(1, min(dim, int(math.floor(self.dims_ratio * dim + 0.5))))

    def _make_subsets(self, dim: int) -> list[torch.Tensor]:
        return rpq_subsets(dim, self.num_codebooks, self.subset_size(dim), self._generator(2))

    def _fit_extra(self, x: torch.Tensor) -> None:
        self.dim_mean = x.mean(0).to(self.device)

    def _train_distortion(self, x: torch.Tensor) -> float:
        rows = lloyd.stream_rows(x.unsqueeze(0), getattr(self, "_memory_budget", None))
        if rows is None:
            return self.distortion(x)
        total = 0.0  # frames streamed from host memory, as in the fit
        for _, _, xd in lloyd.host_chunks(x.unsqueeze(0), rows, self.device):
            total += float((xd[0] - self._decode(self._encode(xd[0]))).pow(2).sum(1).double().sum())
        return total / x.shape[0]

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        n = codes.shape[0]
        acc = torch.zeros(n, self.dim, dtype=torch.float32, device=self.device)
        cover = torch.zeros(self.dim, dtype=torch.float32, device=self.device)
        for s, rec in zip(self.subspace_indices(), self.sub_decode(codes), strict=True):
            acc.index_add_(1, s, rec)
            cover.index_add_(0, s, torch.ones(len(s), device=self.device))
        out = acc / cover.clamp_min(1.0)
        unused = cover == 0
        if bool(unused.any()):
            out[:, unused] = self.dim_mean[unused]
        return out

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "dims_ratio": self.dims_ratio}

    def _state(self) -> dict[str, torch.Tensor]:
        return {**super()._state(), "dim_mean": self.dim_mean}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        super()._load_state(state)
        self.dim_mean = state["dim_mean"].float().to(self.device)
