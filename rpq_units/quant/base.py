"""The common surface of every discretizer.

Every quantizer maps frames ``x: (N, D) float32`` to integer codes ``(N, M)`` (M unit streams
per frame; M = 1 for K-means) and back to a reconstruction ``(N, D)``::

    q = make_quantizer("rpq", num_codebooks=4, codebook_size=2000, dims_ratio=0.25, seed=0)
    q.fit(x); codes = q.encode(x); x_hat = q.decode(codes)
    blob = q.to_blob(); q2 = quantizer_from_blob(blob)  # files: rpq_units.pipeline.codebooks

A quantizer is a structure (the method: ``kmeans`` whole vector, ``pq`` contiguous blocks,
``rpq`` random subsets, ``rvq`` residual stages with beam, ``avq`` additive codebooks with
beam, ``random_projection``) times a ``trainer`` that learns its codebooks: ``lloyd``,
``progressive`` (RVQ), ``lsq`` (AVQ's least squares), ``nsvq`` / ``ste`` (gradient training,
:mod:`rpq_units.quant.nsvq`) or ``frozen``; each structure lists the ones it takes in ``trainers``::

    make_quantizer("avq", trainer="ste", num_codebooks=4, codebook_size=256)

Frames of several utterances may be passed as one array with ``lengths`` (frames per utterance,
summing to N). Quantizers whose code for frame t looks at neighbouring frames (``context_frames``
> 1, e.g. BEST-RQ's stacked windows) never let a window cross from one utterance into the next;
frame-wise quantizers (``context_frames == 1``) give the same codes with or without ``lengths``.

Saved models are plain tensors plus a JSON-able config (``torch.load(..., weights_only=True)``
reads them), never pickled library objects, so they survive library upgrades.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import numpy as np
import torch

from rpq_units.errors import QuantizerError

logger = logging.getLogger(__name__)

FORMAT = "rpq_units.quantizer/v1"

# Method name (the structure) -> "module:Class". Explicit, lazily imported (no star-import
# registry). How the codebooks are learned is the ``trainer`` option of each.
METHODS: dict[str, str] = {
    "kmeans": "rpq_units.quant.pq:KMeansQuantizer",
    "pq": "rpq_units.quant.pq:ProductQuantizer",
    "rpq": "rpq_units.quant.pq:RandomProductQuantizer",
    "rvq": "rpq_units.quant.rvq:ResidualVectorQuantizer",
    "avq": "rpq_units.quant.avq:AdditiveQuantizer",
    "random_projection": "rpq_units.quant.random_projection:RandomProjectionQuantizer",
}
#: quantizers made of those above: ``layers``, one of them per layer of multi-layer features
#: (``fit`` builds it when the features hold several layers; its codebook files load by name)
COMPOSITES: dict[str, str] = {"layers": "rpq_units.quant.streams:LayerStreams"}
#: gradient trainers (:class:`rpq_units.quant.nsvq.GradientTrainer`), for the structures that take them
GRADIENT_TRAINERS = ("nsvq", "ste")
#: former method names: ``method: nsvq`` / ``ste`` with ``base``, ``base_conf`` and ``init_iter``
#: (configs and codebook files of earlier versions) are read as ``method: <base>`` with
#: ``trainer: nsvq`` / ``ste`` and ``max_iter: <init_iter>`` (see :func:`canonical_config`)
LEGACY_METHODS = ("nsvq", "ste")


def as_tensor(x: Any, device: torch.device | str, what: str = "features") -> torch.Tensor:
    """``x`` (numpy or torch, (N, D)) as a contiguous float32 tensor on ``device``, validated."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise QuantizerError(f"{what}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if t.dim() != 2:
        raise QuantizerError(f"{what}: expected shape (N, D), got {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).sum())
        raise QuantizerError(f"{what}: {bad} of {t.shape[0]} frames contain NaN or Inf")
    return t


def check_lengths(lengths: Any, n: int, what: str = "lengths") -> list[int] | None:
    """``lengths`` (frames per utterance) as a list of ints summing to ``n``; ``None`` passes."""
    if lengths is None:
        return None
    lens = [int(v) for v in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    if any(v < 0 for v in lens) or sum(lens) != n:
        raise QuantizerError(
            f"{what}: {len(lens)} utterance lengths summing to {sum(lens)} (all >= 0) expected "
            f"to cover the {n} frames"
        )
    return lens


def at_least(name: str, value: Any, low: float) -> None:
    """The one check of an option's lower bound: ``"<name> must be >= <low>, got <value>"``."""
    if value < low:
        raise QuantizerError(f"{name} must be >= {low}, got {value}")


def like_input(y: torch.Tensor, x: Any) -> Any:
    """Return ``y`` as numpy when the caller passed numpy, else as a tensor."""
    return y.cpu().numpy() if isinstance(x, np.ndarray) else y


class Quantizer:
    """Base class. Subclasses set ``method`` and implement ``_fit``, ``_encode``, ``_decode``,
    ``_config`` (constructor kwargs beyond the common ones) and ``_state`` / ``_load_state``.

    The options every structure takes are declared and checked here, once: ``num_codebooks``
    (M >= 1), ``codebook_size`` (K >= 2), ``seed`` (>= 0), ``device``, ``trainer`` and
    ``trainer_conf``; those of the structures fitted by iterations in
    :class:`IterativeQuantizer`. A structure's constructor names only its own options and hands
    the shared ones (``**options``) down; its defaults of the shared ones are :attr:`defaults`."""

    method: str = ""
    #: this structure's values of the shared options a caller leaves out (M, K; Lloyd
    #: iterations for :class:`IterativeQuantizer`)
    defaults: dict[str, Any] = {"num_codebooks": 1, "codebook_size": 2000}
    #: the trainers this structure takes; the first is the default
    trainers: tuple[str, ...] = ("lloyd",)
    #: whether ``fit(x, memory_budget=...)`` can stream x from host memory (Lloyd-based fits)
    streams: bool = False
    context_frames: int = 1  # frames one code depends on (1: frame-wise; > 1: windows of frames)

    def __init__(
        self,
        *,
        num_codebooks: int | None = None,
        codebook_size: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        trainer: str | None = None,
        trainer_conf: dict[str, Any] | None = None,
    ) -> None:
        num_codebooks = self.defaults["num_codebooks"] if num_codebooks is None else num_codebooks
        codebook_size = self.defaults["codebook_size"] if codebook_size is None else codebook_size
        at_least("num_codebooks", num_codebooks, 1)
        at_least("codebook_size", codebook_size, 2)
        at_least("seed", seed, 0)
        self.num_codebooks = int(num_codebooks)
        self.codebook_size = int(codebook_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dim: int | None = None  # D, known after fit/load
        self.meta: dict[str, Any] = {}  # free-form provenance (upstream, layer, ...)
        trainer = self.trainers[0] if trainer is None else str(trainer)
        if trainer not in self.trainers:
            raise QuantizerError(
                f"{self.method}: unknown trainer {trainer!r}; choose one of {', '.join(self.trainers)}"
            )
        self.trainer = trainer
        self.trainer_conf = dict(trainer_conf or {})
        if self.trainer_conf and trainer not in GRADIENT_TRAINERS:
            raise QuantizerError(f"{self.method}: trainer_conf is for the gradient trainers "
                                 f"({', '.join(GRADIENT_TRAINERS)}), not {trainer!r}")
        if trainer in GRADIENT_TRAINERS:
            self.gradient_trainer()  # bad trainer_conf keys fail here, not after the fit

    # ---- public surface ------------------------------------------------------------
    def fit(self, x: Any, lengths: Any = None, *, memory_budget: int | None = None) -> Quantizer:
        """Learn codebooks from ``x: (N, D)``, the frames of utterances of ``lengths`` frames
        each (default: one sequence); returns ``self``.

        ``memory_budget`` (bytes): when the training frames are larger, methods that can
        (``streams``: K-means, PQ, RPQ) keep them in host memory and stream them to the
        device in chunks (same result as the in-memory fit); other methods fit in memory."""
        self._memory_budget = None
        where = self.device
        if memory_budget is not None:
            nbytes = int(np.prod(getattr(x, "shape", (0,)))) * 4
            if nbytes > memory_budget and self.streams and self.trainer not in GRADIENT_TRAINERS:
                self._memory_budget = int(memory_budget)
                where = torch.device("cpu")
            elif nbytes > memory_budget:
                logger.warning("%s cannot stream its training frames: fitting %.2f GB in memory "
                               "despite memory_budget=%d", self.method, nbytes / 1e9, memory_budget)
        t = as_tensor(x, where, "training features")
        lens = check_lengths(lengths, t.shape[0])
        if t.shape[0] < self.codebook_size:
            raise QuantizerError(
                f"training features: {t.shape[0]} frames is fewer than codebook_size="
                f"{self.codebook_size}; use more data or a smaller codebook"
            )
        self.dim = int(t.shape[1])
        self._fit_seq(t, lens)
        return self

    @torch.no_grad()
    def encode(self, x: Any, lengths: Any = None) -> Any:
        """``x: (N, D)`` (utterances of ``lengths`` frames, default one) -> codes ``(N, M)``
        int64 in ``[0, codebook_size)``."""
        t = as_tensor(x, self.device)
        self._check_dim(t.shape[1])
        return like_input(self._encode_seq(t, check_lengths(lengths, t.shape[0])), x)

    @torch.no_grad()
    def decode(self, codes: Any, lengths: Any = None) -> Any:
        """codes ``(N, M)`` (utterances of ``lengths`` frames, default one) -> reconstruction
        ``(N, D)`` float32."""
        self._check_fitted()
        c = torch.from_numpy(np.asarray(codes)) if isinstance(codes, np.ndarray) else codes
        c = c.to(self.device, torch.long)
        if c.dim() != 2 or c.shape[1] != self.num_codebooks:
            raise QuantizerError(
                f"codes: expected shape (N, {self.num_codebooks}), got {tuple(c.shape)}"
            )
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.codebook_size):
            raise QuantizerError(f"codes: values outside [0, {self.codebook_size})")
        return like_input(self._decode_seq(c, check_lengths(lengths, c.shape[0])), codes)

    def config(self) -> dict[str, Any]:
        """JSON-able description: enough, with the state, to rebuild the quantizer."""
        return {
            "method": self.method,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "seed": self.seed,
            "dim": self.dim,
            "trainer": self.trainer,
            "trainer_conf": dict(self.trainer_conf),
            **self._config(),
        }

    def to_blob(self) -> dict[str, Any]:
        """Config, provenance and plain CPU tensors: what a codebook file holds
        (:func:`rpq_units.pipeline.codebooks.save_codebook` writes it)."""
        self._check_fitted()
        state = {k: v.detach().cpu().contiguous() for k, v in self._state().items()}
        return {"format": FORMAT, "config": self.config(), "meta": dict(self.meta), "state": state}

    # ---- helpers for subclasses ----------------------------------------------------
    def _check_fitted(self) -> None:
        if self.dim is None:
            raise QuantizerError(f"{self.method} quantizer is not fitted (call fit or load)")

    def _check_dim(self, d: int) -> None:
        self._check_fitted()
        if d != self.dim:
            raise QuantizerError(
                f"features have dimension {d} but the {self.method} codebook was trained on "
                f"dimension {self.dim}"
            )

    def gradient_trainer(self) -> Any:
        """The :class:`rpq_units.quant.nsvq.GradientTrainer` of ``trainer`` (nsvq / ste) and
        ``trainer_conf``, seeded from ``seed``."""
        from rpq_units.quant.nsvq import GradientTrainer

        return GradientTrainer(method=self.trainer, seed=self.seed, **self.trainer_conf)

    def _training_subset(self, x: torch.Tensor, max_frames: int | None, offset: int) -> torch.Tensor:
        """At most ``max_frames`` frames of x (N, D), drawn with :meth:`_generator` (offset)."""
        from rpq_units.quant.lloyd import subsample

        sub = subsample(x, max_frames, self._generator(offset))
        if sub is not x:
            logger.info("fitting on a random subset of %d of %d frames", sub.shape[0], x.shape[0])
        return sub

    def _generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from ``seed`` (+ offset): same seed, same draws on any device."""
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed + offset)
        return g

    # ---- utterance-aware hooks: frame-wise quantizers ignore the lengths ----------------
    def _fit_seq(self, x: torch.Tensor, lengths: list[int] | None) -> None:
        self._fit(x)

    def _encode_seq(self, x: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        return self._encode(x)

    def _decode_seq(self, codes: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        return self._decode(codes)

    # ---- to implement ---------------------------------------------------------------
    def _fit(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        return {}

    def _state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class IterativeQuantizer(Quantizer):
    """A structure fitted by iterations (every one but random projection). Besides the options
    every structure takes: ``max_iter`` (>= 1) Lloyd iterations (default: the structure's
    :attr:`defaults`), ``tol`` (>= 0) their relative-objective stopping tolerance and
    ``max_frames`` (>= 1; None: all) a seeded random subset of the training frames, checked
    here and saved in the config."""

    defaults = {**Quantizer.defaults, "max_iter": 50}

    def __init__(
        self,
        *,
        max_iter: int | None = None,
        tol: float = 1e-4,
        max_frames: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        max_iter = self.defaults["max_iter"] if max_iter is None else max_iter
        at_least("max_iter", max_iter, 1)
        at_least("tol", tol, 0)
        if max_frames is not None:
            at_least("max_frames", max_frames, 1)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.max_frames = None if max_frames is None else int(max_frames)

    def _config(self) -> dict[str, Any]:
        return {"max_iter": self.max_iter, "tol": self.tol, "max_frames": self.max_frames}


def _resolve(method: str) -> type[Quantizer]:
    where = METHODS.get(method) or COMPOSITES.get(method)
    if where is None:
        raise QuantizerError(
            f"unknown quantization method {method!r}; choose one of {', '.join(sorted(METHODS))}"
        )
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


def canonical_config(method: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(method, keyword arguments) with a former method name (:data:`LEGACY_METHODS`) rewritten
    as its structure and trainer: ``nsvq`` / ``ste`` over ``base`` (kmeans, pq, rpq) with
    ``base_conf`` and ``init_iter`` Lloyd passes becomes ``<base>`` with ``trainer`` and
    ``max_iter``. Other methods pass unchanged."""
    if method not in LEGACY_METHODS:
        return method, kwargs
    kw = dict(kwargs)
    base = kw.pop("base", "pq")
    if base not in ("kmeans", "pq", "rpq"):
        raise QuantizerError(f"unknown base {base!r} for {method}; choose one of kmeans, pq, rpq")
    kw.update(kw.pop("base_conf", None) or {})
    kw["max_iter"] = kw.pop("init_iter", 1)
    kw["trainer"] = method
    return base, kw


def make_quantizer(method: str, **kwargs: Any) -> Quantizer:
    """Build an unfitted quantizer by method name (``kmeans``, ``pq``, ``rpq``, ...) and options,
    ``trainer`` among them."""
    method, kwargs = canonical_config(method, kwargs)
    return _resolve(method)(**kwargs)


def quantizer_from_blob(blob: Any, device: str | torch.device = "cpu", where: str = "blob") -> Quantizer:
    """Rebuild a quantizer from :meth:`Quantizer.to_blob`'s dict; ``where`` names its source in
    errors. Configs of earlier versions are rewritten (:func:`canonical_config`)."""
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise QuantizerError(f"{where}: not an rpq_units codebook (format {FORMAT} expected)")
    cfg = dict(blob["config"])
    method = cfg.pop("method")
    dim = cfg.pop("dim")
    method, cfg = canonical_config(method, cfg)
    q = _resolve(method)(device=device, **cfg)
    q.dim = dim
    q.meta = dict(blob.get("meta", {}))
    q._load_state({k: v.to(q.device) for k, v in blob["state"].items()})
    return q


# ---- reconstruction error of a fitted quantizer -------------------------------------------

_BLOCK = 1 << 16  # frames per encode/decode block


def _blocks(
    n: int, lengths: list[int] | None, block: int = _BLOCK
) -> list[tuple[int, int, list[int] | None]]:
    """``(start, end, lengths)`` blocks of about ``block`` frames; with ``lengths`` each block
    holds whole utterances (so no window of frames is cut at a block edge)."""
    if lengths is None:
        return [(s, min(s + block, n), None) for s in range(0, n, block)]
    out, start, cur = [], 0, []
    for ln in lengths:
        if cur and sum(cur) + ln > block:
            out.append((start, start + sum(cur), cur))
            start, cur = start + sum(cur), []
        cur.append(ln)
    if cur:
        out.append((start, start + sum(cur), cur))
    return out


def reconstruct(
    q: Quantizer, x: np.ndarray, lengths: list[int] | None = None,
    memory_budget: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N, M)`` int64 and per-frame squared errors ``||x_t - x_hat_t||^2`` ``(N,)`` of
    frames ``x: (N, D)``, the utterances of ``lengths`` frames each (default: frame-wise).

    The frames go to the quantizer's device block by block (at most ``_BLOCK`` frames, and at
    most ``memory_budget`` bytes of frames when given); only codes and errors come back."""
    codes = np.empty((x.shape[0], q.num_codebooks), np.int64)
    sq = np.empty(x.shape[0], np.float64)
    block = _BLOCK
    if memory_budget is not None and x.shape[0]:
        block = max(1, min(block, int(memory_budget) // (4 * max(1, x.shape[1]))))
    dev = torch.device(q.device)
    for s, e, lens in _blocks(x.shape[0], lengths, block):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:e], dtype=np.float32)).to(dev)
        c = q.encode(xb, lens)
        xh = torch.as_tensor(q.decode(c, lens)).to(dev)
        codes[s:e] = c.cpu().numpy()
        sq[s:e] = ((xb - xh) ** 2).sum(1).double().cpu().numpy()
    return codes, sq


def reconstruction_mse(
    q: Quantizer, x: np.ndarray, lengths: list[int] | None = None,
    memory_budget: int | None = None,
) -> float:
    """``1/N sum_t ||x_t - decode(encode(x))_t||^2`` (utterances of ``lengths`` frames; blocks
    of at most ``memory_budget`` bytes on the device, see :func:`reconstruct`)."""
    if not x.shape[0]:
        return float("nan")
    return float(reconstruct(q, x, lengths, memory_budget)[1].mean())
