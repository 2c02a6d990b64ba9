"""Codebook analysis: usage, perplexity, reconstruction error, bitrate, error correlation rho.

For frames ``x: (N, D)`` (a feature dump) and a fitted quantizer with M codebooks of K codewords,
``codes = q.encode(x)`` and ``x_hat = q.decode(codes)``:

* **usage_m**: fraction of the K codewords of codebook m used at least once.
* **perplexity_m**: ``exp(H_m)``, ``H_m = -sum_k p_mk ln p_mk`` over the code histogram of m
  (K when all codewords are equally used, 1 when one is).
* **mse**: ``1/N sum_t ||x_t - x_hat_t||^2`` (the quantization distortion: for K-means the
  k-means objective per frame); ``mse_per_dim = mse / D``; ``relative_mse`` divides by
  ``1/N sum_t ||x_t - mean(x)||^2``.
* **bitrate**: ``M log2 K`` bits per frame and that times the frame rate in bits/s (the
  nominal rate of the unit streams); ``entropy_bits_per_second`` uses ``sum_m H_m / ln 2``.
* **rho** (error correlation between sub-quantizers; the RPQ paper, arXiv 2504.04721, bounds
  the RPQ error below by ``rho * eps_kmeans``). Sub-quantizer m sees dims ``S_m`` and
  reconstructs them as ``x_hat^m``; its error on frame t is ``e^m_t = x_t[S_m] - x_hat^m_t``.
  We report two precise versions:

  - ``rho`` (error-energy correlation, defined for any M >= 2, PQ and RPQ alike): with the
    per-frame mean squared error of each sub-quantizer ``E^m_t = ||e^m_t||^2 / |S_m|``,
    ``rho = 2 / (M (M-1)) sum_{m < m'} corr_t(E^m, E^{m'})``, ``corr_t`` the Pearson
    correlation over the N frames. It is high when the sub-quantizers fail on the same frames.
  - ``rho_shared`` (RPQ, where subsets overlap): the mean, over every pair ``m < m'`` and every
    shared dimension ``d in S_m ∩ S_m'``, of ``corr_t(e^m_{t,d}, e^{m'}_{t,d})``. This is the
    correlation that enters the error of RPQ's decoder, which averages the sub-codewords that
    cover a dimension (``Var(mean) = rho sigma^2 + (1 - rho) sigma^2 / c`` for c covering
    sub-quantizers): it is ``null`` when no dimension is shared (PQ, K-means).

  Both are ``null`` for one codebook, or for quantizers without per-sub-quantizer
  reconstructions (``subspace_indices`` / ``sub_decode``).
* **dimension correlation**: the ``D x D`` Pearson correlation of the feature dimensions,
  drawn as a heatmap (the paper's Fig. 6) to ``dim_correlation.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpq_units.base import Quantizer, QuantizerError, load_quantizer
from rpq_units.shards import FeatureShards, write_text_atomic

logger = logging.getLogger(__name__)

_BLOCK = 1 << 16  # frames per encode/decode block


def _blocks(n: int, lengths: list[int] | None) -> list[tuple[int, int, list[int] | None]]:
    """``(start, end, lengths)`` blocks of about ``_BLOCK`` frames; with ``lengths`` each block
    holds whole utterances (so no window of frames is cut at a block edge)."""
    if lengths is None:
        return [(s, min(s + _BLOCK, n), None) for s in range(0, n, _BLOCK)]
    out, start, cur = [], 0, []
    for ln in lengths:
        if cur and sum(cur) + ln > _BLOCK:
            out.append((start, start + sum(cur), cur))
            start, cur = start + sum(cur), []
        cur.append(ln)
    if cur:
        out.append((start, start + sum(cur), cur))
    return out


def reconstruct(
    q: Quantizer, x: np.ndarray, lengths: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N, M)`` int64 and per-frame squared errors ``||x_t - x_hat_t||^2`` ``(N,)`` of
    frames ``x: (N, D)``, the utterances of ``lengths`` frames each (default: frame-wise)."""
    codes = np.empty((x.shape[0], q.num_codebooks), np.int64)
    sq = np.empty(x.shape[0], np.float64)
    for s, e, lens in _blocks(x.shape[0], lengths):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:e], dtype=np.float32))
        c = q.encode(xb, lens)
        xh = torch.as_tensor(q.decode(c, lens)).to(xb.device)
        codes[s:e] = c.cpu().numpy()
        sq[s:e] = ((xb.to(xh.device) - xh) ** 2).sum(1).double().cpu().numpy()
    return codes, sq


def reconstruction_mse(q: Quantizer, x: np.ndarray, lengths: list[int] | None = None) -> float:
    """``1/N sum_t ||x_t - decode(encode(x))_t||^2`` (utterances of ``lengths`` frames)."""
    return float(reconstruct(q, x, lengths)[1].mean()) if x.shape[0] else float("nan")


def code_stats(codes: np.ndarray, codebook_size: int) -> list[dict[str, float]]:
    """Per codebook: usage (fraction of codewords used), perplexity, entropy in bits."""
    out = []
    for m in range(codes.shape[1]):
        counts = np.bincount(codes[:, m], minlength=codebook_size).astype(np.float64)
        p = counts / max(counts.sum(), 1.0)
        nz = p[p > 0]
        h = float(-(nz * np.log(nz)).sum())
        out.append(
            {
                "usage": float((counts > 0).mean()),
                "used": int((counts > 0).sum()),
                "perplexity": math.exp(h),
                "entropy_bits": h / math.log(2),
            }
        )
    return out


def _pearson_cols(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of ``a, b: (N, k)`` -> ``(k,)`` (nan if constant)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def error_correlation(
    q: Quantizer, x: np.ndarray, codes: np.ndarray, max_frames: int = 100_000
) -> dict[str, Any]:
    """``rho`` and ``rho_shared`` (module docstring) plus the M x M matrix of pairwise
    error-energy correlations, on at most ``max_frames`` evenly strided frames."""
    if x.shape[0] > max_frames:
        step = math.ceil(x.shape[0] / max_frames)
        x, codes = x[::step], codes[::step]
    none = {"rho": None, "rho_shared": None, "rho_pairs": None, "shared_dims": None}
    m = q.num_codebooks
    if m < 2:
        return {**none, "rho_note": "one codebook: no pair of sub-quantizers"}
    if not (hasattr(q, "subspace_indices") and hasattr(q, "sub_decode")):
        return {**none, "rho_note": f"{q.method} exposes no per-sub-quantizer reconstruction"}
    subsets = [s.cpu().numpy() for s in q.subspace_indices()]
    errs: list[np.ndarray] = []
    for s_idx, rec in zip(subsets, q.sub_decode(torch.from_numpy(codes)), strict=True):
        errs.append(x[:, s_idx] - rec.cpu().numpy())
    energy = np.stack([(e.astype(np.float64) ** 2).mean(1) for e in errs], axis=1)  # (N, M)
    pair = np.corrcoef(energy, rowvar=False) if energy.shape[0] > 1 else np.full((m, m), np.nan)
    iu = np.triu_indices(m, 1)
    rho = float(np.nanmean(pair[iu])) if np.isfinite(pair[iu]).any() else None
    shared_corr: list[np.ndarray] = []
    shared_n = 0
    for i in range(m):
        for j in range(i + 1, m):
            common, ai, bj = np.intersect1d(subsets[i], subsets[j], return_indices=True)
            if common.size:
                shared_n += int(common.size)
                shared_corr.append(_pearson_cols(errs[i][:, ai], errs[j][:, bj]))
    rho_shared = None
    if shared_corr:
        c = np.concatenate(shared_corr)
        rho_shared = float(np.nanmean(c)) if np.isfinite(c).any() else None
    return {
        "rho": rho,
        "rho_shared": rho_shared,
        "rho_frames": int(x.shape[0]),
        "rho_pairs": np.where(np.isfinite(pair), pair, 0.0).round(6).tolist(),
        "shared_dims": shared_n,
        "rho_note": "rho: mean pairwise Pearson correlation of per-frame sub-quantizer MSE; "
        "rho_shared: mean correlation of sub-quantizer errors on shared dimensions",
    }


def dim_correlation(x: np.ndarray) -> np.ndarray:
    """``(D, D)`` Pearson correlation between feature dimensions (constant dims give 0)."""
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    sd = np.sqrt((xc * xc).sum(0))
    sd[sd == 0] = np.inf
    c = (xc.T @ xc) / np.outer(sd, sd)
    np.fill_diagonal(c, 1.0)
    return c


def plot_heatmap(corr: np.ndarray, path: str | os.PathLike, title: str) -> None:
    """Draw ``corr`` as a heatmap PNG (matplotlib, Agg backend), via a temporary name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    im = ax.imshow(corr, cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("feature dimension")
    ax.set_ylabel("feature dimension")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson correlation")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def analyze(
    *,
    codebook: str | os.PathLike,
    feats_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_frames: int | None = 200_000,
    seed: int = 0,
    device: str = "cpu",
    heatmap_frames: int = 50_000,
) -> dict[str, Any]:
    """Analyze ``codebook`` on the frames of ``feats_dir`` (a seeded subset of at most
    ``max_frames``); writes ``out_dir/analysis.json``, ``analysis.txt`` and
    ``dim_correlation.png``, and returns the report."""
    t0 = time.time()
    q = load_quantizer(codebook, device=device)
    shards = FeatureShards(feats_dir)
    if q.dim != shards.dim:
        raise QuantizerError(
            f"codebook {codebook} was trained on {q.dim}-dim features but {feats_dir} holds "
            f"{shards.dim}-dim features"
        )
    lengths = None
    if q.context_frames > 1:  # codes of windows of frames: whole utterances, never pooled frames
        x, lengths = shards.utterance_frames(max_frames, seed)
    else:
        x = shards.frames(max_frames, seed)
    if x.shape[0] == 0:
        raise QuantizerError(f"{feats_dir}: no frames to analyze")
    if not np.isfinite(x).all():
        raise QuantizerError(f"{feats_dir}: features contain NaN or Inf")
    codes, sq = reconstruct(q, x, lengths)
    mse = float(sq.mean())
    total_var = float(((x.astype(np.float64) - x.mean(0, dtype=np.float64)) ** 2).sum(1).mean())
    m, k = q.num_codebooks, q.codebook_size
    frame_rate = float(shards.info.get("frame_rate") or q.meta.get("frame_rate") or 0.0) or None
    stats = code_stats(codes, k)
    bits_per_frame = m * math.log2(k)
    entropy_bits = sum(s["entropy_bits"] for s in stats)
    report: dict[str, Any] = {
        "codebook": str(codebook),
        "feats_dir": str(feats_dir),
        "method": q.method,
        "num_codebooks": m,
        "codebook_size": k,
        "dim": q.dim,
        "upstream": q.meta.get("upstream", shards.info.get("upstream")),
        "layer": q.meta.get("layer", shards.info.get("layer")),
        "frames": int(x.shape[0]),
        "mse": mse,
        "mse_per_dim": mse / q.dim,
        "relative_mse": mse / total_var if total_var > 0 else None,
        "per_codebook": stats,
        "mean_usage": float(np.mean([s["usage"] for s in stats])),
        "mean_perplexity": float(np.mean([s["perplexity"] for s in stats])),
        "bits_per_frame": bits_per_frame,
        "frame_rate": frame_rate,
        "bits_per_second": bits_per_frame * frame_rate if frame_rate else None,
        "entropy_bits_per_second": entropy_bits * frame_rate if frame_rate else None,
    }
    report.update(error_correlation(q, x, codes))
    hx = x if x.shape[0] <= heatmap_frames else x[:: math.ceil(x.shape[0] / heatmap_frames)]
    corr = dim_correlation(hx)
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    report["dim_correlation_mean_abs"] = float(np.abs(off).mean()) if off.size else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"Feature-dimension correlation: {report['upstream']} layer {report['layer']}"
    plot_heatmap(corr, out / "dim_correlation.png", title)
    report["heatmap"] = str(out / "dim_correlation.png")
    report["seconds"] = round(time.time() - t0, 3)
    write_text_atomic(out / "analysis.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "analysis.txt", format_report(report))
    logger.info("analysis of %s written to %s", codebook, out)
    return report


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "n/a" if v is None else format(v, spec)


def format_report(r: dict[str, Any]) -> str:
    """Human-readable table of an :func:`analyze` report."""
    lines = [
        f"codebook        {r['codebook']}",
        f"method          {r['method']}  M={r['num_codebooks']}  K={r['codebook_size']}  D={r['dim']}",
        f"features        {r['feats_dir']}  ({r['upstream']} layer {r['layer']}, {r['frames']} frames)",
        f"mse             {_fmt(r['mse'])}  (per dim {_fmt(r['mse_per_dim'])}, "
        f"relative {_fmt(r['relative_mse'])})",
        f"bitrate         {r['bits_per_frame']:.2f} bits/frame, {_fmt(r['bits_per_second'], '.1f')} bits/s "
        f"(entropy {_fmt(r['entropy_bits_per_second'], '.1f')} bits/s)",
        f"rho             {_fmt(r['rho'])}  (shared dims: {_fmt(r['rho_shared'])})",
        f"dim corr |mean| {_fmt(r['dim_correlation_mean_abs'])}",
        "",
        f"{'codebook':>8}  {'usage':>7}  {'used':>6}  {'perplexity':>10}  {'entropy(bits)':>13}",
    ]
    for i, s in enumerate(r["per_codebook"]):
        lines.append(
            f"{i:>8}  {s['usage']:>7.3f}  {s['used']:>6d}  {s['perplexity']:>10.1f}  "
            f"{s['entropy_bits']:>13.3f}"
        )
    return "\n".join(lines) + "\n"
