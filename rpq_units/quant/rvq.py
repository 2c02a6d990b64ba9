"""Residual vector quantization (RVQ).

M codebooks of K full-dimension codewords; a frame is reconstructed as the *sum* of one codeword
per stage (Juang & Gray, 1982; the VQ-variants study of Vali & Backstrom)::

    x_hat = c^1_{i_1} + c^2_{i_2} + ... + c^M_{i_M}

Training is greedy: stage m is a k-means on the residual ``r_m = x - sum_{j<m} c^j_{i_j}`` left
by the stages before it, so the error never grows with the number of stages. The k-means is
:func:`progressive_dim_kmeans` (Lloyd iterations in growing principal subspaces, as faiss trains
its residual quantizer) by default, or plain :func:`rpq_units.quant.lloyd.fit_kmeans` with
``progressive_dim=0``. Encoding walks the stages in order; with ``beam_width = 1`` it is greedy
(nearest codeword of each stage to the current residual), with ``beam_width = B`` it keeps the B
best partial sums after each stage (beam search, as faiss ``ResidualQuantizer.max_beam_size``).
With ``beam_width > 1`` stage m is trained on the residuals of all B beam hypotheses through the
stages before it (B times the training points, as faiss does), on the best hypothesis's residual
only, or (default, ``beam_training="auto"``) the one of the two that does better on held-out
frames: training on all hypotheses wins on some data and loses by several percent on others.

The ``trainer`` option picks how each stage learns: ``progressive`` (default, the
progressive-dimension k-means above), ``lloyd`` (k-means on all dims at once), or ``nsvq`` /
``ste``, gradient descent on all stages together (:mod:`rpq_units.quant.nsvq`) from k-means++ seeds
of each stage's residual.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from rpq_units.quant.base import GRADIENT_TRAINERS, IterativeQuantizer, QuantizerError, at_least
from rpq_units.quant.lloyd import fit_kmeans
from rpq_units.quant.search import assign, sum_codewords, topk

logger = logging.getLogger(__name__)

BEAM_TRAINING = ("auto", "all", "best")


@torch.no_grad()
def progressive_dim_kmeans(
    x: torch.Tensor, k: int, *, steps: int = 10, max_iter: int = 25, tol: float = 1e-4,
    seed: int = 0,
) -> torch.Tensor:
    """K-means in growing principal subspaces (the progressive-dimension clustering that faiss
    uses to train residual quantizers). x: (N, D) -> centroids (K, D).

    The frames are rotated onto their principal axes; step i clusters the first
    ``round(D^(i/steps))`` coordinates, starting from the previous step's centroids (new
    coordinates at zero; the first step from k-means++ seeds), so the centroids settle on the
    directions of largest variance first. This finds lower-distortion optima than k-means++
    and Lloyd on the full dimension at once, notably on the near-isotropic residuals of later
    stages.
    """
    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    _, vecs = torch.linalg.eigh((xc.T @ xc).double() / n)
    rot = vecs.flip(1).to(x.dtype)  # principal axes, largest variance first
    z = xc @ rot
    cent = None
    dims = sorted({max(1, min(d, round(d ** (i / steps)))) for i in range(1, steps + 1)} | {d})
    for di in dims:
        zi = z[:, :di].contiguous()
        if cent is None:
            cent, _ = fit_kmeans(zi, k, max_iter=max_iter, tol=tol, seed=seed)
        else:
            cent = torch.cat([cent, cent.new_zeros(k, di - cent.shape[1])], dim=1)
            cent, _ = fit_kmeans(zi, k, init=cent, max_iter=max_iter, tol=tol)
    return cent @ rot.T + mean


def _rows_per_chunk(beam: int, k: int, d: int, budget: int = 1 << 24) -> int:
    return max(1, budget // max(1, beam * max(k, d)))


@torch.no_grad()
def residual_beam_search(
    x: torch.Tensor, codebooks: torch.Tensor, beam_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-order beam search keeping every hypothesis.

    x: (N, D), codebooks: (M, K, D) -> codes (N, B, M) and residuals (N, B, D) of the B best
    partial sums, best first (B = min(beam_width, K^M)).
    """
    n, d = x.shape
    m_stages, k, _ = codebooks.shape
    codes_out, res_out = [], []
    step = _rows_per_chunk(beam_width, k, d)
    for s in range(0, n, step):
        xc = x[s : s + step]
        nc = xc.shape[0]
        r = xc.unsqueeze(1)  # (n, b, D), b = 1 then beam_width
        rn = (xc * xc).sum(-1, keepdim=True)  # (n, b)
        paths = torch.zeros(nc, 1, 0, dtype=torch.long, device=x.device)
        for m in range(m_stages):
            b = r.shape[1]
            # the best ``keep`` of all b K extensions are among each hypothesis's ``keep``
            # nearest codewords (||r - c||^2 with ||r||^2 carried from the previous stage)
            keep = min(beam_width, b * k)
            per = min(keep, k)
            dist, cw_all = topk(r.reshape(nc * b, d), codebooks[m], per, x_sq=rn.reshape(-1))
            best, flat = dist.reshape(nc, b * per).topk(keep, dim=1, largest=False)
            hyp, cw = flat // per, cw_all.reshape(nc, b * per).gather(1, flat)
            ar = torch.arange(nc, device=x.device).unsqueeze(1)
            r = r[ar, hyp] - codebooks[m][cw]
            rn = best
            paths = torch.cat([paths[ar, hyp], cw.unsqueeze(-1)], dim=2)
        codes_out.append(paths)
        res_out.append(r)
    return torch.cat(codes_out), torch.cat(res_out)


@torch.no_grad()
def residual_beam_encode(
    x: torch.Tensor, codebooks: torch.Tensor, beam_width: int = 1
) -> torch.Tensor:
    """Sequential (stage order) beam search for residual codes.

    x: (N, D), codebooks: (M, K, D) -> codes (N, M) int64. ``beam_width = 1`` is greedy.
    """
    n = x.shape[0]
    m_stages = codebooks.shape[0]
    if beam_width <= 1:
        codes = torch.empty(n, m_stages, dtype=torch.long, device=x.device)
        r = x.clone()
        for m in range(m_stages):
            c, _ = assign(r.unsqueeze(0), codebooks[m : m + 1])
            codes[:, m] = c[0]
            r -= codebooks[m][c[0]]
        return codes
    return residual_beam_search(x, codebooks, beam_width)[0][:, 0].contiguous()


class SumOfCodewords(IterativeQuantizer):
    """Structures whose frame is the sum of one full-dimension codeword of each of M codebooks
    (residual, additive): decoding and the saved state, ``codebooks`` (M, K, D) float32."""

    defaults = {"num_codebooks": 4, "codebook_size": 256, "max_iter": 50}

    codebooks: torch.Tensor | None

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return sum_codewords(self.codebooks, codes)

    def _state(self) -> dict[str, torch.Tensor]:
        return {"codebooks": self.codebooks}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        books = state["codebooks"]
        if tuple(books.shape[:2]) != (self.num_codebooks, self.codebook_size):
            raise QuantizerError(
                f"{self.method} state: codebooks of shape {tuple(books.shape)} do not match "
                f"num_codebooks={self.num_codebooks}, codebook_size={self.codebook_size}"
            )
        self.codebooks = books.float().contiguous()


class ResidualVectorQuantizer(SumOfCodewords):
    """Greedy residual VQ: ``num_codebooks`` stages of ``codebook_size`` full-dimension codewords.

    Args (keyword-only; and those of :class:`rpq_units.quant.base.IterativeQuantizer`, with
    ``max_iter`` and ``tol`` for each stage's k-means):
        beam_width: hypotheses kept per stage when encoding (1 = greedy).
        progressive_dim: steps of :func:`progressive_dim_kmeans` per stage (faiss uses 10;
            5 costs about 4x one k-means and reaches nearly the same error).
        trainer: ``"progressive"`` (progressive-dimension k-means per stage), ``"lloyd"``
            (k-means on all dims per stage), ``"nsvq"`` or ``"ste"`` (gradient training, see
            :class:`rpq_units.quant.nsvq.GradientTrainer`; options in ``trainer_conf``). As in
            earlier versions' configs and files, ``"lloyd"`` with ``progressive_dim > 0`` is
            read as ``"progressive"`` and ``progressive_dim = 0`` turns it into ``"lloyd"``.
        trainer_conf: keyword arguments of :class:`rpq_units.quant.nsvq.GradientTrainer`.
        beam_training: with ``beam_width > 1``, what stage m >= 2 is trained on: ``"all"``
            (the residuals of all B beam paths through the earlier stages, as faiss),
            ``"best"`` (the best path's residual only) or ``"auto"`` (fit both ways on 90 %
            of the frames, then refit all frames the way whose beam encoding of the other
            10 % had the lower error; about 3x the fitting time).

    State: ``codebooks`` (M, K, D) float32.
    """

    method = "rvq"
    trainers = ("progressive", "lloyd", "nsvq", "ste")

    def __init__(
        self,
        *,
        beam_width: int = 1,
        progressive_dim: int = 5,
        trainer: str | None = None,
        beam_training: str = "auto",
        **options: Any,
    ) -> None:
        if trainer in (None, "lloyd", "progressive"):
            trainer = "progressive" if progressive_dim > 0 else "lloyd"
        super().__init__(trainer=trainer, **options)
        at_least("beam_width", beam_width, 1)
        at_least("progressive_dim", progressive_dim, 0)
        if beam_training not in BEAM_TRAINING:
            raise QuantizerError(
                f"unknown beam_training {beam_training!r}; choose one of {', '.join(BEAM_TRAINING)}"
            )
        self.beam_width = int(beam_width)
        self.beam_training = beam_training
        self.progressive_dim = int(progressive_dim)
        self.codebooks: torch.Tensor | None = None  # (M, K, D)

    # ---- fitting -------------------------------------------------------------------
    def _fit(self, x: torch.Tensor) -> None:
        x = self._training_subset(x, self.max_frames, 7919)
        iters = 0 if self.trainer in GRADIENT_TRAINERS else self.max_iter  # 0: k-means++ seeds
        mode = self.beam_training
        if self.beam_width > 1 and self.num_codebooks > 1 and mode == "auto":
            mode = self._choose_beam_training(x, iters)
        books = self._fit_stages(x, iters, mode)
        if self.trainer in GRADIENT_TRAINERS:
            books = self.gradient_trainer().train_residual(x, books)
        self.codebooks = books.contiguous()

    def _choose_beam_training(self, x: torch.Tensor, iters: int) -> str:
        """``"all"`` or ``"best"``: whichever, fitted on 90 % of the frames, beam-encodes the
        other 10 % with the lower error. Neither wins everywhere (bench/vq_variants), and the
        training error would favour ``"best"``, which fits its N residuals more closely than
        ``"all"`` fits its B x N."""
        n = x.shape[0]
        n_val = n // 10
        if n - n_val < self.codebook_size or n_val == 0:
            return "all"
        perm = torch.randperm(n, generator=self._generator(104729)).to(x.device)
        val, fit = x[perm[:n_val]], x[perm[n_val:]]
        err = {}
        for mode in ("all", "best"):
            books = self._fit_stages(fit, iters, mode)
            res = residual_beam_search(val, books, self.beam_width)[1][:, 0]
            err[mode] = float(res.pow(2).sum(1).mean())
        choice = min(err, key=err.get)
        logger.info("rvq beam training: held-out MSE %.6g (all paths) vs %.6g (best path): %s",
                    err["all"], err["best"], choice)
        return choice

    def _fit_stages(self, x: torch.Tensor, iters: int, mode: str) -> torch.Tensor:
        """Stage by stage codebooks (M, K, D); with a beam, stage m >= 2 is fitted on the
        residuals of all B beam paths through the earlier stages (``mode="all"``, as faiss)
        or of the best path only (``"best"``)."""
        m_stages, k, b = self.num_codebooks, self.codebook_size, self.beam_width
        books = torch.zeros(m_stages, k, x.shape[1], device=x.device)
        r = x.clone()
        for m in range(m_stages):
            books[m] = self._stage_codebook(r, m, iters)
            if b > 1 and m + 1 < m_stages:
                res = residual_beam_search(x, books[: m + 1], b)[1]
                r = res.reshape(-1, x.shape[1]) if mode == "all" else res[:, 0].contiguous()
                err = float(res[:, 0].pow(2).sum(1).mean())
            else:
                c, _ = assign(r.unsqueeze(0), books[m : m + 1])
                r = r - books[m][c[0]]
                err = float(r.pow(2).sum(1).mean())
            logger.info("rvq stage %d/%d: residual MSE %.6g", m + 1, m_stages, err)
        return books

    def _stage_codebook(self, r: torch.Tensor, m: int, iters: int) -> torch.Tensor:
        """Codebook of stage ``m`` fitted on the residuals ``r`` (rows, D)."""
        if self.trainer == "progressive":
            return progressive_dim_kmeans(r, self.codebook_size, steps=self.progressive_dim,
                                          max_iter=iters, tol=self.tol, seed=self.seed + m)
        cent, _ = fit_kmeans(r, self.codebook_size, max_iter=iters, tol=self.tol, seed=self.seed + m)
        return cent

    # ---- coding --------------------------------------------------------------------
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return residual_beam_encode(x, self.codebooks, self.beam_width)

    # ---- persistence ---------------------------------------------------------------
    def _config(self) -> dict[str, Any]:  # the keys in the order codebook files have them
        return {
            "beam_width": self.beam_width,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "progressive_dim": self.progressive_dim,
            "max_frames": self.max_frames,
            "beam_training": self.beam_training,
        }
