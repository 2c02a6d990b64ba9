"""LibriSpeech data preparation on a generated LibriSpeech-layout tree, bad inputs included."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import soundfile as sf
from recipe_helpers import ROOT, have, run

PREP = ROOT / "local" / "data_prep_librispeech.sh"
GEN = ROOT / "local" / "generate_librispeech_like.py"

pytestmark = pytest.mark.skipif(not have("espeak-ng", "sox"), reason="needs espeak-ng and sox (tools/install.sh)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "LibriSpeech"
    r = subprocess.run([sys.executable, str(GEN), "--out_dir", str(out), "--num_train", "24",
                        "--num_dev", "4", "--num_test", "6", "--num_heldout", "6",
                        "--num_train_speakers", "4", "--num_heldout_speakers", "2", "--seed", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def train_copy(corpus, tmp_path):
    dst = tmp_path / "train-clean"
    shutil.copytree(corpus / "train-clean", dst)
    return dst


def test_generated_layout(corpus):
    assert sorted(p.name for p in corpus.iterdir()) == ["dev-clean", "test-clean", "test-heldout", "train-clean"]
    flacs = sorted((corpus / "train-clean").glob("*/*/*.flac"))
    assert len(flacs) == 24
    for f in flacs:
        spk, chapter, _ = f.stem.split("-")
        assert f.parent.name == chapter and f.parent.parent.name == spk
        info = sf.info(f)
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
    trans = sorted((corpus / "train-clean").glob("*/*/*.trans.txt"))
    lines = [line for t in trans for line in t.read_text().splitlines()]
    assert len(lines) == 24
    assert all(line.split()[1:] and line.upper() == line for line in lines)


def test_heldout_voices_are_not_in_training(corpus):
    def voices(part):
        rows = (corpus / part / "SPEAKERS.TXT").read_text().splitlines()
        return {r.split()[0] for r in rows}, {r.split()[2] for r in rows}
    train_ids, train_voices = voices("train-clean")
    held_ids, held_voices = voices("test-heldout")
    assert not train_ids & held_ids and not train_voices & held_voices
    assert {p.name for p in (corpus / "test-heldout").iterdir() if p.is_dir()} == held_ids


def test_generator_is_deterministic(tmp_path):
    outs = []
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, str(GEN), "--out_dir", str(tmp_path / name), "--num_train", "5",
                            "--num_dev", "0", "--num_test", "0", "--num_heldout", "0", "--seed", "7"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(sorted(p.read_text() for p in (tmp_path / name).glob("*/*/*/*.trans.txt")))
    assert outs[0] == outs[1]


def test_data_prep_writes_sorted_tables(corpus, tmp_path):
    r = run([PREP, corpus / "train-clean", tmp_path / "data"])
    assert r.returncode == 0, r.stderr
    d = tmp_path / "data"
    tables = {n: (d / n).read_text().splitlines() for n in ("wav.scp", "text", "utt2spk", "spk2utt")}
    assert len(tables["wav.scp"]) == len(tables["text"]) == len(tables["utt2spk"]) == 24
    for name, lines in tables.items():
        keys = [line.split()[0] for line in lines]
        assert keys == sorted(keys, key=lambda k: k.encode()) and len(set(keys)) == len(keys), name
    for line in tables["wav.scp"]:
        utt, path = line.split()
        spk, chapter, _ = utt.split("-")
        assert path == str(corpus / "train-clean" / spk / chapter / f"{utt}.flac")
    for line in tables["utt2spk"]:
        utt, spk = line.split()
        assert utt.startswith(spk + "-")
    assert sum(len(line.split()) - 1 for line in tables["spk2utt"]) == 24
    assert not (tmp_path / "data.tmp").exists()
    trans = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1]
             for t in (corpus / "train-clean").glob("*/*/*.trans.txt") for line in t.read_text().splitlines()}
    assert {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in tables["text"]} == trans


def test_missing_corpus_dir(tmp_path):
    r = run([PREP, tmp_path / "nope", tmp_path / "data"])
    assert r.returncode == 1
    assert f"corpus set dir not found: {tmp_path}/nope" in r.stderr
    assert not (tmp_path / "data").exists()


def test_transcript_without_audio(train_copy, tmp_path):
    flac = sorted(train_copy.glob("*/*/*.flac"))[3]
    flac.unlink()
    r = run([PREP, train_copy, tmp_path / "data"])
    assert r.returncode == 1
    assert f"transcript line for {flac.stem} but no audio file {flac}" in r.stderr
    assert ".trans.txt" in r.stderr
    assert not (tmp_path / "data").exists()


def test_audio_without_transcript(train_copy, tmp_path):
    trans = sorted(train_copy.glob("*/*/*.trans.txt"))[0]
    lines = trans.read_text().splitlines()
    trans.write_text("\n".join(lines[1:]) + "\n")
    r = run([PREP, train_copy, tmp_path / "data"])
    assert r.returncode == 1
    orphan = trans.parent / (lines[0].split()[0] + ".flac")
    assert f"{orphan}: audio file without a transcript line" in r.stderr


def test_duplicate_utterance_id(train_copy, tmp_path):
    trans = sorted(train_copy.glob("*/*/*.trans.txt"))[1]
    first = trans.read_text().splitlines()[0]
    with trans.open("a") as f:
        f.write(first.split()[0] + " SOME OTHER TEXT\n")
    r = run([PREP, train_copy, tmp_path / "data"])
    assert r.returncode == 1
    assert f"duplicate utterance id {first.split()[0]} in {trans}" in r.stderr


def test_utterance_in_wrong_chapter_file(train_copy, tmp_path):
    transcripts = sorted(train_copy.glob("*/*/*.trans.txt"))
    stray = transcripts[0].read_text().splitlines()[0]
    with transcripts[-1].open("a") as f:
        f.write(stray + "\n")
    r = run([PREP, train_copy, tmp_path / "data"])
    assert r.returncode == 1
    assert f"{transcripts[-1]}: utterance id {stray.split()[0]} does not belong" in r.stderr


def test_undecodable_audio(train_copy, tmp_path):
    flac = sorted(train_copy.glob("*/*/*.flac"))[5]
    flac.write_bytes(b"this is not a flac file at all" * 10)
    r = run([PREP, train_copy, tmp_path / "data"])
    assert r.returncode == 1
    assert f"{flac}: cannot decode audio of utterance {flac.stem}" in r.stderr
    assert not (tmp_path / "data" / "wav.scp").exists()


def test_truncated_audio_caught_by_full_check(train_copy, tmp_path):
    flac = sorted(train_copy.glob("*/*/*.flac"))[2]
    data = flac.read_bytes()
    flac.write_bytes(data[: len(data) // 2] + bytes(4096))
    r = run([PREP, "--check_audio", "full", train_copy, tmp_path / "data"])
    assert r.returncode == 1
    assert str(flac) in r.stderr


def test_usage_errors(tmp_path):
    r = run([PREP, tmp_path])
    assert r.returncode == 2 and "Usage" in r.stderr
    r = run([PREP, "--check", "x", tmp_path, tmp_path / "d"])
    assert r.returncode == 2 and "unknown option --check" in r.stderr


def test_generation_is_repeatable(corpus, tmp_path):
    """The same seed gives the same audio, sample for sample (sox's dither is seeded): the demo's
    features, codebooks and figures do not move between runs because of the corpus."""
    out = tmp_path / "again"
    r = subprocess.run([sys.executable, str(GEN), "--out_dir", str(out), "--num_train", "0",
                        "--num_dev", "4", "--num_test", "0", "--num_heldout", "0",
                        "--num_train_speakers", "4", "--num_heldout_speakers", "2", "--seed", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    first = sorted((corpus / "dev-clean").glob("*/*/*.flac"))
    again = sorted((out / "dev-clean").glob("*/*/*.flac"))
    assert [f.name for f in again] == [f.name for f in first] and len(first) == 4
    for a, b in zip(first, again, strict=True):
        assert sf.read(a)[0].tolist() == sf.read(b)[0].tolist(), a.name
