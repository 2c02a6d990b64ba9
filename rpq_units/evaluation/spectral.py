"""Log-mel features of s3prl's baseline upstream, and their inversion to a waveform with no
training (least-squares mel inversion + Griffin-Lim, Griffin & Lim 1984, through torchaudio).

What s3prl 0.4.18 computes for ``baseline_local`` with a preprocessor config such as
``egs/mini_librispeech/conf/upstream/mel_40ms.yaml`` (``s3prl/upstream/baseline/preprocessor.py``,
``OnlinePreprocessor``; read from the installed package):

* ``win = round(win_ms * 16)``, ``hop = round(hop_ms * 16)`` samples, ``n_fft = 2 (n_freq - 1)``
  (400 for ``n_freq: 201``); a periodic Hann window of ``win`` samples (``torch.hann_window``);
  ``torch.stft`` with ``center=True``, ``pad_mode="reflect"``, not normalized, one-sided.
* the **power** spectrum ``|X|^2``, then ``torchaudio.transforms.MelScale(sample_rate=16000,
  n_mels=n_mels)`` with its defaults: ``n_stft=201``, ``f_min=0``, ``f_max=8000``, HTK mel
  scale, no filter normalization (``norm=None``);
* ``log: True``: the **natural** log of ``mel + 1e-10``;
* ``cmvn: True``: per utterance and per bin, ``(x - mean_t) / (std_t + 1e-10)`` with the
  unbiased standard deviation (the scale and level of each bin are removed).

:class:`LogMelSpec` reproduces the first three steps (:meth:`LogMelSpec.analyze`; a test
checks it against s3prl itself). :func:`invert_logmel` goes back: when the hop is longer than
a quarter window (the demo's 40 ms hop against a 25 ms window leaves 15 ms of every hop
unseen), the log-mel frames are first interpolated linearly in time to a hop of ``win / 4``
(the magnitude spectrum of a ``win``-sample window does not depend on the hop, so the
interpolated frames are what an STFT at that hop would roughly see); then ``exp`` undoes the
log, least squares (as ``torchaudio.transforms.InverseMelScale``, clipped at 0) maps mel power
back to linear power through the same filterbank, ``sqrt`` gives the magnitude, and
``torchaudio.transforms.GriffinLim`` finds a phase with the same window, FFT size and
centring (librosa's NNLS + Griffin-Lim gave the same pitch about 20 times slower here). Per-utterance CMVN cannot be undone from the features
alone: :func:`denormalize` puts back a mean and standard deviation (an utterance's own for
copy-synthesis, or training-set averages for features that went through a discretizer).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import yaml

from rpq_units.errors import UserError
from rpq_units.files import write_text_atomic

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
EPS = 1e-10  # s3prl's OnlinePreprocessor eps (log floor and CMVN)


class SpectralError(UserError):
    """A feature config that cannot be inverted without training."""


@dataclasses.dataclass(frozen=True)
class LogMelSpec:
    """The analysis of an s3prl log-mel config (sizes in samples)."""

    win: int
    hop: int
    n_fft: int
    n_mels: int
    cmvn: bool
    sample_rate: int = SAMPLE_RATE

    @classmethod
    def from_config(cls, path: str | os.PathLike) -> LogMelSpec:
        """Read an s3prl ``baseline_local`` preprocessor config; raises :class:`SpectralError`
        unless its input is a plain log-mel (``feat_type: mel``, ``log: True``, ``delta: 0``)."""
        with open(path) as f:
            cfg = yaml.safe_load(f)
        if not isinstance(cfg, dict) or "kaldi" in cfg or "input" not in cfg:
            raise SpectralError(
                f"{path}: not an s3prl preprocessor config with an 'input' feature "
                "(kaldi-style fbank configs are not invertible here; train a vocoder instead)"
            )
        inp = cfg["input"]
        if inp.get("feat_type") != "mel" or not inp.get("log", False) or int(inp.get("delta", 0)):
            raise SpectralError(
                f"{path}: input feature is {inp.get('feat_type')!r} (log={inp.get('log')}, "
                f"delta={inp.get('delta', 0)}); Griffin-Lim inversion needs a plain log-mel "
                "(feat_type: mel, log: True, delta: 0); train a vocoder instead"
            )
        sr = SAMPLE_RATE
        n_freq = int(cfg.get("n_freq", 201))
        return cls(
            win=round(float(cfg.get("win_ms", 25)) * sr / 1000),
            hop=round(float(cfg.get("hop_ms", 10)) * sr / 1000),
            n_fft=(n_freq - 1) * 2,
            n_mels=int(cfg.get("n_mels", 40)),
            cmvn=bool(inp.get("cmvn", False)),
        )

    def filterbank(self) -> np.ndarray:
        """``(n_fft/2 + 1, n_mels)`` float32: torchaudio's ``MelScale`` defaults as s3prl uses
        them (HTK, 0..sr/2, no norm)."""
        import torchaudio.functional as taf

        fb = taf.melscale_fbanks(
            n_freqs=self.n_fft // 2 + 1,
            f_min=0.0,
            f_max=self.sample_rate / 2,
            n_mels=self.n_mels,
            sample_rate=self.sample_rate,
            norm=None,
            mel_scale="htk",
        )
        return fb.numpy().astype(np.float32)

    def analyze(self, wav: np.ndarray) -> np.ndarray:
        """``wav: (L,)`` float32 -> natural-log mel power ``(1 + L // hop, n_mels)``, no CMVN."""
        import torch

        x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.win,
            window=torch.hann_window(self.win),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = spec.abs().pow(2)  # (F, T)
        mel = torch.from_numpy(self.filterbank()).T @ power  # (n_mels, T)
        return (mel + EPS).log().T.numpy()


def cmvn_stats(logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T, n_mels)`` -> per-bin mean and unbiased std ``(n_mels,)`` as s3prl's CMVN uses."""
    x = np.asarray(logmel, dtype=np.float64)
    std = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])
    return x.mean(axis=0).astype(np.float32), std.astype(np.float32)


def denormalize(feats: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Undo s3prl's CMVN: ``feats * (std + eps) + mean`` (``feats: (T, n_mels)``)."""
    return (np.asarray(feats, np.float32) * (std + EPS) + mean).astype(np.float32)


def _upsample_frames(logmel: np.ndarray, hop: int, new_hop: int, n_out: int) -> np.ndarray:
    """Linear interpolation in time of ``(T, n_mels)`` frames centred at ``t * hop`` onto
    frames centred at ``i * new_hop``, ``i < n_out`` (ends held)."""
    t_in = np.arange(logmel.shape[0]) * hop
    t_out = np.arange(n_out) * new_hop
    return np.stack([np.interp(t_out, t_in, logmel[:, b]) for b in range(logmel.shape[1])], 1)


def invert_logmel(
    logmel: np.ndarray,
    spec: LogMelSpec,
    *,
    n_iter: int = 64,
    length: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Natural-log mel power ``(T, n_mels)`` (no CMVN) -> waveform ``(length,)`` float32
    (default ``length = T * hop``): least-squares mel inversion and Griffin-Lim (``n_iter``
    iterations, fast Griffin-Lim momentum 0.99, seeded random initial phase, torchaudio's
    ``GriffinLim``), with s3prl's filterbank, window, FFT size and centring."""
    import torch
    import torchaudio

    logmel = np.asarray(logmel, dtype=np.float64)
    if logmel.ndim != 2 or logmel.shape[1] != spec.n_mels:
        raise SpectralError(f"log-mel must be (T, {spec.n_mels}), got shape {logmel.shape}")
    if length is None:
        length = logmel.shape[0] * spec.hop
    gl_hop = spec.hop
    if spec.hop > spec.win // 4:
        gl_hop = max(1, spec.win // 4)
    n_frames = 1 + length // gl_hop
    frames = _upsample_frames(logmel, spec.hop, gl_hop, n_frames) if gl_hop != spec.hop else logmel
    mel_power = torch.from_numpy(np.maximum(np.exp(frames) - EPS, 0.0).T)  # (n_mels, N)
    # least squares through the filterbank, as torchaudio's InverseMelScale does, but with a
    # cut-off on small singular values: the filterbank is rank-deficient at low frequencies and
    # float32 rounding in the features would otherwise blow up there
    fb = torch.from_numpy(spec.filterbank()).double()  # (F, n_mels)
    power = torch.linalg.lstsq(fb.T, mel_power, rcond=1e-4, driver="gelsd").solution.relu()
    gl = torchaudio.transforms.GriffinLim(
        n_fft=spec.n_fft,
        n_iter=n_iter,
        win_length=spec.win,
        hop_length=gl_hop,
        power=1.0,
        momentum=0.99,
        length=length,
        rand_init=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wav = gl(power.clamp(min=0).sqrt().float())
    return wav.numpy().astype(np.float32)


def s3prl_config_path(upstream: str, ckpt: str | None) -> Path | None:
    """The preprocessor config behind an s3prl baseline upstream (``baseline_local`` with its
    config file, or a named baseline entry such as ``mel``), else ``None``."""
    if upstream == "baseline_local":
        return Path(ckpt) if ckpt else None
    if upstream in ("mel", "linear", "spectrogram", "mfcc", "fbank", "fbank_no_cmvn"):
        from rpq_units.pipeline.features import _s3prl_dir

        return _s3prl_dir() / "upstream" / "baseline" / f"{upstream}.yaml"
    return None


def raw_config(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a copy of an s3prl preprocessor config with CMVN off (for copy-synthesis, the
    utterance's own log-mel level and scale); returns ``out``."""
    with open(path) as f:
        cfg = yaml.safe_load(f)
    cfg["input"]["cmvn"] = False
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, yaml.safe_dump(cfg, sort_keys=False))
    return out
