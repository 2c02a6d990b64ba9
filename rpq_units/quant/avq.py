"""Additive quantization (AQ): Babenko & Lempitsky, "Additive Quantization for Extreme Vector
Compression", CVPR 2014.

M codebooks of K full-dimension codewords; a frame is the sum of one codeword from each::

    x_hat = sum_m c^m_{i_m}

Unlike residual VQ, codebooks are not tied to an order. Encoding is a beam search over codebooks
in *free order*: the ``beam_width`` best partial sums are kept; each step tries, for every
hypothesis, every codeword of every codebook the hypothesis has not used yet, scored with

    ||x - s - c||^2 = ||x - s||^2 - 2 <x - s, c> + ||c||^2,

where ``<x - s, c>`` is updated from ``<x, c>`` and the codeword Gram matrix, so each step costs a
gather instead of a matmul. Hypotheses that reach the same codeword set in another order are
merged. After M steps the best full hypothesis is the code. The encoder also runs the cheap
stage-order beam search of residual VQ and keeps, per frame, whichever code is better.

Training alternates encoding and a joint least-squares update of all M*K codewords given the
codes: with ``B`` the (N, MK) binary code matrix, solve

    (B^T B + lambda I) C = B^T X + lambda C_prev

(a ridge towards the previous codebooks: it fixes the gauge freedom of adding a vector to one
codebook and subtracting it from another, and keeps unused codewords where they were). The
codebooks start from residual VQ (:mod:`rpq_units.quant.rvq`, trained with the same beam). A frame
keeps its previous code when the new search finds a worse one, so the training error never
grows. This is the ``lsq`` trainer (default); ``trainer: nsvq`` or ``ste`` instead trains the
codebooks from the same initialisation by gradient descent through the free-order beam search
(:meth:`rpq_units.quant.nsvq.GradientTrainer.train_additive`; the STE-trained additive codebooks of
``conf/units/avq_ste.yaml``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from tqdm import tqdm

from rpq_units.quant.base import GRADIENT_TRAINERS, at_least
from rpq_units.quant.rvq import ResidualVectorQuantizer, SumOfCodewords, residual_beam_encode
from rpq_units.quant.search import pad_rows, sum_codewords, topk

logger = logging.getLogger(__name__)


def _code_hash_weights(m: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator(device="cpu")
    g.manual_seed(1234567)
    return torch.randint(1, 2**62, (m,), generator=g, dtype=torch.long).to(device)


def _sq_errors(x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``||x - sum_m c^m_{i_m}||^2`` per frame: x (N, D), codebooks (M, K, D), codes (N, M) -> (N,)."""
    return (x - sum_codewords(codebooks, codes)).pow(2).sum(-1)


@torch.no_grad()
def additive_beam_encode(
    x: torch.Tensor, codebooks: torch.Tensor, beam_width: int = 16, chunk: int | None = None
) -> torch.Tensor:
    """Free-order beam search. x: (N, D), codebooks: (M, K, D) -> codes (N, M) int64."""
    n, d = x.shape
    m_books, k, _ = codebooks.shape
    mk = m_books * k
    flat = codebooks.reshape(mk, d)
    gram = flat @ flat.T  # (MK, MK)
    cn = gram.diagonal().clone()  # (MK,)
    book_of = torch.arange(m_books, device=x.device).repeat_interleave(k)  # (MK,)
    hw = _code_hash_weights(m_books, x.device)
    beam = max(1, min(beam_width, mk))
    if chunk is None:
        chunk = max(1, (1 << 23) // (beam * mk))
    out = torch.empty(n, m_books, dtype=torch.long, device=x.device)
    for s in range(0, n, chunk):
        xc = x[s : s + chunk]
        nc = xc.shape[0]
        ar = torch.arange(nc, device=x.device).unsqueeze(1)
        ip0 = (pad_rows(xc) @ flat.T)[:nc]  # (n, MK) = <x, c>
        # step 1: best single codewords
        rn, j = topk(xc, flat, beam)  # (n, b)
        ip = ip0.unsqueeze(1) - gram[j]  # (n, b, MK) = <x - s, c>
        codes = torch.full((nc, beam, m_books), -1, dtype=torch.long, device=x.device)
        codes.scatter_(2, book_of[j].unsqueeze(-1), (j % k).unsqueeze(-1))
        for step in range(1, m_books):
            last = step == m_books - 1  # the last step needs the single best full hypothesis
            b = codes.shape[1]
            dist = torch.add(cn, ip, alpha=-2.0).add_(rn.unsqueeze(-1))  # (n, b, MK)
            used = (codes >= 0).unsqueeze(-1)  # (n, b, M, 1)
            dist.view(nc, b, m_books, k).masked_fill_(used, float("inf"))
            # the beam best extensions of each hypothesis, then the beam best of those
            per = 1 if last else min(beam, k)  # a hypothesis always has >= K unused codewords
            cand_d, cand_j = dist.topk(per, dim=2, largest=False)  # (n, b, per)
            cand_d = cand_d.reshape(nc, b * per)
            cand_j = cand_j.reshape(nc, b * per)
            cand_h = torch.arange(b, device=x.device).repeat_interleave(per).expand(nc, -1)
            new_codes = codes[ar, cand_h].clone()  # (n, b*per, M)
            new_codes.scatter_(2, book_of[cand_j].unsqueeze(-1), (cand_j % k).unsqueeze(-1))
            # merge hypotheses holding the same codeword set (reached in another order)
            key = ((new_codes + 1) * hw).sum(-1)  # (n, b*per), wraps on overflow
            skey, order = key.sort(dim=1, stable=True)
            dup_sorted = torch.zeros_like(skey, dtype=torch.bool)
            dup_sorted[:, 1:] = skey[:, 1:] == skey[:, :-1]
            dup = torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)
            cand_d = cand_d.masked_fill(dup, float("inf"))
            nb = 1 if last else min(beam, b * per)
            rn, pick = cand_d.topk(nb, dim=1, largest=False)
            h, j = cand_h.gather(1, pick), cand_j.gather(1, pick)
            codes = new_codes.gather(1, pick.unsqueeze(-1).expand(-1, -1, m_books))
            if not last:
                ip = ip[ar, h].sub_(gram[j])
        out[s : s + chunk] = codes[:, 0]
    return out


@torch.no_grad()
def least_squares_codebooks(
    x: torch.Tensor, codes: torch.Tensor, prev: torch.Tensor, ridge: float = 1e-3
) -> torch.Tensor:
    """Jointly optimal codebooks for fixed codes: ``argmin_C ||X - B C||^2 + ridge ||C - prev||^2``.

    x: (N, D), codes: (N, M), prev: (M, K, D) -> (M, K, D). Solved on the (MK x MK) normal
    equations, built sparsely from code co-occurrence counts, in float64.
    """
    m_books, k, d = prev.shape
    mk = m_books * k
    idx = codes + torch.arange(m_books, device=codes.device) * k  # (N, M) flat codeword ids
    pair = (idx.unsqueeze(2) * mk + idx.unsqueeze(1)).reshape(-1)
    gram = torch.bincount(pair, minlength=mk * mk).reshape(mk, mk).double()
    rhs = torch.zeros(mk, d, dtype=torch.float64, device=x.device)
    rhs.index_add_(0, idx.reshape(-1), x.double().repeat_interleave(m_books, dim=0))
    gram.diagonal().add_(ridge)
    rhs += ridge * prev.reshape(mk, d).double()
    sol = torch.linalg.solve(gram, rhs)
    return sol.float().reshape(m_books, k, d)


@torch.no_grad()
def additive_encode(x: torch.Tensor, codebooks: torch.Tensor, beam_width: int = 16) -> torch.Tensor:
    """AVQ encoder: per frame, the better of the free-order beam search
    (:func:`additive_beam_encode`) and the stage-order beam search of residual VQ
    (:func:`rpq_units.quant.rvq.residual_beam_encode`, a cheap extra hypothesis that matters when the
    codebooks still carry the coarse-to-fine order of their RVQ initialisation).

    x: (N, D), codebooks: (M, K, D) -> codes (N, M) int64.
    """
    free = additive_beam_encode(x, codebooks, beam_width)
    seq = residual_beam_encode(x, codebooks, beam_width)
    e_free = _sq_errors(x, codebooks, free)
    e_seq = _sq_errors(x, codebooks, seq)
    return torch.where((e_seq < e_free).unsqueeze(1), seq, free)


class AdditiveQuantizer(SumOfCodewords):
    """Additive VQ with free-order beam search (method ``"avq"``).

    Args (keyword-only; and those of :class:`rpq_units.quant.base.IterativeQuantizer`, with
    ``max_iter`` and ``tol`` for each stage of the RVQ initialisation):
        beam_width: hypotheses kept during the beam search (Babenko & Lempitsky use 16-64).
        num_iters: encode / least-squares alternations after the RVQ initialisation.
        ridge: lambda of the least-squares update (pulls towards the previous codebooks).
        trainer: ``"lsq"`` (least-squares alternations) or ``"nsvq"`` / ``"ste"`` (gradient
            training with ``trainer_conf``; ``num_iters`` and ``ridge`` are then unused).

    State: ``codebooks`` (M, K, D) float32.
    """

    method = "avq"
    trainers = ("lsq", "nsvq", "ste")

    def __init__(
        self, *, beam_width: int = 16, num_iters: int = 10, ridge: float = 1e-3, **options: Any
    ) -> None:
        super().__init__(**options)
        at_least("beam_width", beam_width, 1)
        at_least("num_iters", num_iters, 0)
        self.beam_width = int(beam_width)
        self.num_iters = int(num_iters)
        self.ridge = float(ridge)
        self.codebooks: torch.Tensor | None = None

    def _fit(self, x: torch.Tensor) -> None:
        x = self._training_subset(x, self.max_frames, 7919)
        rvq = ResidualVectorQuantizer(
            num_codebooks=self.num_codebooks, codebook_size=self.codebook_size, seed=self.seed,
            device=self.device, max_iter=self.max_iter, tol=self.tol, beam_width=self.beam_width,
        )
        rvq.dim = x.shape[1]
        rvq._fit(x)
        books = rvq.codebooks
        codes = rvq._encode(x)
        err = _sq_errors(x, books, codes)
        logger.info("avq init (rvq): MSE %.6g", float(err.mean()))
        if self.trainer in GRADIENT_TRAINERS:  # gradient steps through the free-order search
            books = self.gradient_trainer().train_additive(
                x, books, lambda xb, cb: additive_encode(xb, cb, self.beam_width))
            self.codebooks = books.contiguous()
            return
        for it in tqdm(range(self.num_iters), desc="avq", leave=False):
            books = least_squares_codebooks(x, codes, books, self.ridge)
            old_err = _sq_errors(x, books, codes)
            new = additive_encode(x, books, self.beam_width)
            new_err = _sq_errors(x, books, new)
            better = new_err < old_err
            codes = torch.where(better.unsqueeze(1), new, codes)
            err = torch.where(better, new_err, old_err)
            logger.info("avq iter %d/%d: MSE %.6g (%d codes changed)", it + 1, self.num_iters,
                        float(err.mean()), int(better.sum()))
        if self.num_iters:
            books = least_squares_codebooks(x, codes, books, self.ridge)
        self.codebooks = books.contiguous()

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return additive_encode(x, self.codebooks, self.beam_width)

    def _config(self) -> dict[str, Any]:
        return {"beam_width": self.beam_width, "num_iters": self.num_iters, "ridge": self.ridge,
                **super()._config()}
