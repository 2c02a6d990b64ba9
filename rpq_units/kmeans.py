"""K-means discretizer: one codebook of K centroids, one unit stream (M = 1).

The baseline of discrete speech units (HuBERT-style units, ESPnet ``asr2``): each frame
``x: (D,)`` becomes the index of its nearest centroid, ``argmin_k ||x - c_k||^2``.
Centroids are learned with Lloyd's algorithm (Lloyd, 1982) from a k-means++ seeding
(Arthur & Vassilvitskii, 2007); see :mod:`rpq_units.lloyd`.

Analysis surface (shared with :mod:`rpq_units.pq`): ``codebooks`` is a ``(1, K, D)`` tensor,
:meth:`KMeansQuantizer.subspace_indices` returns ``[arange(D)]`` and ``sub_vectors`` /
``sub_decode`` exist as for PQ, so per-sub-quantizer tools
(usage, reconstruction error, error correlation) treat K-means as PQ with ``M = 1``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rpq_units import lloyd, search
from rpq_units.base import Quantizer, QuantizerError

logger = logging.getLogger(__name__)


def subsample(x: torch.Tensor, max_frames: int | None, generator: torch.Generator) -> torch.Tensor:
    """At most ``max_frames`` rows of ``x: (N, D)``, drawn without replacement (seeded, sorted)."""
    n = x.shape[0]
    if max_frames is None or max_frames <= 0 or n <= max_frames:
        return x
    idx = torch.randperm(n, generator=generator)[:max_frames].sort().values
    logger.info("fitting on a random subset of %d of %d frames", max_frames, n)
    return x.index_select(0, idx.to(x.device))


class KMeansQuantizer(Quantizer):
    """K-means units (M = 1).

    Args (keyword-only):
        num_codebooks: must be 1 (use ``pq``/``rpq`` for several streams).
        codebook_size: K, the number of centroids.
        seed: seeds the k-means++ draws (and the ``max_frames`` subset): same seed and data,
            same codebook and codes.
        device: where fitting and encoding run (``"cpu"``, ``"cuda"``, ...).
        max_iter: maximum Lloyd passes.
        tol: stop when the relative change of the objective falls under ``tol``.
        max_frames: fit on a seeded random subset of at most this many frames (``None``: all).

    Attributes (after ``fit``/``load``):
        codebooks: ``(1, K, D)`` float32 centroids.
        inertia: ``(1,)`` float32, mean squared distance of the training frames to their nearest
            centroid; equals :meth:`distortion` on the training frames.
    """

    method = "kmeans"
    streams = True

    def __init__(
        self,
        *,
        num_codebooks: int = 1,
        codebook_size: int = 2000,
        seed: int = 0,
        device: str | torch.device = "cpu",
        max_iter: int = 100,
        tol: float = 1e-4,
        max_frames: int | None = None,
    ) -> None:
        if num_codebooks != 1:
            raise QuantizerError(
                f"kmeans has a single codebook (num_codebooks=1), got {num_codebooks}; "
                "use method 'pq' or 'rpq' for several unit streams"
            )
        super().__init__(
            num_codebooks=num_codebooks, codebook_size=codebook_size, seed=seed, device=device
        )
        if max_iter < 1:
            raise QuantizerError(f"max_iter must be >= 1, got {max_iter}")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.codebooks: torch.Tensor | None = None
        self.inertia: torch.Tensor | None = None

    # ---- analysis surface ----------------------------------------------------------------
    def subspace_indices(self) -> list[torch.Tensor]:
        """Feature dimensions each sub-quantizer sees: ``[arange(D)]`` (one int64 tensor)."""
        self._check_fitted()
        return [torch.arange(self.dim, device=self.device)]

    def sub_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, D)`` -> ``(1, N, D)`` (the single "sub-vector" is the whole frame)."""
        return x.unsqueeze(0)

    @torch.no_grad()
    def sub_decode(self, codes: Any) -> list[torch.Tensor]:
        """codes ``(N, 1)`` -> ``[(N, D)]``: the centroid of each frame."""
        c = torch.as_tensor(codes, device=self.device).long()
        return [self.codebooks[0].index_select(0, c[:, 0])]

    def distortion(self, x: Any) -> float:
        """Mean over frames of ``||x - decode(encode(x))||^2`` for ``x: (N, D)``."""
        t = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        x_hat = torch.as_tensor(self.decode(self.encode(x)), device=self.device)
        return float(((t - x_hat) ** 2).sum(1).mean())

    # ---- Quantizer hooks -----------------------------------------------------------------
    def _fit(self, x: torch.Tensor) -> None:
        x = subsample(x, self.max_frames, self._generator(1))
        if x.shape[0] < self.codebook_size:
            raise QuantizerError(
                f"max_frames={self.max_frames} leaves {x.shape[0]} frames, fewer than "
                f"codebook_size={self.codebook_size}"
            )
        cent, inertia = lloyd.fit_kmeans(
            x.unsqueeze(0), self.codebook_size, max_iter=self.max_iter, tol=self.tol,
            seed=self.seed, device=self.device, memory_budget=getattr(self, "_memory_budget", None),
        )
        self.codebooks = cent
        self.inertia = inertia
        logger.info("kmeans K=%d D=%d: inertia %.6g", self.codebook_size, self.dim, float(inertia[0]))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        codes, _ = search.assign(x.unsqueeze(0), self.codebooks)
        return codes.transpose(0, 1).contiguous()

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.codebooks[0].index_select(0, codes[:, 0])

    def _config(self) -> dict[str, Any]:
        return {"max_iter": self.max_iter, "tol": self.tol, "max_frames": self.max_frames}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"codebooks": self.codebooks, "inertia": self.inertia}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        cb = state["codebooks"]
        if cb.dim() != 3 or cb.shape[0] != 1 or cb.shape[1] != self.codebook_size or cb.shape[2] != self.dim:
            raise QuantizerError(
                f"kmeans state: codebooks of shape {tuple(cb.shape)} do not match "
                f"(1, {self.codebook_size}, {self.dim})"
            )
        self.codebooks = cb.float().contiguous()
        self.inertia = state.get("inertia")
