"""Objective measures of resynthesized speech against the original, as in DASB's tables.

DASB (the discrete audio and speech benchmark, Mousavi et al., arXiv 2406.14294) scores
tokenizers by resynthesis; offline, with well-kept libraries:

* **STOI** (Taal et al. 2011): :func:`pystoi.stoi`, 0..1, higher is better.
* **PESQ** wide band (ITU-T P.862.2): :func:`pesq.pesq` in ``"wb"`` mode at 16 kHz, MOS-LQO
  1.04..4.64, higher is better; undefined when the reference holds no speech (``nan``).
* **MCD** (mel-cepstral distortion, dB, lower is better), as ESPnet's ``evaluate_mcd.py``:
  WORLD spectral envelope (:mod:`pyworld`, CheapTrick on Harvest F0, 5 ms frames), mel-cepstrum
  of order 23 with all-pass constant 0.42 at 16 kHz (:func:`pysptk.sp2mc`), frames aligned by
  DTW (:func:`librosa.sequence.dtw`, Euclidean cost), then
  ``MCD = mean_t 10 / ln 10 * sqrt(2 * sum_{d>=1} (c_d - c'_d)^2)`` over the aligned path
  (``c_0``, the frame energy, is left out).
* **F0** (:func:`pyworld.harvest`, 5 ms frames, both signals of the same length, no
  alignment: resynthesis keeps the timing): RMSE in Hz and Pearson correlation over frames
  voiced in both, and the voicing decision error ``VDE`` = fraction of frames whose
  voiced/unvoiced decision differs.

All functions take ``ref, deg: (L,) float`` mono waveforms at ``sr`` Hz; ``deg`` is cut or
zero-padded to the reference's length where the measure needs equal lengths.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

FRAME_PERIOD_MS = 5.0
MCEP_ORDER = 23
MCEP_ALPHA = 0.42  # all-pass constant for 16 kHz


def _same_length(ref: np.ndarray, deg: np.ndarray) -> np.ndarray:
    if deg.shape[0] >= ref.shape[0]:
        return deg[: ref.shape[0]]
    return np.pad(deg, (0, ref.shape[0] - deg.shape[0]))


def _as_f64(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if x.ndim != 1:
        raise ValueError(f"waveform must be 1-D, got shape {x.shape}")
    return x


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> float:
    """Short-time objective intelligibility of ``deg`` against ``ref`` (0..1, higher better)."""
    from pystoi import stoi as _stoi

    ref = _as_f64(ref)
    return float(_stoi(ref, _same_length(ref, _as_f64(deg)), sr, extended=False))


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> float:
    """Wide-band PESQ (MOS-LQO); ``nan`` (with a log line) when the reference has no
    utterance PESQ can find (silence)."""
    from pesq import NoUtterancesError, PesqError
    from pesq import pesq as _pesq

    if sr != 16000:
        raise ValueError(f"wide-band PESQ needs 16 kHz audio, got {sr} Hz")
    ref = _as_f64(ref)
    try:
        return float(_pesq(sr, ref, _same_length(ref, _as_f64(deg)), "wb"))
    except (NoUtterancesError, PesqError) as e:
        logger.info("PESQ undefined (%s): %s", type(e).__name__, e)
        return math.nan


def world_analysis(x: np.ndarray, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Harvest F0 ``(F,)`` and the mel-cepstra ``(F, MCEP_ORDER + 1)`` of the CheapTrick
    envelope, 5 ms frames (one Harvest pass serves both measures)."""
    import pysptk
    import pyworld

    x = _as_f64(x)
    f0, t = pyworld.harvest(x, sr, frame_period=FRAME_PERIOD_MS)
    sp = pyworld.cheaptrick(x, f0, t, sr)
    return f0, pysptk.sp2mc(sp, order=MCEP_ORDER, alpha=MCEP_ALPHA)


def mcd_from(mc_ref: np.ndarray, mc_deg: np.ndarray) -> float:
    """MCD (dB) of two mel-cepstrum sequences over their DTW path, ``c_0`` excluded."""
    import librosa

    a, b = mc_ref[:, 1:], mc_deg[:, 1:]
    _, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
    diff = a[path[:, 0]] - b[path[:, 1]]
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=1))))


def f0_from(f0_r: np.ndarray, f0_d: np.ndarray) -> dict[str, float]:
    """F0 RMSE / correlation over frames voiced in both, and VDE, of two F0 tracks (0 =
    unvoiced) cut to the shorter one."""
    n = min(len(f0_r), len(f0_d))
    f0_r, f0_d = f0_r[:n], f0_d[:n]
    v_r, v_d = f0_r > 0, f0_d > 0
    both = v_r & v_d
    out = {"vde": float(np.mean(v_r != v_d)) if n else math.nan}
    if both.sum() >= 2:
        a, b = f0_r[both], f0_d[both]
        out["f0_rmse"] = float(np.sqrt(np.mean((a - b) ** 2)))
        out["f0_corr"] = (
            float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else math.nan
        )
    else:
        out["f0_rmse"] = math.nan
        out["f0_corr"] = math.nan
    return out


def mcd(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> float:
    """Mel-cepstral distortion in dB over the DTW path (``c_0`` excluded); 0 for identical
    signals."""
    return mcd_from(world_analysis(ref, sr)[1], world_analysis(deg, sr)[1])


def f0_measures(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> dict[str, float]:
    """``{"f0_rmse": Hz, "f0_corr": Pearson r, "vde": 0..1}``; RMSE and correlation are
    ``nan`` when fewer than 2 frames are voiced in both."""
    ref = _as_f64(ref)
    return f0_from(world_analysis(ref, sr)[0], world_analysis(_same_length(ref, _as_f64(deg)), sr)[0])


def all_measures(
    ref: np.ndarray,
    deg: np.ndarray,
    sr: int = 16000,
    ref_world: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every measure above for one pair: stoi, pesq, mcd, f0_rmse, f0_corr, vde
    (``ref_world``: the reference's :func:`world_analysis`, when already computed)."""
    ref = _as_f64(ref)
    deg = _same_length(ref, _as_f64(deg))
    f0_r, mc_r = ref_world if ref_world is not None else world_analysis(ref, sr)
    f0_d, mc_d = world_analysis(deg, sr)
    out = {"stoi": stoi(ref, deg, sr), "pesq": pesq_wb(ref, deg, sr), "mcd": mcd_from(mc_r, mc_d)}
    out.update(f0_from(f0_r, f0_d))
    return out


# name -> (header, higher is better)
MEASURES = {
    "stoi": ("STOI ↑", True),
    "pesq": ("PESQ ↑", True),
    "mcd": ("MCD (dB) ↓", False),
    "f0_rmse": ("F0 RMSE (Hz) ↓", False),
    "f0_corr": ("F0 corr ↑", True),
    "vde": ("VDE ↓", False),
}
