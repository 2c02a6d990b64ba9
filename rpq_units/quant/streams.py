"""Several layers' features as unit streams side by side, each layer its own discretizer.

DASB (SpeechBrain's discrete-audio benchmark) tokenizes several layers of one upstream (e.g. 1,
3, 7, 12, 18, 23 of WavLM Large), each with its own K-means, and hands the model the codes of
all of them per frame. Here the features of those layers arrive side by side in one frame,
``x = [x^(1) | x^(2) | ... | x^(L)]`` (what ``FeatureExtractor(layer=[...])`` gives), and
layer ``l``'s slice is fit, encoded and decoded by its own quantizer of the same configuration
(any method: K-means, PQ, RPQ, ...), seeded ``seed + l``::

    q = make_quantizer("layers", inner="pq", inner_conf={"num_codebooks": 4,
                       "codebook_size": 128}, layer_dims=[768, 768])
    q.fit(x)                    # x: (N, 1536)
    codes = q.encode(x)         # (N, 8): the 4 PQ streams of layer 1, then those of layer 2

A frame's ``L * M`` codes are one tuple, as PQ's M codes are: deduplication (``src_case rm``)
removes a frame only when every layer's codes repeat, and the patch frontend embeds the tuple.
The unit id of stream ``s`` is ``s * K + code`` as for every multi-stream quantizer, so the
layers share one token list of ``L * M * K`` entries. The layers' reconstructions are joined in
the same order, so the reconstruction error is the sum of the layers' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rpq_units.quant.base import Quantizer, QuantizerError, make_quantizer


class LayerStreams(Quantizer):
    """``len(layer_dims)`` quantizers of method ``inner`` (options ``inner_conf``), one per slice
    of ``layer_dims[l]`` dimensions of each frame; codes concatenated per frame."""

    method = "layers"

    def __init__(
        self,
        *,
        inner: str,
        layer_dims: Sequence[int],
        inner_conf: dict[str, Any] | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        num_codebooks: int | None = None,
        codebook_size: int | None = None,
    ) -> None:
        """``num_codebooks`` / ``codebook_size``: the whole frame's M and K as a saved config
        records them, checked against those the layers' quantizers give (None: not checked)."""
        dims = [int(d) for d in layer_dims]
        if len(dims) < 2 or min(dims) < 1:
            raise QuantizerError(f"layers: layer_dims must name two layers or more, each of at "
                                 f"least 1 dimension (got {list(layer_dims)})")
        if inner == self.method:
            raise QuantizerError("layers: the inner method cannot itself be 'layers'")
        conf = dict(inner_conf or {})
        if "seed" in conf or "device" in conf:
            raise QuantizerError("layers: give seed and device to the layers quantizer, not in "
                                 "inner_conf")
        try:
            parts = [make_quantizer(inner, seed=int(seed) + i, device=device, **conf)
                     for i in range(len(dims))]
        except TypeError as e:
            raise QuantizerError(f"method {inner}: bad option ({e})") from e
        m, k = sum(p.num_codebooks for p in parts), parts[0].codebook_size
        if (num_codebooks, codebook_size) != (None, None) and (num_codebooks, codebook_size) != (m, k):
            raise QuantizerError(f"layers: num_codebooks {num_codebooks} and codebook_size "
                                 f"{codebook_size} differ from the layers' ({m}, {k})")
        super().__init__(num_codebooks=m, codebook_size=k, seed=seed, device=device)
        self.inner = parts[0].method  # a former method name is read as its structure
        self.inner_conf = conf
        self.layer_dims = dims
        self.parts = parts
        self.streams = all(p.streams for p in parts)
        self.context_frames = max(p.context_frames for p in parts)
        # streams [m0, m1) of the codes and dims [d0, d1) of a frame belong to part l
        self._code_edges = _edges([p.num_codebooks for p in parts])
        self._dim_edges = _edges(dims)

    def config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "inner": self.inner,
            "inner_conf": dict(self.inner_conf),
            "layer_dims": list(self.layer_dims),
            "seed": self.seed,
            "dim": self.dim,
            # the whole frame's M and K (what describers of codebooks read), checked on load
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
        }

    def _slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x[:, a:b] for a, b in self._dim_edges]

    def _fit_seq(self, x: torch.Tensor, lengths: list[int] | None) -> None:
        if x.shape[1] != sum(self.layer_dims):
            raise QuantizerError(
                f"features have dimension {x.shape[1]} but layer_dims {self.layer_dims} add up "
                f"to {sum(self.layer_dims)}"
            )
        for p, xs in zip(self.parts, self._slices(x), strict=True):
            p.fit(xs, lengths, memory_budget=self._memory_budget)

    # encode/decode have checked the frames (finite, D) and the codes (M, range) of the whole
    # frame: each layer's quantizer gets its slice through its own sequence hook, not through
    # its public encode/decode, which would check every slice again
    def _encode_seq(self, x: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        return torch.cat([p._encode_seq(xs.contiguous(), lengths)
                          for p, xs in zip(self.parts, self._slices(x), strict=True)], dim=1)

    def _decode_seq(self, codes: torch.Tensor, lengths: list[int] | None) -> torch.Tensor:
        return torch.cat([p._decode_seq(codes[:, a:b].contiguous(), lengths)
                          for p, (a, b) in zip(self.parts, self._code_edges, strict=True)], dim=1)

    def _state(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, p in enumerate(self.parts) for k, v in p._state().items()}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        for i, (p, d) in enumerate(zip(self.parts, self.layer_dims, strict=True)):
            mine = {k.split(".", 1)[1]: v for k, v in state.items() if k.split(".", 1)[0] == str(i)}
            if not mine:
                raise QuantizerError(f"layers: no state for layer {i} of {len(self.parts)}")
            p.dim = d
            p._load_state({k: v.to(p.device) for k, v in mine.items()})


def _edges(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """``[(0, s0), (s0, s0 + s1), ...]``."""
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out
