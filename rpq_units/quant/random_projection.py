"""BEST-RQ's random-projection quantizer (Chiu et al., "Self-supervised Learning with
Random-projection Quantizer for Speech Recognition", ICML 2022).

Nothing is learned but per-dimension normalisation statistics. For frames ``x_t`` (e.g. 80-dim
log-mel) and codebook m of M:

    z_t = (x_t - mean) / std                                    per dim, statistics from fit
    s_t = [z_t; z_{t+1}; ...; z_{t+S-1}]                        S stacked frames (S*D)
    y_t = P_m s_t / ||P_m s_t||                                 frozen Xavier-uniform P_m (p x S*D)
    code_t = argmin_k || y_t - u_{m,k} ||,   u_{m,k} = c_{m,k} / ||c_{m,k}||,   c ~ N(0, I_p)

(BEST-RQ: S = 4, p = 16, K = 8192.) ``encode`` gives one code per frame: the window of frame t
starts at t, and frames past the end of the utterance repeat its last frame. Frames of several
utterances are passed with ``lengths`` (frames per utterance; without it the input is one
utterance): ``fit``, ``encode`` and ``decode`` stack windows inside each utterance only, never
across the boundary between two. Every ``S``-th code of an utterance (``codes[::S]``) is
BEST-RQ's non-overlapping 40 ms label.

``decode`` cannot invert the projection (it drops the norm and maps S*D dims to p per codebook).
It returns a least-squares pre-image: for each codebook, the chosen unit codeword scaled by the
mean projection norm ``||P_m s||`` seen in fit is mapped back through the Moore-Penrose
pseudo-inverse of ``P_m`` (the minimum-norm stacked vector whose projection equals it); the M
pre-images are averaged (a joint solve through the stacked projections would fit the M
inconsistent targets exactly and blow up once M*p approaches S*D), each window's S frames are
averaged into the frames it covers, and the normalisation is undone. It is deterministic and has
the input's shape, but it is not a reconstruction in the distortion sense: expect an error near
the feature variance from ``analyze``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from rpq_units.quant.base import Quantizer, QuantizerError, as_tensor, at_least, check_lengths
from rpq_units.quant.search import assign_cosine, pad_rows

logger = logging.getLogger(__name__)


def window_index(n: int, stack: int, lengths: list[int] | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, stack) frame indices of each frame's window: row t is t .. t+stack-1, clamped to the
    last frame of t's utterance (``lengths`` frames each, summing to n; default one utterance)."""
    last = torch.full((n,), n - 1, dtype=torch.long, device=device)
    if lengths is not None:
        lens = torch.as_tensor(lengths, dtype=torch.long, device=device)
        last = torch.repeat_interleave(torch.cumsum(lens, 0) - 1, lens)
    idx = torch.arange(n, device=device).unsqueeze(1) + torch.arange(stack, device=device)
    return torch.minimum(idx, last.unsqueeze(1))


def stack_frames(z: torch.Tensor, stack: int, lengths: list[int] | None = None) -> torch.Tensor:
    """z: (N, D) -> (N, stack*D): row t is z_t .. z_{t+stack-1} within t's utterance
    (``lengths``; default one), past-the-end rows repeating the utterance's last frame."""
    n = z.shape[0]
    return z[window_index(n, stack, lengths, z.device)].reshape(n, -1)


class RandomProjectionQuantizer(Quantizer):
    """BEST-RQ random-projection quantizer (method ``"random_projection"``).

    Args (keyword-only):
        num_codebooks: M independent projections and codebooks (one code stream each).
        codebook_size: K codewords per codebook (BEST-RQ: 8192).
        proj_dim: p, the projection's output dimension (BEST-RQ: 16).
        stack_frames: S frames stacked before the projection (BEST-RQ: 4).
        seed: projections and codebooks are drawn from it (codebook m from ``seed + m``).

    State: ``mean``, ``std`` (D,), ``projection`` (M, p, S*D), ``codebook`` (M, K, p) unit rows,
    ``scale`` (M,) mean projection norm.
    """

    method = "random_projection"
    trainers = ("frozen",)  # nothing is learned but the per-dim statistics
    defaults = {"num_codebooks": 1, "codebook_size": 8192}

    def __init__(self, *, proj_dim: int = 16, stack_frames: int = 4, **options: Any) -> None:
        super().__init__(**options)
        at_least("proj_dim", proj_dim, 1)
        at_least("stack_frames", stack_frames, 1)
        self.proj_dim = int(proj_dim)
        self.stack_frames = int(stack_frames)
        self.mean = self.std = self.projection = self.codebook = self.scale = None

    @property
    def context_frames(self) -> int:  # type: ignore[override]
        return self.stack_frames

    def fit(self, x: Any, lengths: Any = None, *,
            memory_budget: int | None = None) -> RandomProjectionQuantizer:
        """Gather the per-dim mean and std of ``x: (N, D)`` (utterances of ``lengths`` frames,
        default one) and draw the frozen projection and codebook; nothing else is fitted, so
        any N >= 2 will do (``memory_budget`` has nothing to stream here and is ignored)."""
        t = as_tensor(x, self.device, "training features")
        if t.shape[0] < 2:
            raise QuantizerError("training features: need at least 2 frames for mean/std")
        lens = check_lengths(lengths, t.shape[0])
        self.dim = int(t.shape[1])
        self._fit_seq(t, lens)
        return self

    def draw(self, dim: int) -> RandomProjectionQuantizer:
        """Draw the frozen projections and codebooks for ``dim``-dim frames without data, with
        identity normalisation (mean 0, std 1, scale 1): for callers that normalise frames
        themselves (BEST-RQ pre-training normalises each utterance). Same seed, same draws as
        ``fit``."""
        self.dim = int(dim)
        self._draw(self.dim)
        self.mean = torch.zeros(self.dim, device=self.device)
        self.std = torch.ones(self.dim, device=self.device)
        self.scale = torch.ones(self.num_codebooks, device=self.device)
        return self

    def _fit(self, x: torch.Tensor) -> None:
        self._fit_seq(x, None)

    def _fit_seq(self, x: torch.Tensor, lengths: list[int] | None) -> None:
        self.mean = x.mean(0)
        self.std = x.std(0).clamp_min(1e-5)
        self._draw(x.shape[1])
        stacked = stack_frames((x - self.mean) / self.std, self.stack_frames, lengths)
        self.scale = torch.einsum("mpe,ne->mnp", self.projection, stacked).norm(dim=2).mean(1)

    def _draw(self, d: int) -> None:
        s, p, k = self.stack_frames, self.proj_dim, self.codebook_size
        proj, books = [], []
        for m in range(self.num_codebooks):
            g = self._generator(m)
            bound = math.sqrt(6.0 / (s * d + p))  # Xavier (Glorot) uniform
            proj.append((torch.rand(p, s * d, generator=g) * 2.0 - 1.0) * bound)
            c = torch.randn(k, p, generator=g)
            books.append(c / c.norm(dim=1, keepdim=True).clamp_min(1e-12))
        self.projection = torch.stack(proj).to(self.device)
        self.codebook = torch.stack(books).to(self.device)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode_seq(x, None)

    def _encode_seq(self, x: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        stacked = stack_frames((x - self.mean) / self.std, self.stack_frames, lengths)
        codes = torch.empty(x.shape[0], self.num_codebooks, dtype=torch.long, device=x.device)
        for m in range(self.num_codebooks):
            proj = (pad_rows(stacked) @ self.projection[m].T)[: x.shape[0]]
            codes[:, m] = assign_cosine(proj, self.codebook[m])
        return codes

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self._decode_seq(codes, None)

    def _decode_seq(self, codes: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        n, d, s = codes.shape[0], self.dim, self.stack_frames
        if n == 0:
            return torch.zeros(0, d, device=self.device)
        windows = torch.zeros(n, s * d, device=self.device)
        for m in range(self.num_codebooks):
            pinv = torch.linalg.pinv(self.projection[m].double()).float()  # (S*D, p)
            windows += (self.codebook[m][codes[:, m]] * self.scale[m]) @ pinv.T
        windows = (windows / self.num_codebooks).reshape(n, s, d)  # pre-image of each window
        frame = window_index(n, s, lengths, self.device)
        z = torch.zeros(n, d, device=self.device).index_add_(0, frame.reshape(-1),
                                                             windows.reshape(-1, d))
        count = torch.bincount(frame.reshape(-1), minlength=n).clamp_min(1).unsqueeze(1)
        return z / count * self.std + self.mean

    def _config(self) -> dict[str, Any]:
        return {"proj_dim": self.proj_dim, "stack_frames": self.stack_frames}

    def _state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "projection": self.projection,
                "codebook": self.codebook, "scale": self.scale}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        proj, book = state["projection"].float(), state["codebook"].float()
        want = (self.num_codebooks, self.proj_dim, self.stack_frames * int(self.dim or 0))
        if tuple(proj.shape) != want or tuple(book.shape) != (
            self.num_codebooks, self.codebook_size, self.proj_dim
        ):
            raise QuantizerError(
                f"random_projection state: projection {tuple(proj.shape)} / codebook "
                f"{tuple(book.shape)} do not match the config"
            )
        self.mean, self.std = state["mean"].float(), state["std"].float()
        self.projection, self.codebook = proj, book
        self.scale = state["scale"].float()
