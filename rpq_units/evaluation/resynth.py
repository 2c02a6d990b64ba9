"""Hear what the units keep: units -> quantizer ``decode`` -> features -> waveform, scored.

The RPQ paper (arXiv 2504.04721) plays speech reconstructed from SSL features, K-means, PQ and
RPQ units on its page; DASB (arXiv 2406.14294) scores tokenizers by resynthesis. For one data
dir (a test set) and the fitted discretizers, :func:`resynth` writes, per utterance,

* ``original``: the input audio;
* ``copy``: for s3prl log-mel upstreams only, the utterance's own log-mel (no CMVN) straight to
  the waveform: the upper bound of the inversion;
* ``continuous``: the features the discretizers see (after s3prl's CMVN), to the waveform;
* one row per discretizer: its unit file, ``text_to_units`` -> ``decode`` -> features -> waveform.

Features -> waveform is Griffin-Lim (:mod:`rpq_units.evaluation.spectral`, no training) for s3prl
log-mel upstreams, where CMVN'd features are first given back a level and scale (training-set
averages of the per-utterance log-mel mean and standard deviation: the units carry no
per-utterance statistics), or a HiFi-GAN (:mod:`rpq_units.evaluation.vocoder`) trained on the continuous
features of the training set for any upstream (WavLM-style layers).

Each system is scored against the original (:mod:`rpq_units.evaluation.speech_metrics`: STOI, PESQ, MCD,
F0 RMSE / correlation, VDE, averaged over utterances), by its nominal bitrate (units:
``M log2 K`` bits per frame; continuous features: 32-bit floats), and, when an ESPnet ASR model
trained on original audio is given (the recipe's continuous reference), by the WER of its
transcripts and the dWER against its transcripts of the original audio.

Writes ``<out_dir>/wav/<system>/<uttid>.wav`` (16-bit), ``metrics.json`` (per utterance and
averaged) and ``resynth.md`` (the DASB-style table).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rpq_units.errors import UserError
from rpq_units.files import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
ORIGINAL, COPY, CONTINUOUS = "original", "copy", "continuous"
JUDGES = ("espnet", "whisper")  # who transcribes the resynthesized speech (WER, dWER)
LABELS = {ORIGINAL: "Original", COPY: "Copy-synthesis", CONTINUOUS: "Continuous"}


class ResynthError(UserError):
    """Inconsistent discretizers, unit files or vocoder for a resynthesis run."""


def label(system: str) -> str:
    """Display name of a system ('kmeans' -> 'K-means', 'pq' -> 'PQ', ...)."""
    known = {"kmeans": "K-means", "pq": "PQ", "rpq": "RPQ", "rvq": "RVQ", "avq": "AVQ"}
    return LABELS.get(system, known.get(system, system))


def _write_wav(path: Path, wav: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".tmp.wav") as tmp:  # the ending tells soundfile the format
        sf.write(tmp, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")


class Synthesizer:
    """Features ``(T, D)`` as the discretizers see them -> waveform ``(length,)``; with
    ``copy(wav)`` for spectral upstreams (``None`` otherwise)."""

    def __init__(
        self,
        *,
        upstream: str,
        upstream_ckpt: str | None,
        vocoder: str,
        work_dir: Path,
        stats_data_dir: str | None,
        stats_utts: int,
        n_iter: int,
        device: str,
    ) -> None:
        from rpq_units.evaluation.spectral import LogMelSpec, s3prl_config_path

        self.spec = None
        self.vocoder = None
        cfg = s3prl_config_path(upstream, upstream_ckpt)
        if vocoder in ("auto", "griffinlim"):
            if cfg is None:
                raise ResynthError(
                    f"upstream {upstream} is not an s3prl log-mel: Griffin-Lim cannot invert it; "
                    "train a vocoder (rpq-units train_vocoder) and pass --vocoder <checkpoint>"
                )
            self.spec = LogMelSpec.from_config(cfg)
            self.n_iter = n_iter
            self._raw = self._raw_extractor(cfg, upstream, work_dir, device)
            self.mean, self.std = self._stats(stats_data_dir, stats_utts, work_dir)
        else:
            from rpq_units.evaluation.vocoder import Vocoder

            self.vocoder = Vocoder.load(vocoder, device=device)
        self.name = "griffinlim" if self.spec is not None else f"hifigan:{vocoder}"

    @staticmethod
    def _raw_extractor(cfg: Path, upstream: str, work_dir: Path, device: str) -> Any:
        from rpq_units.evaluation.spectral import raw_config
        from rpq_units.pipeline.features import FeatureExtractor

        raw = raw_config(cfg, work_dir / "upstream_no_cmvn.yaml")
        return FeatureExtractor(upstream="baseline_local", ckpt=str(raw), device=device)

    def _stats(
        self, data_dir: str | None, n: int, work_dir: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training-set averages of the per-utterance log-mel mean and std (``stats.npz``)."""
        from rpq_units.evaluation.spectral import cmvn_stats
        from rpq_units.pipeline.data import AudioLoader, load_data_dir

        path = work_dir / "logmel_stats.npz"
        if path.is_file():
            z = np.load(path)
            return z["mean"], z["std"]
        if self.spec is not None and not self.spec.cmvn:
            d = self.spec.n_mels
            return np.zeros(d, np.float32), np.ones(d, np.float32) - 1e-10
        if not data_dir:
            raise ResynthError(
                "the features are CMVN'd log-mel: give --stats_data_dir (the training set) to "
                "restore their level and scale before inversion"
            )
        load = AudioLoader()
        means, stds = [], []
        for utt in load_data_dir(data_dir)[:n]:
            m, s = cmvn_stats(self._raw.extract(load(utt)))
            means.append(m)
            stds.append(s)
        mean = np.mean(means, 0).astype(np.float32)
        std = np.mean(stds, 0).astype(np.float32)
        with atomic_path(path, ".tmp.npz") as tmp:  # np.savez adds .npz to other names
            np.savez(tmp, mean=mean, std=std, utterances=len(means))
        logger.info("log-mel level/scale from %d utterances of %s -> %s", len(means), data_dir, path)
        return mean, std

    def __call__(self, feats: np.ndarray, length: int, seed: int = 0) -> np.ndarray:
        if self.spec is not None:
            from rpq_units.evaluation.spectral import denormalize, invert_logmel

            if self.spec.cmvn:
                feats = denormalize(feats, self.mean, self.std)
            return invert_logmel(feats, self.spec, n_iter=self.n_iter, length=length, seed=seed)
        wav = self.vocoder(feats)
        return np.pad(wav, (0, max(0, length - wav.shape[0])))[:length]

    def copy(self, wav: np.ndarray, seed: int = 0) -> np.ndarray | None:
        if self.spec is None:
            return None
        from rpq_units.evaluation.spectral import invert_logmel

        raw = self._raw.extract(wav)
        return invert_logmel(raw, self.spec, n_iter=self.n_iter, length=wav.shape[0], seed=seed)


def transcribe(
    asr_dir: str | os.PathLike,
    wavs: dict[str, np.ndarray],
    *,
    decode_config: str | None = None,
    model_file: str = "valid.acc.ave.pth",
    device: str = "cpu",
    features: Callable[[np.ndarray], np.ndarray] | None = None,
    decode_args: str = "",
) -> dict[str, str]:
    """ESPnet ``Speech2Text`` transcripts of 16 kHz waveforms with the model in ``asr_dir``
    (``config.yaml`` + ``model_file``), beam search options from ``decode_config`` and then
    ``decode_args`` (``asr_inference`` options, e.g. ``"--ctc_weight 0.5"``: the recipe's
    ``--inference_args``, so the Original row decodes as stage 11 did).

    A model trained on dumped features (``frontend: null``, ``input_size: D``: the recipe's
    continuous reference, stage 11) is fed ``features(wav)`` (T, D), the extractor that made
    its training features; a model with a frontend gets the waveform."""
    import inspect

    import yaml

    from rpq_units.pipeline.s3prl_compat import install

    install()  # s3prl frontends under torchaudio >= 2.9
    from espnet2.bin.asr_inference import Speech2Text

    config = Path(asr_dir) / "config.yaml"
    with open(config) as f:
        train_cfg = yaml.safe_load(f) or {}
    want = train_cfg.get("input_size") if train_cfg.get("frontend") is None else None
    if want and features is None:
        raise ResynthError(f"{config}: the model reads {want}-dim features (frontend: null), "
                           "and no feature extractor was given")
    opts: dict[str, Any] = {}
    if decode_config:
        with open(decode_config) as f:
            opts = yaml.safe_load(f) or {}
    opts.update(_decode_args(decode_args))
    allowed = inspect.signature(Speech2Text.__init__).parameters
    dropped = sorted(k for k in opts if k not in allowed)
    if dropped:
        logger.info("decoding options not used by Speech2Text: %s", ", ".join(dropped))
    opts = {k: v for k, v in opts.items() if k in allowed}
    s2t = Speech2Text(
        asr_train_config=str(config),
        asr_model_file=str(Path(asr_dir) / model_file),
        device=device,
        **opts,
    )
    out = {}
    for uttid, wav in wavs.items():
        x = np.asarray(wav, np.float32)
        if want:
            x = np.asarray(features(x), np.float32)
            if x.ndim != 2 or x.shape[1] != want:
                raise ResynthError(f"{config}: the model reads {want}-dim features; the "
                                   f"extractor gave {x.shape} for {uttid}")
        results = s2t(x)
        out[uttid] = results[0][0] if results else ""
    return out


def _decode_args(args: str) -> dict[str, Any]:
    """``"--ctc_weight 0.5 --beam-size=2"`` -> ``{"ctc_weight": 0.5, "beam_size": 2}``."""
    import shlex

    import yaml

    out: dict[str, Any] = {}
    words = shlex.split(args)
    i = 0
    while i < len(words):
        w = words[i]
        if not w.startswith("--"):
            raise ResynthError(f"decoding options {args!r}: expected --name value, got {w!r}")
        if "=" in w:
            key, val = w[2:].split("=", 1)
            i += 1
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            key, val = w[2:], words[i + 1]
            i += 2
        else:
            raise ResynthError(f"decoding options {args!r}: {w} has no value")
        out[key.replace("-", "_")] = yaml.safe_load(val)
    return out


def error_rate(refs: dict[str, str], hyps: dict[str, str], unit: str = "word") -> float:
    """Corpus-level WER/CER (%) of ``hyps`` against ``refs`` over the keys of ``hyps``."""
    from rpq_units.evaluation.scoring import align, tokens

    err = n = 0
    for k, h in hyps.items():
        r = tokens(refs.get(k, ""), unit)
        _, s, d, i = align(r, tokens(h, unit))
        err += s + d + i
        n += len(r)
    return 100.0 * err / n if n else math.nan


def _bitrate(q: Any | None, dim: int, frame_rate: float) -> float:
    if q is None:
        return 32.0 * dim * frame_rate
    return q.num_codebooks * math.log2(q.codebook_size) * frame_rate


@dataclass
class _Units:
    """One discretizer of a run: its name, fitted quantizer, unit file and that file's unit
    text by utterance id."""

    name: str
    quantizer: Any
    path: str
    text: dict[str, str]

    def codes(self, uttid: str, frames: int) -> np.ndarray:
        """Codes ``(T, M)`` of ``uttid``; a frame count other than the features' ``frames``
        is logged."""
        from rpq_units.pipeline.units import UnitsError, text_to_units

        q = self.quantizer
        try:
            codes = text_to_units(self.text[uttid], q.num_codebooks, q.codebook_size)
        except UnitsError as e:
            raise ResynthError(f"{self.path}: utterance {uttid}: {e}") from e
        if codes.shape[0] != frames:
            logger.warning("%s: %s has %d frames, the features %d", uttid, self.name,
                           codes.shape[0], frames)
        return codes


def _discretizers(
    codebooks: Sequence[str], units: Sequence[str], names: Sequence[str], device: str
) -> tuple[list[_Units], tuple[str, str | None, int | list[int] | None]]:
    """The discretizers of ``codebooks`` (one per name and unit file) and the ``(upstream,
    ckpt, layer)`` of the features they were all fitted on."""
    from rpq_units.pipeline.codebooks import load_quantizer
    from rpq_units.pipeline.units import read_units

    if not (len(codebooks) == len(units) == len(names)):
        raise ResynthError(
            f"give one codebook and one unit file per name: {len(names)} names, "
            f"{len(codebooks)} codebooks, {len(units)} unit files"
        )
    if set(names) & {ORIGINAL, COPY, CONTINUOUS}:
        raise ResynthError(f"discretizer names must differ from {ORIGINAL}, {COPY}, {CONTINUOUS}")
    qs = [load_quantizer(c, device=device) for c in codebooks]
    metas = [(q.meta.get("upstream"), q.meta.get("upstream_ckpt"), q.meta.get("layer")) for q in qs]
    if not qs:
        raise ResynthError("no discretizers given")
    if any(m != metas[0] for m in metas):  # (a layer may be a list: several layers)
        raise ResynthError(f"the codebooks were fitted on different features: {metas}")
    if not metas[0][0]:
        raise ResynthError(f"{codebooks[0]}: no upstream recorded in the codebook")
    found = [_Units(n, q, u, read_units(u)) for n, q, u in zip(names, qs, units, strict=True)]
    return found, metas[0]


def _utterances(data_dir: str, discretizers: list[_Units], max_utts: int) -> list[Any]:
    """The utterances of ``data_dir`` that every unit file holds, the first ``max_utts``
    (0: all)."""
    from rpq_units.pipeline.data import load_data_dir

    utts = [u for u in load_data_dir(data_dir) if all(u.uttid in d.text for d in discretizers)]
    if not utts:
        files = ", ".join(d.path for d in discretizers)
        raise ResynthError(f"no utterance of {data_dir} is in every unit file ({files})")
    return utts[:max_utts] if max_utts > 0 else utts


def _synthesize(
    utts: list[Any], systems: list[str], fx: Any, synth: Synthesizer,
    discretizers: list[_Units], out: Path, seed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, dict[str, float]]]]:
    """Each system's waveform of each utterance (written to ``out/wav/<system>/``) and its
    measures against the original: ``(audio, per_utt)``, both by system, then utterance id."""
    from tqdm import tqdm

    from rpq_units.evaluation.speech_metrics import all_measures, world_analysis
    from rpq_units.pipeline.data import AudioLoader

    load = AudioLoader()
    per_utt: dict[str, dict[str, dict[str, float]]] = {s: {} for s in systems if s != ORIGINAL}
    audio: dict[str, dict[str, np.ndarray]] = {s: {} for s in systems}
    for i, utt in enumerate(tqdm(utts, desc="resynth", unit="utt", mininterval=2.0)):
        wav = load(utt)
        feats = fx.extract(wav)
        made = {ORIGINAL: wav, CONTINUOUS: synth(feats, wav.shape[0], seed=seed + i)}
        cp = synth.copy(wav, seed=seed + i)
        if cp is not None:
            made[COPY] = cp
        for d in discretizers:
            codes = d.codes(utt.uttid, feats.shape[0])
            made[d.name] = synth(d.quantizer.decode(codes), wav.shape[0], seed=seed + i)
        ref_world = world_analysis(wav, SAMPLE_RATE)
        for s, w in made.items():
            _write_wav(out / "wav" / s / f"{utt.uttid}.wav", w)
            audio[s][utt.uttid] = w
            if s != ORIGINAL:
                per_utt[s][utt.uttid] = all_measures(wav, w, SAMPLE_RATE, ref_world=ref_world)
    return audio, per_utt


def _summary(
    systems: list[str], quantizers: dict[str, Any], dim: int, frame_rate: float,
    per_utt: dict[str, dict[str, dict[str, float]]],
) -> dict[str, dict[str, float]]:
    """Per system: its bit rate (``kbps``) and the mean over utterances of each measure."""
    bitrate = {ORIGINAL: 16.0 * SAMPLE_RATE, CONTINUOUS: _bitrate(None, dim, frame_rate)}
    if COPY in systems:
        bitrate[COPY] = bitrate[CONTINUOUS]
    for name, q in quantizers.items():
        bitrate[name] = _bitrate(q, dim, frame_rate)
    summary: dict[str, dict[str, float]] = {}
    for s in systems:
        row: dict[str, float] = {"kbps": bitrate[s] / 1000.0}
        if s != ORIGINAL:
            keys = next(iter(per_utt[s].values())).keys()
            for k in keys:
                vals = [m[k] for m in per_utt[s].values()]
                row[k] = float(np.nanmean(vals)) if not all(math.isnan(v) for v in vals) else math.nan
        summary[s] = row
    return summary


def _references(data_dir: str) -> dict[str, str]:
    """The reference transcripts of ``data_dir`` by utterance id (none without ``text``)."""
    text_file = Path(data_dir) / "text"
    if not text_file.is_file():
        return {}
    from rpq_units.evaluation.scoring import read_text

    return read_text(text_file)


def resynth(
    *,
    data_dir: str,
    codebooks: Sequence[str],
    units: Sequence[str],
    names: Sequence[str],
    out_dir: str,
    vocoder: str = "auto",
    stats_data_dir: str | None = None,
    stats_utts: int = 50,
    max_utts: int = 0,
    n_iter: int = 64,
    asr_dir: str | None = None,
    asr_decode_config: str | None = None,
    asr_decode_args: str = "",
    score_unit: str = "word",
    judge: str = "espnet",
    judge_model: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Resynthesize ``data_dir`` from each discretizer's ``units`` file (parallel lists
    ``names`` / ``codebooks`` / ``units``), score every system, write ``out_dir``; returns the
    summary written to ``metrics.json``. Intelligibility (WER, dWER) is judged by the ESPnet
    model in ``asr_dir`` (``judge="espnet"``) or by a CTranslate2 Whisper model
    (``judge="whisper"``, ``judge_model`` its dir, default the bundled tiny.en; references and
    transcripts both through Whisper's English normalizer)."""
    if judge not in JUDGES:
        raise ResynthError(f"judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    from rpq_units.pipeline.features import FeatureExtractor

    discretizers, (upstream, ckpt, layer) = _discretizers(codebooks, units, names, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fx = FeatureExtractor(upstream=upstream, ckpt=ckpt, layer=layer if layer is not None else -1,
                          device=device)
    synth = Synthesizer(upstream=upstream, upstream_ckpt=ckpt, vocoder=vocoder, work_dir=out,
                        stats_data_dir=stats_data_dir, stats_utts=stats_utts, n_iter=n_iter,
                        device=device)
    utts = _utterances(data_dir, discretizers, max_utts)
    systems = [ORIGINAL] + ([COPY] if synth.spec is not None else []) + [CONTINUOUS] + list(names)
    audio, per_utt = _synthesize(utts, systems, fx, synth, discretizers, out, seed)
    quantizers = {d.name: d.quantizer for d in discretizers}
    summary = _summary(systems, quantizers, fx.dim, fx.frame_rate, per_utt)
    if judge == "whisper":
        by = _whisper_judge(judge_model, device, score_unit)
    else:
        by = _espnet_judge(asr_dir, asr_decode_config, asr_decode_args, device, score_unit,
                           features=fx.extract)
    asr = _intelligibility(by, audio, data_dir, score_unit, summary)
    report = _report(data_dir, (upstream, ckpt), fx, synth, systems,
                     dict(zip(names, codebooks, strict=True)), utts, summary, asr, per_utt)
    write_text_atomic(out / "metrics.json", json.dumps(_json_safe(report), indent=1) + "\n")
    write_text_atomic(out / "resynth.md", format_table(report) + "\n")
    logger.info("resynth: %d utterances x %d systems -> %s", len(utts), len(systems), out)
    return report


def _report(
    data_dir: str, upstream: tuple[str, str | None], fx: Any, synth: Synthesizer, systems: list[str], codebooks: dict[str, str],
    utts: list[Any], summary: dict[str, dict[str, float]], asr: dict[str, Any],
    per_utt: dict[str, dict[str, dict[str, float]]],
) -> dict[str, Any]:
    """What ``metrics.json`` holds: the run's features (``upstream``: name and checkpoint as
    the codebooks recorded them), systems and utterances, the summary,
    the judge's transcripts, the measures per utterance and the check of the expected order."""
    refs = _references(data_dir)
    report = {
        "data_dir": str(data_dir),
        "upstream": upstream[0],
        "upstream_ckpt": upstream[1],
        "layer": fx.layer,
        "num_layers": fx.num_layers,  # 1: an upstream with one output (log-mel), no layer to name
        "frame_rate": fx.frame_rate,
        "synthesis": synth.name,
        "systems": systems,
        "discretizers": {name: str(c) for name, c in codebooks.items()},
        "utterances": [u.uttid for u in utts],
        "text": {u.uttid: refs.get(u.uttid, "") for u in utts},
        "summary": summary,
        "asr": asr,
        "per_utterance": per_utt,
    }
    report["expected_order"] = expected_order(report)
    return report


@dataclass
class _Judge:
    """Who transcribes the resynthesized speech: ``transcribe`` (one system's waveforms by
    utterance id -> transcripts), what the report says of it (``unit`` among it) and the
    normalizer of the references; or why there is none (``skipped``)."""

    transcribe: Callable[[dict[str, np.ndarray]], dict[str, str]] | None = None
    info: dict[str, Any] | None = None
    normalize: Callable[[str], str] | None = None
    skipped: str = ""


def _espnet_judge(
    asr_dir: str | None, decode_config: str | None, decode_args: str, device: str, unit: str,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
) -> _Judge:
    """The ESPnet ASR model in ``asr_dir`` as a judge (``features``: the extractor for a model
    trained on features, see :func:`transcribe`), or why there is none."""
    if not asr_dir:
        return _Judge(skipped="no ASR model given (--asr_dir)")
    if not (Path(asr_dir) / "config.yaml").is_file():
        return _Judge(skipped=f"no trained ASR model in {asr_dir} (config.yaml missing)")

    def run(wavs: dict[str, np.ndarray]) -> dict[str, str]:
        return transcribe(asr_dir, wavs, decode_config=decode_config, device=device,
                          features=features, decode_args=decode_args)

    info = {"model": str(asr_dir), "unit": unit, "decode_config": decode_config,
            "decode_args": decode_args}
    return _Judge(run, info)


def _whisper_judge(model_dir: str | None, device: str, unit: str) -> _Judge:
    """A CTranslate2 Whisper model (English) as a judge: references and transcripts both
    through ``transformers``' Whisper English normalizer."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from rpq_units.evaluation.whisper_judge import whisper_transcribe
    from rpq_units.pipeline.whisper import bundled_checkpoint

    norm = EnglishTextNormalizer({})

    def run(wavs: dict[str, np.ndarray]) -> dict[str, str]:
        return whisper_transcribe(wavs, model_dir=model_dir, device=device, normalize=norm)

    model = str(model_dir or bundled_checkpoint())
    return _Judge(run, {"model": f"whisper:{model}", "judge": "whisper", "unit": unit}, norm)


def _intelligibility(
    judge: _Judge, audio: dict[str, dict[str, np.ndarray]], data_dir: str, unit: str,
    summary: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Each system's WER against the references of ``data_dir`` and dWER against the judge's
    transcripts of the originals, added to ``summary``; the judge's report with its transcripts
    (``{"skipped": reason}`` without a judge)."""
    from rpq_units.evaluation.scoring import read_text

    if judge.skipped:
        logger.info("intelligibility (WER/dWER) skipped: %s", judge.skipped)
        return {"skipped": judge.skipped}
    refs = read_text(Path(data_dir) / "text")
    if judge.normalize is not None:
        refs = {u: judge.normalize(t) for u, t in refs.items()}
    hyps = {s: judge.transcribe(a) for s, a in audio.items()}
    for s, h in hyps.items():
        summary[s]["wer"] = error_rate(refs, h, unit)
        summary[s]["dwer"] = error_rate(hyps[ORIGINAL], h, unit)
    return {**judge.info, "hyps": hyps}


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """DASB-style table: header cells and one row of cells per system; the best value of each
    measure among the discretizers is bold (``**x**``)."""
    from rpq_units.evaluation.speech_metrics import MEASURES

    summary = report["summary"]
    systems = report["systems"]
    unit = "CER" if report.get("asr", {}).get("unit") == "char" else "WER"
    cols = [("kbps", "Bitrate (kbps)", None)]
    cols += [(k, head, hi) for k, (head, hi) in MEASURES.items()]
    if "skipped" not in report.get("asr", {"skipped": ""}):
        cols += [("wer", f"{unit} (%) ↓", False), ("dwer", f"d{unit} (%) ↓", False)]
    discrete = [s for s in systems if s not in (ORIGINAL, COPY, CONTINUOUS)]
    best: dict[str, float] = {}
    for k, _, hi in cols:
        vals = [summary[s].get(k) for s in discrete]
        vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if hi is not None and vals:
            best[k] = max(vals) if hi else min(vals)
    header = ["System"] + [h for _, h, _ in cols]
    rows = []
    for s in systems:
        cells = [label(s)]
        for k, _, _ in cols:
            v = summary[s].get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("-")
                continue
            txt = f"{v:.1f}" if k in ("kbps", "wer", "dwer", "f0_rmse") else f"{v:.3f}"
            if k == "kbps" and v < 10:
                txt = f"{v:.2f}"
            if s in discrete and k in best and v == best[k]:
                txt = f"**{txt}**"
            cells.append(txt)
        rows.append(cells)
    return header, rows


# The order a reader expects (the RPQ paper's page, DASB): copy-synthesis >= continuous > the
# product quantizers > K-means, on intelligibility. Checked on each run, never assumed.
ORDER_MEASURES = {"stoi": ("STOI", True), "wer": ("WER", False)}


def expected_order(report: dict[str, Any]) -> dict[str, Any]:
    """Check copy-synthesis >= continuous > every discretizer but K-means > K-means on STOI and
    WER (lower is better). Per measure: ``{"holds": bool, "checks": [...]}`` (each check names
    the better-expected system, the other, the relation and both values), or ``{"holds": None,
    "reason": ...}`` when the measure is missing (e.g. no ASR model for WER)."""
    summary = report["summary"]
    systems = [s for s in report["systems"] if s != ORIGINAL]
    discrete = [s for s in systems if s not in (COPY, CONTINUOUS)]
    middle = [s for s in discrete if s != "kmeans"]
    pairs: list[tuple[str, str, bool]] = []  # (expected better, other, strictly)
    if COPY in systems and CONTINUOUS in systems:
        pairs.append((COPY, CONTINUOUS, False))
    if CONTINUOUS in systems:
        pairs += [(CONTINUOUS, s, True) for s in discrete]
    if "kmeans" in discrete:
        pairs += [(s, "kmeans", True) for s in middle]
    out: dict[str, Any] = {}
    for key, (name, higher) in ORDER_MEASURES.items():
        vals = {s: summary.get(s, {}).get(key) for s in systems}
        missing = [s for s, v in vals.items() if v is None or math.isnan(v)]
        if missing:
            out[key] = {"holds": None, "reason": f"{name} not measured for {', '.join(missing)}"}
            continue
        checks = []
        for a, b, strict in pairs:
            d = vals[a] - vals[b] if higher else vals[b] - vals[a]  # > 0: a is better
            checks.append({"better": a, "than": b, "relation": ">" if strict else ">=",
                           "values": [vals[a], vals[b]], "ok": bool(d > 0 if strict else d >= 0)})
        out[key] = {"holds": all(c["ok"] for c in checks), "checks": checks}
    return out


def format_order(report: dict[str, Any]) -> str:
    """One line per measure: whether the expected order held, and which pairs broke it."""
    order = report.get("expected_order") or expected_order(report)
    systems = [s for s in report["systems"] if s != ORIGINAL]
    discrete = [s for s in systems if s not in (COPY, CONTINUOUS)]
    tiers = [[s] for s in (COPY, CONTINUOUS) if s in systems]
    tiers += [[s for s in discrete if s != "kmeans"]] + ([["kmeans"]] if "kmeans" in discrete else [])
    chain = ""
    for i, t in enumerate(x for x in tiers if x):
        sep = "" if i == 0 else (" ≥ " if chain == label(COPY) else " > ")
        chain += sep + " / ".join(label(s) for s in t)
    lines = [f"Expected order ({chain}):"]
    for key, (name, higher) in ORDER_MEASURES.items():
        res = order.get(key, {})
        if res.get("holds") is None:
            lines.append(f"- {name}: not checked ({res.get('reason', 'not measured')})")
            continue
        if res["holds"]:
            lines.append(f"- {name}: holds")
            continue
        word = "above" if higher else "below"
        bad = [f"{label(c['better'])} {c['values'][0]:.3g} not {word} "
               f"{'or equal to ' if c['relation'] == '>=' else ''}{label(c['than'])} "
               f"{c['values'][1]:.3g}" for c in res["checks"] if not c["ok"]]
        lines.append(f"- {name}: fails ({'; '.join(bad)})")
    return "\n".join(lines)


def format_table(report: dict[str, Any]) -> str:
    """The markdown table with a caption line."""
    header, rows = table_rows(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    n = len(report["utterances"])
    asr = report.get("asr", {})
    note = (f"; WER skipped: {asr['skipped']}" if "skipped" in asr
            else f"; ASR: {asr.get('model')}")
    lines += ["", f"Averages over {n} utterances of `{report['data_dir']}`; synthesis: "
              f"{report['synthesis']}; best discretizer per column in bold{note}.", "",
              format_order(report)]
    return "\n".join(lines)


def train_vocoder_from_data(
    *,
    data_dir: str,
    config: str,
    out: str,
    upstream: str,
    upstream_ckpt: str | None = None,
    layer: int = -1,
    max_utts: int = 0,
    train_steps: int | None = None,
    device: str = "cpu",
    chunk_s: float = 30.0,
    strict: bool = False,
    feats_dir: str | None = None,
) -> dict[str, Any]:
    """Train a HiFi-GAN (:mod:`rpq_units.evaluation.vocoder`) on the continuous features of the first
    ``max_utts`` utterances of ``data_dir`` (all with 0); resumes from ``<out>.train``; writes
    ``out`` and ``<out>.json`` (the summary).

    ``feats_dir``: a ``dump_feats`` npy output of ``data_dir`` (the recipe's stage 2): the
    features of its utterances are read from it instead of computed again, when it was made
    with the same upstream, checkpoint, layer and precision (as ``encode --feats_dir``)."""
    import yaml

    from rpq_units.evaluation.vocoder import Vocoder, train_hifigan
    from rpq_units.pipeline.data import AudioLoader, load_data_dir
    from rpq_units.pipeline.features import FeatureExtractor
    from rpq_units.pipeline.steps import (
        features_of,
        iter_features,
        merge_in_order,
        report_skipped,
    )

    with open(config) as f:
        cfg = yaml.safe_load(f) or {}
    utts = load_data_dir(data_dir)
    if max_utts > 0:
        utts = utts[:max_utts]
    fx = FeatureExtractor(upstream=upstream, ckpt=upstream_ckpt, layer=layer, device=device,
                          chunk_s=chunk_s)
    feats, wavs, skipped = [], [], []
    dumped: dict[str, np.ndarray] = {}
    if feats_dir is not None:
        dumped, _ = features_of(
            "train_vocoder", feats_dir, utts, data_dir=data_dir, upstream=upstream,
            ckpt=fx.ckpt, sha=fx.ckpt_sha256, layer=fx.layer, autocast=None, batch_size=1)
    rest = [u for u in utts if u.uttid not in dumped]
    load = AudioLoader()
    computed = iter_features(rest, fx, strict=strict, skipped=skipped, desc="vocoder feats")
    try:
        for utt, f in merge_in_order(utts, dumped, computed):
            feats.append(f)
            wavs.append(load(utt))
    finally:
        computed.close()  # its progress bar ends its line before an error is printed
    report_skipped("train_vocoder", len(feats), len(utts), skipped)
    import torch

    # the initial weights from the config's seed too: the same data and config, the same vocoder
    torch.manual_seed(int((cfg.get("train") or {}).get("seed", 0)))
    voc = Vocoder(in_dim=fx.dim, hop=fx.stride, config=cfg, device=device)
    summary = train_hifigan(voc, feats, wavs, out=out, train_steps=train_steps)
    summary.update({"utterances": len(feats), "upstream": upstream, "layer": fx.layer,
                    "hop": fx.stride, "dim": fx.dim, "device": device})
    write_text_atomic(Path(out).with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    logger.info("train_vocoder: %s after %d steps", out, summary["steps"])
    return summary
