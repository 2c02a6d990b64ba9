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
* **rho**, the correlation between sub-quantizers of the RPQ paper (arXiv 2504.04721: "RPQ
  reduces the correlation rho (0 <= rho <= 1) between sub-quantizers, and its quantization error
  is lower-bounded by rho eps_kms"). The paper's definition is not public, so every reading its
  wording admits is computed, each by name (:data:`RHO_DEFINITIONS`). Sub-quantizer m sees
  dims ``S_m`` and reconstructs them as ``x_hat^m``; its error on frame t is
  ``e^m_t = x_t[S_m] - x_hat^m_t``.

  - ``energy`` (key ``rho``; any M >= 2, PQ and RPQ alike): with the per-frame MSE of each
    sub-quantizer ``E^m_t = ||e^m_t||^2 / |S_m|``,
    ``rho = 2 / (M (M-1)) sum_{m < m'} corr_t(E^m, E^{m'})``, ``corr_t`` the Pearson
    correlation over the N frames. High when the sub-quantizers fail on the same frames.
  - ``shared`` (key ``rho_shared``; RPQ, where subsets overlap): the mean, over every pair
    ``m < m'`` and every shared dimension ``d in S_m ∩ S_m'``, of ``corr_t(e^m_{t,d}, e^{m'}_{t,d})``.
  - ``ensemble`` (key ``rho_ensemble``; RPQ): the reading behind a bound of the form
    ``rho * eps``. RPQ's decoder averages the ``c_d`` sub-codewords covering dimension d, an
    ensemble of ``c_d`` quantizers as in bagging / random subspaces. With the errors' second
    moments ``s2_d = 1/c_d sum_{m in C_d} E[(e^m_d)^2]`` and
    ``rho_d = sum_{m != m' in C_d} E[e^m_d e^{m'}_d] / ((c_d - 1) c_d s2_d)``, the error of the
    average is exactly ``E[e_d^2] = s2_d (rho_d + (1 - rho_d) / c_d) >= rho_d s2_d``
    (``rho_d <= 1`` by Cauchy-Schwarz). Summing over dims,
    ``eps_rpq >= rho_ens * eps_sub`` with ``rho_ens = sum_d s2_d rho_d / sum_d s2_d`` (dims
    with ``c_d >= 2``) and ``eps_sub = sum_d s2_d`` (a dim covered once contributes its one
    error, an uncovered one its decode error): the bound, with ``eps_sub``, the error of one
    K-means sub-quantizer, in the place of ``eps_kms``. It is tight (equality) when the
    covering sub-quantizers are identical (rho = 1); ``ensemble_bound`` reports both sides.
  - ``codes`` (key ``rho_codes``; any M >= 2, also quantizers without sub-reconstructions): the
    dependence of the unit streams themselves, ``I(c_m; c_m') / sqrt(H_m H_m')`` averaged over
    pairs, with Miller-Madow entropy estimates (independent streams give about 0, identical 1).

  All are ``null`` for one codebook; ``energy``, ``shared`` and ``ensemble`` also for
  quantizers without per-sub-quantizer reconstructions (``subspace_indices`` / ``sub_decode``).
* **sub_mse**: each sub-quantizer's own error on its sub-vector, ``E ||e^m_t||^2 / |S_m|``.
* **dimension correlation**: the ``D x D`` Pearson correlation of the feature dimensions,
  drawn as a heatmap (the paper's Fig. 6) to ``dim_correlation.png``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpq_units.files import write_bytes_atomic, write_text_atomic
from rpq_units.pipeline.codebooks import load_quantizer
from rpq_units.pipeline.shards import FeatureShards
from rpq_units.quant.base import Quantizer, QuantizerError, reconstruct

logger = logging.getLogger(__name__)

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


RHO_DEFINITIONS = {
    "energy": "Pearson correlation over frames of two sub-quantizers' per-frame MSE, mean over pairs",
    "shared": "Pearson correlation of two sub-quantizers' errors on a dimension both cover, mean "
    "over pairs and shared dimensions",
    "ensemble": "error-energy-weighted cross moment of the errors of the sub-quantizers covering "
    "a dimension, the rho of eps = rho s^2 + (1 - rho) s^2 / c",
    "codes": "normalised mutual information of two code streams (Miller-Madow entropies), mean "
    "over pairs",
}


def sub_errors(
    q: Quantizer, x: np.ndarray, codes: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Dims ``S_m`` (M int64 arrays) and each sub-quantizer's error on its own sub-vector,
    ``e^m = x[:, S_m] - x_hat^m``: M float64 arrays ``(N, |S_m|)``."""
    subsets = [s.cpu().numpy() for s in q.subspace_indices()]
    errs = [
        x[:, s].astype(np.float64) - rec.cpu().numpy()
        for s, rec in zip(subsets, q.sub_decode(torch.from_numpy(codes)), strict=True)
    ]
    return subsets, errs


def rho_energy(errs: list[np.ndarray]) -> tuple[float | None, np.ndarray]:
    """``energy`` rho and the ``(M, M)`` matrix of pairwise correlations of the per-frame MSE
    ``E^m_t = ||e^m_t||^2 / |S_m|`` (a constant series gives nan in the matrix)."""
    m = len(errs)
    energy = np.stack([(e * e).mean(1) for e in errs], axis=1)  # (N, M)
    if m < 2 or energy.shape[0] < 2:
        return None, np.full((m, m), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        pair = np.corrcoef(energy, rowvar=False)
    vals = pair[np.triu_indices(m, 1)]
    return (float(np.nanmean(vals)) if np.isfinite(vals).any() else None), pair


def rho_shared(errs: list[np.ndarray], subsets: list[np.ndarray]) -> tuple[float | None, int]:
    """``shared`` rho and the number of (pair, shared dimension) terms it averages (0: None)."""
    corr: list[np.ndarray] = []
    for i in range(len(errs)):
        for j in range(i + 1, len(errs)):
            _, ai, bj = np.intersect1d(subsets[i], subsets[j], return_indices=True)
            if ai.size:
                corr.append(_pearson_cols(errs[i][:, ai], errs[j][:, bj]))
    if not corr:
        return None, 0
    c = np.concatenate(corr)
    return (float(np.nanmean(c)) if np.isfinite(c).any() else None), int(c.size)


def ensemble_terms(errs: list[np.ndarray], subsets: list[np.ndarray], dim: int) -> dict[str, np.ndarray]:
    """Per dimension d of ``range(dim)``: ``cover`` c_d (sub-quantizers covering d), ``s2``
    sigma_d^2 (their mean error second moment), ``rho`` rho_d (nan where c_d < 2) and ``pred``
    the error of the mean of the covering reconstructions, ``s2 (rho + (1 - rho) / c)``
    (``s2`` where c_d = 1, nan where c_d = 0). All ``(dim,)`` float64."""
    n = errs[0].shape[0] if errs else 0
    total = np.zeros((n, dim))
    sq = np.zeros(dim)
    cover = np.zeros(dim)
    for s, e in zip(subsets, errs, strict=True):  # dims are distinct inside one subset
        total[:, s] += e
        sq[s] += (e * e).mean(0)
        cover[s] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = np.where(cover > 0, sq / cover, np.nan)
        cross = (total * total).mean(0) - sq  # sum over ordered pairs m != m' of E[e^m e^m']
        rho = np.where(cover > 1, cross / ((cover - 1) * sq), np.nan)
        pred = np.where(cover > 1, s2 * (rho + (1 - rho) / cover), s2)
    return {"cover": cover, "s2": s2, "rho": rho, "pred": pred}


def rho_ensemble(terms: dict[str, np.ndarray]) -> float | None:
    """``ensemble`` rho: ``sum_d s2_d rho_d / sum_d s2_d`` over the dims covered at least twice."""
    ok = (terms["cover"] > 1) & np.isfinite(terms["rho"]) & (terms["s2"] > 0)
    if not ok.any():
        return None
    return float((terms["s2"][ok] * terms["rho"][ok]).sum() / terms["s2"][ok].sum())


def _mm_entropy(counts: np.ndarray, n: int) -> float:
    """Miller-Madow entropy (nats) of a histogram of ``n`` samples."""
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum() + (p.size - 1) / (2.0 * n))


def rho_codes(codes: np.ndarray, codebook_size: int) -> float | None:
    """``codes`` rho: mean over pairs of streams of ``I(c_m; c_m') / sqrt(H_m H_m')``, entropies
    with the Miller-Madow correction (so identical streams give 1, independent ones about 0),
    clipped to [0, 1]. ``codes: (N, M)`` int."""
    n, m = codes.shape
    if m < 2 or n < 2:
        return None
    h = [_mm_entropy(np.bincount(codes[:, i], minlength=codebook_size), n) for i in range(m)]
    vals = []
    for i in range(m):
        for j in range(i + 1, m):
            if h[i] <= 0 or h[j] <= 0:
                continue
            joint = np.bincount(codes[:, i].astype(np.int64) * codebook_size + codes[:, j])
            mi = h[i] + h[j] - _mm_entropy(joint, n)
            vals.append(min(1.0, max(0.0, mi / math.sqrt(h[i] * h[j]))))
    return float(np.mean(vals)) if vals else None


def bound_holds(eps: float, rho: float | None, eps_ref: float) -> bool | None:
    """Whether ``eps >= rho * eps_ref`` (the paper's bound; None when rho is undefined)."""
    return None if rho is None else bool(eps >= rho * eps_ref)


def error_correlation(
    q: Quantizer, x: np.ndarray, codes: np.ndarray, max_frames: int = 100_000
) -> dict[str, Any]:
    """rho under every definition of :data:`RHO_DEFINITIONS` (module docstring), the M x M
    matrix of pairwise ``energy`` correlations and the ensemble bound, on at most
    ``max_frames`` evenly strided frames of ``x: (N, D)`` with their ``codes: (N, M)``."""
    if x.shape[0] > max_frames:
        step = math.ceil(x.shape[0] / max_frames)
        x, codes = x[::step], codes[::step]
    none: dict[str, Any] = {
        "rho": None, "rho_shared": None, "rho_ensemble": None, "rho_codes": None,
        "rho_definitions": dict.fromkeys(RHO_DEFINITIONS), "rho_pairs": None,
        "shared_dims": None, "sub_mse": None, "ensemble_bound": None,
    }
    m = q.num_codebooks
    if m < 2:
        return {**none, "rho_note": "one codebook: no pair of sub-quantizers"}
    if not (hasattr(q, "subspace_indices") and hasattr(q, "sub_decode")):
        rc = rho_codes(codes, q.codebook_size)
        return {**none, "rho_codes": rc, "rho_definitions": {**none["rho_definitions"], "codes": rc},
                "rho_note": f"{q.method} exposes no per-sub-quantizer reconstruction"}
    subsets, errs = sub_errors(q, x, codes)
    rho, pair = rho_energy(errs)
    rs, n_shared = rho_shared(errs, subsets)
    terms = ensemble_terms(errs, subsets, q.dim)
    rens = rho_ensemble(terms)
    rc = rho_codes(codes, q.codebook_size)
    xh = np.asarray(q.decode(torch.from_numpy(codes)).cpu().numpy(), np.float64)
    per_dim = ((x.astype(np.float64) - xh) ** 2).mean(0)  # (D,)
    covered = terms["cover"] > 0
    eps = float(per_dim.sum())
    eps_sub = float(np.where(covered, terms["s2"], per_dim).sum())
    eps_pred = float(np.where(covered, terms["pred"], per_dim).sum())
    return {
        "rho": rho,
        "rho_shared": rs,
        "rho_ensemble": rens,
        "rho_codes": rc,
        "rho_definitions": {"energy": rho, "shared": rs, "ensemble": rens, "codes": rc},
        "rho_frames": int(x.shape[0]),
        "rho_pairs": np.where(np.isfinite(pair), pair, 0.0).round(6).tolist(),
        "shared_dims": n_shared,
        "sub_mse": [float((e * e).mean()) for e in errs],
        "ensemble_bound": {
            "eps": eps,
            "eps_sub": eps_sub,
            "eps_pred": eps_pred if rens is not None else None,
            "eps_uncovered": float(per_dim[~covered].sum()),  # dims no sub-quantizer sees
            "holds": bound_holds(eps, rens, eps_sub),
        },
        "rho_note": "; ".join(f"{k}: {v}" for k, v in RHO_DEFINITIONS.items()),
    }


def dim_correlation(x: np.ndarray) -> np.ndarray:
    """``(D, D)`` Pearson correlation between feature dimensions (constant dims give 0)."""
    xc = x.astype(np.float64) - x.mean(0, dtype=np.float64)
    sd = np.sqrt((xc * xc).sum(0))
    sd[sd == 0] = np.inf
    c = (xc.T @ xc) / np.outer(sd, sd)
    np.fill_diagonal(c, 1.0)
    return c


def feature_axis(info: dict[str, Any]) -> tuple[str, str]:
    """What a feature dimension is, for axis labels and titles: ``(axis, source)``, e.g.
    ``("log-mel bin", "80 log-mel bins")`` for an s3prl baseline with ``feat_type: mel`` (read
    from its config), ``("dimension", "384 dimensions of whisper layer 2")`` for a layer.
    ``info`` is a ``feats.json`` (upstream, upstream_ckpt, layer, num_layers, dim)."""
    upstream, dim = str(info.get("upstream")), info.get("dim")
    feat_type = None
    if upstream == "baseline_local" and info.get("upstream_ckpt"):
        try:
            import yaml

            conf = yaml.safe_load(Path(info["upstream_ckpt"]).read_text()) or {}
            feat_type = (conf.get("input") or {}).get("feat_type")
        except (OSError, ValueError, AttributeError):
            pass
    elif upstream in ("fbank", "mel", "mfcc", "spectrogram", "linear"):
        feat_type = upstream
    names = {"mel": "log-mel bin", "fbank": "filterbank bin", "mfcc": "MFCC coefficient",
             "spectrogram": "frequency bin", "linear": "frequency bin"}
    if feat_type in names:
        axis = names[feat_type]
        return axis, f"{dim} {axis}s" if dim else axis + "s"
    layer = "its one output" if info.get("num_layers") == 1 else f"layer {info.get('layer')}"
    return "dimension", (f"{dim} dimensions" if dim else "dimensions") + f" of {upstream} {layer}"


def plot_heatmap(corr: np.ndarray, path: str | os.PathLike, title: str,
                 axis: str = "feature dimension") -> None:
    """Draw ``corr`` as a heatmap PNG (matplotlib, Agg backend), via a temporary name; every
    label inside the canvas (the figure is cropped to what it draws)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100, layout="constrained")
    im = ax.imshow(corr, cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(axis)
    ax.set_ylabel(axis)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Pearson correlation")
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


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
    axis, source = feature_axis({"upstream": report["upstream"], "layer": report["layer"],
                                 "dim": q.dim, **shards.info})
    plot_heatmap(corr, out / "dim_correlation.png", f"Correlation between the {source}", axis)
    report["heatmap"] = str(out / "dim_correlation.png")
    report["seconds"] = round(time.time() - t0, 3)
    write_text_atomic(out / "analysis.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "analysis.txt", format_report(report))
    logger.info("analysis of %s written to %s", codebook, out)
    return report


def _fmt(v: Any, spec: str = ".4g") -> str:
    return "n/a" if v is None else format(v, spec)


def _bound_lines(b: dict[str, Any] | None, rho: float | None) -> list[str]:
    if not b or b.get("holds") is None or rho is None:
        return []
    return [f"bound           eps {_fmt(b['eps'])} >= rho_ensemble * eps_sub = {_fmt(rho)} * "
            f"{_fmt(b['eps_sub'])} = {_fmt(rho * b['eps_sub'])}: "
            f"{'holds' if b['holds'] else 'violated'}"]


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
        *(f"rho {name:<11} {_fmt(v)}" for name, v in (r.get("rho_definitions") or {}).items()),
        *_bound_lines(r.get("ensemble_bound"), r.get("rho_ensemble")),
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
