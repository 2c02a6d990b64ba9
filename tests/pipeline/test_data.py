"""Kaldi data dirs and audio loading: plain paths, pipes, segments, resampling, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as taf
from asset_helpers import sine_speech, write_sine_speech

from rpq_units.pipeline.data import (
    AudioError,
    AudioLoader,
    DataDirError,
    load_audio,
    load_data_dir,
    read_table,
)


def write_dir(d, wav_lines, segments=None, text=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text("".join(f"{line}\n" for line in wav_lines))
    if segments is not None:
        (d / "segments").write_text("".join(f"{line}\n" for line in segments))
    if text is not None:
        (d / "text").write_text("".join(f"{line}\n" for line in text))
    return d


def test_plain_paths_text_utt2spk_sorted(tiny_data):
    utts = load_data_dir(tiny_data)
    ids = [u.uttid for u in utts]
    assert ids == sorted(ids) and len(ids) == 7
    u = utts[0]
    assert u.text.startswith("HELLO") and u.speaker in ("spk0", "spk1")
    wav = load_audio(u)
    assert wav.dtype == np.float32 and wav.ndim == 1
    ref, sr = sf.read(u.source, dtype="float32")
    assert sr == 16000
    np.testing.assert_array_equal(wav, ref)


def test_pipe_and_plain_give_the_same_audio(tmp_path):
    p = write_sine_speech(tmp_path / "a.flac", 1.2, seed=1)
    d = write_dir(
        tmp_path / "d",
        [f"cat_utt cat {p} |", f"plain_utt {p}", f"sox_utt sox {p} -t wav - |"],
    )
    utts = {u.uttid: u for u in load_data_dir(d)}
    assert utts["cat_utt"].is_pipe and not utts["plain_utt"].is_pipe
    plain = load_audio(utts["plain_utt"])
    np.testing.assert_array_equal(load_audio(utts["cat_utt"]), plain)
    np.testing.assert_allclose(load_audio(utts["sox_utt"]), plain, atol=1e-4)


def test_segments_from_file_and_pipe(tmp_path):
    p = write_sine_speech(tmp_path / "rec.wav", 3.0, seed=2)
    full = sf.read(p, dtype="float32")[0]
    d = write_dir(
        tmp_path / "d",
        [f"recA {p}", f"recB cat {p} |"],
        segments=[
            "a1 recA 0.50 1.25",
            "a2 recA 2.0 3.0",
            "a3 recA 2.5 -1",
            "b1 recB 0.5 1.25",
            "b2 recB 2.5 -1",
        ],
        text=["a1 ONE", "a2 TWO", "b1 THREE"],
    )
    utts = {u.uttid: u for u in load_data_dir(d)}
    assert set(utts) == {"a1", "a2", "a3", "b1", "b2"}
    assert utts["a1"].recid == "recA" and utts["a1"].text == "ONE"
    loader = AudioLoader()
    np.testing.assert_array_equal(loader(utts["a1"]), full[8000:20000])
    np.testing.assert_array_equal(loader(utts["a2"]), full[32000:48000])
    np.testing.assert_array_equal(loader(utts["b1"]), full[8000:20000])
    # a negative end time (Kaldi) reads to the end of the recording
    np.testing.assert_array_equal(loader(utts["a3"]), full[40000:])
    np.testing.assert_array_equal(loader(utts["b2"]), full[40000:])


def test_resamples_8k_stereo_to_16k_mono(tmp_path):
    x = sine_speech(1.0, sample_rate=8000, seed=3, channels=2)
    p = tmp_path / "st.wav"
    sf.write(p, x, 8000, subtype="FLOAT")
    d = write_dir(tmp_path / "d", [f"st {p}"])
    wav = load_audio(load_data_dir(d)[0])
    assert wav.shape == (16000,) and wav.dtype == np.float32
    ref = taf.resample(torch.from_numpy(x.mean(axis=1)), 8000, 16000).numpy()
    np.testing.assert_allclose(wav, ref, atol=1e-6)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", "no such file"),
        ("garbage", "unreadable audio"),
        ("empty", "empty audio"),
        ("failing_pipe", "exited with status 3"),
        ("silent_pipe", "wrote no audio"),
        ("zero_segment", "zero-length segment"),
        ("past_end", "past the end"),
        ("past_end_pipe", "past the end"),
        ("start_past_end", "past the end"),
        ("nan_audio", "NaN or Inf"),
    ],
)
def test_bad_input_names_the_utterance(tmp_path, case, pattern):
    good = write_sine_speech(tmp_path / "good.wav", 1.0)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    garbage = tmp_path / "garbage.wav"
    garbage.write_text("this is not audio\n")
    wav_lines = {
        "missing": f"bad_utt {tmp_path / 'nope.wav'}",
        "garbage": f"bad_utt {garbage}",
        "empty": f"bad_utt {empty}",
        "failing_pipe": "bad_utt echo oops >&2; exit 3 |",
        "silent_pipe": "bad_utt true |",
        "zero_segment": f"rec {good}",
        "past_end": f"rec {good}",
        "past_end_pipe": f"rec cat {good} |",
        "start_past_end": f"rec {good}",
        "nan_audio": f"bad_utt {nan}",
    }[case]
    segments = {
        "zero_segment": ["bad_utt rec 0.5 0.5"],
        "past_end": ["bad_utt rec 0.5 2.5"],
        "past_end_pipe": ["bad_utt rec 0.2 1.9"],
        "start_past_end": ["bad_utt rec 1.5 -1"],
    }.get(case)
    d = write_dir(tmp_path / "d", [wav_lines], segments=segments)
    (utt,) = load_data_dir(d)
    with pytest.raises(AudioError, match=pattern) as err:
        load_audio(utt)
    msg = str(err.value)
    assert "bad_utt" in msg and "\n" not in msg
    if case == "failing_pipe":
        assert "oops" in msg  # the command's own error


def test_table_errors(tmp_path):
    (tmp_path / "t").write_text("a 1\nb 2\na 3\n")
    with pytest.raises(DataDirError, match="duplicate key 'a'"):
        read_table(tmp_path / "t")
    (tmp_path / "u").write_text("a\n")
    with pytest.raises(DataDirError, match="has no value"):
        read_table(tmp_path / "u")
    assert read_table(tmp_path / "u", allow_empty=True) == {"a": ""}
    with pytest.raises(DataDirError, match="no such file"):
        read_table(tmp_path / "missing")
    (tmp_path / "latin1").write_bytes("a OK\nb CAF\u00c9\n".encode("latin-1"))
    with pytest.raises(DataDirError, match=r"latin1:2: not UTF-8 text \(byte 0xc9 at column 6\)"):
        read_table(tmp_path / "latin1")
    d = write_dir(tmp_path / "d", ["rec x.wav"], segments=["s1 other 0 1"])
    with pytest.raises(DataDirError, match="recording 'other' not in wav.scp"):
        load_data_dir(d)
    d = write_dir(tmp_path / "e", ["rec x.wav"], segments=["s1 rec 0"])
    with pytest.raises(DataDirError, match="expected 4 fields"):
        load_data_dir(d)
