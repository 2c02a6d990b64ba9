"""rpq-units encode quantizes many utterances in one search (``quantize_frames``): on real
recorded speech (the Asterisk English prompts of the Debian packages, 20 ms log-mel features
as in egs/asterisk) the units and the ark are byte-identical to those of one utterance at a
time, for K-means, PQ and RPQ codebooks, with batches cut at any place and with very short
utterances among them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rpq_units.pipeline import steps
from rpq_units.pipeline.data import write_data_dir

REPO = Path(__file__).resolve().parents[2]
VOICE = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
MEL = REPO / "egs" / "asterisk" / "conf" / "upstream" / "mel_20ms.yaml"

pytestmark = pytest.mark.skipif(
    not VOICE.is_dir(), reason="Debian package asterisk-core-sounds-en-g722 not installed "
    "(bash tools/install.sh as root installs it)")


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    """A data dir of 40 real prompts (digits and phrases, 0.3-4 s) and three clips cut from
    them to 0.06-0.22 s (3-11 frames), as 16 kHz wavs."""
    import G722

    root = tmp_path_factory.mktemp("real")
    clips = sorted(VOICE.glob("digits/*.g722"))[:20] + sorted(VOICE.glob("*.g722"))[:20]
    rows = []
    for i, src in enumerate(clips):
        x = np.asarray(G722.G722(16000, 64000).decode(src.read_bytes()), np.float32) / 32768.0
        cut = {0: 960, 13: 2560, 26: 3520}.get(i)  # 3, 8 and 11 frames
        cuts = {"": x} if cut is None else {"": x, "-cut": x[:cut]}
        for tag, y in cuts.items():
            uttid = f"allison-{i:02d}{tag}"
            wav = root / "wav" / f"{uttid}.wav"
            wav.parent.mkdir(exist_ok=True)
            sf.write(wav, y, 16000)
            rows.append((uttid, str(wav), "A", "allison", "en"))
    write_data_dir(root / "data", rows)
    return root


@pytest.mark.parametrize("method, kw", [
    ("kmeans", {"codebook_size": 100}),
    ("pq", {"num_codebooks": 4, "codebook_size": 32}),
    ("rpq", {"num_codebooks": 4, "codebook_size": 32, "dims_ratio": 0.25}),
])
def test_batched_units_equal_one_at_a_time_on_real_speech(real_data, method, kw, tmp_path):
    data = str(real_data / "data")
    feats = real_data / "feats"
    if not (feats / "feats.json").is_file():
        steps.dump_feats(data_dir=data, out_dir=str(feats), upstream="baseline_local",
                         upstream_ckpt=str(MEL), portion=1.0)
    book = tmp_path / "codebook.pt"
    steps.fit(feats_dir=str(feats), out=str(book), method=method, seed=0, max_iter=10, **kw)
    out = {}
    for frames in (1, 97, steps.QUANTIZE_FRAMES):  # one at a time, cut anywhere, the default
        for source in ("feats_dir", "upstream"):
            d = tmp_path / f"{frames}-{source}"
            summary = steps.encode(
                data_dir=data, codebook=str(book), out=str(d / "units"), ark=str(d / "units.ark"),
                feats_dir=str(feats) if source == "feats_dir" else None, quantize_frames=frames)
            assert summary["utterances"] == 43 and summary["skipped"] == 0
            out[frames, source] = [(d / n).read_bytes() for n in ("units", "units.ark")]
    first = out[1, "feats_dir"]
    assert all(v == first for v in out.values())
    short = [ln for ln in first[0].decode().splitlines() if "-cut" in ln]
    assert len(short) == 3 and all(
        (len(ln.split()) - 1) // kw.get("num_codebooks", 1) <= 11 for ln in short)
