"""local/data_prep_ml_superb.py on generated ML-SUPERB-layout trees, run as a user runs it."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
PREP = REPO / "local" / "data_prep_ml_superb.py"
GEN = REPO / "local" / "generate_ml_superb_like.py"
# The scripts import rpq_units; make the checkout importable even before `pip install -e .`.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def write_lang(root: Path, source: str, lang: str, splits: dict[str, list[tuple[str, str]]]):
    """One <source>/<lang> folder: a short tone per utterance and the given transcripts."""
    d = root / source / lang
    (d / "wav").mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(d / f"transcript_{name}.txt", "w", encoding="utf-8") as f:
            for uttid, text in rows:
                f.write(f"{uttid} 0.10 {text}\n")
                tone = 0.1 * np.sin(np.arange(1600) * 0.05).astype(np.float32)
                sf.write(d / "wav" / f"{uttid}.wav", tone, 16000, subtype="PCM_16")


def rows(prefix: str, n: int, text: str, start: int = 1) -> list[tuple[str, str]]:
    return [(f"{prefix}_{i:03d}", f"{text} {i}") for i in range(start, start + n)]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "mlsuperb"
    for source in ("srcA", "srcB"):
        # The same corpus uttids in both sources: the prepared ids must still be unique.
        write_lang(root, source, "eng", {
            "1h_train": rows("utt", 6, "[noise] Hello, world!"),
            "10min_train": rows("utt", 2, "[noise] Hello, world!"),
            "10min_dev": rows("dev", 1, "Good day."),
            "10min_test": rows("tst", 2, "See you [laughter] soon?"),
        })  # fmt: skip
    write_lang(root, "srcA", "rus", {
        "1h_train": rows("r", 4, "Кот, собака."),
        "10min_train": rows("r", 1, "Кот, собака."),
        "10min_dev": rows("rd", 1, "Дом!"),
        "10min_test": rows("rt", 1, "Вода?"),
    })  # fmt: skip
    # lit is a reserved few-shot language: 8 training utterances over two sources -> 5 kept.
    for source, start in (("srcA", 1), ("srcB", 5)):
        write_lang(root, source, "lit", {
            "1h_train": rows("l", 4, "Labas rytas.", start),
            "10min_train": rows("l", 4, "Labas rytas.", start),
            "10min_dev": rows("ld", 1, "Ačiū.", start),
            "10min_test": rows("lt", 1, "Gerai!", start),
        })  # fmt: skip
    return root


_spec = importlib.util.spec_from_file_location("data_prep_ml_superb", PREP)
prep_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = prep_module
_spec.loader.exec_module(prep_module)


@pytest.fixture
def run_prep(caplog, capsys):
    """Run the script's ``main`` in this process (the subprocess start costs seconds); the
    result carries its return code and everything it logged or printed to stderr."""

    def run(root: Path, out: Path, *args: str) -> SimpleNamespace:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            rc = prep_module.main(["--root", str(root), "--out_dir", str(out), *args])
        return SimpleNamespace(returncode=rc, stderr=caplog.text + capsys.readouterr().err)

    return run


def table(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(" ", 1)) if " " in line else (line, "") for line in lines]


def test_prep_1h_tables(tree, tmp_path):
    out = tmp_path / "data"
    res = subprocess.run(
        [sys.executable, str(PREP), "--root", str(tree), "--out_dir", str(out), "--duration", "1h"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    train = out / "train_1h"
    text = dict(table(train / "text"))
    # 12 eng + 4 rus + 5 of 8 lit
    assert len(text) == 21
    assert text["eng_srcA_utt_001"] == "HELLO WORLD 1"
    assert text["eng_srcB_utt_001"] == "HELLO WORLD 1"  # same corpus id, another source
    assert text["rus_srcA_r_002"] == "КОТ СОБАКА 2"
    lang = dict(table(train / "utt2lang"))
    assert sum(v == "lit" for v in lang.values()) == 5
    assert set(lang.values()) == {"eng", "rus", "lit"}
    for name in ("wav.scp", "text", "utt2spk", "utt2lang", "spk2utt"):
        keys = [k for k, _ in table(train / name)]
        assert keys == sorted(keys, key=str.encode), name
        assert len(keys) == len(set(keys)), name
    utt2spk = dict(table(train / "utt2spk"))
    assert all(u.startswith(s) for u, s in utt2spk.items())
    spk2utt = dict(table(train / "spk2utt"))
    assert sorted(u for v in spk2utt.values() for u in v.split()) == sorted(utt2spk)
    wavs = dict(table(train / "wav.scp"))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in wavs.values())
    # dev and test from the 10-minute files, few-shot languages not limited there.
    test_text = dict(table(out / "test_10min" / "text"))
    assert test_text["eng_srcA_tst_002"] == "SEE YOU SOON 2"
    assert sum(k.startswith("lit_") for k in test_text) == 2
    assert len(table(out / "dev_10min" / "text")) == 5
    assert (out / "nlsyms.txt").read_text() == ""
    assert not list(out.rglob("*.tmp"))


def test_prep_10min_and_lid(tree, tmp_path, run_prep):
    out = tmp_path / "data"
    res = run_prep(tree, out, "--duration", "10min", "--lid", "true")
    assert res.returncode == 0, res.stderr
    text = dict(table(out / "train_10min" / "text"))
    # 2 + 2 eng, 1 rus, 5 of 8 lit
    assert len(text) == 10
    assert text["rus_srcA_r_001"] == "[rus] КОТ СОБАКА 1"
    assert all(v.startswith("[") for v in text.values())
    assert (out / "nlsyms.txt").read_text().split() == ["[eng]", "[lit]", "[rus]"]


def test_few_shot_choice_is_seeded(tree, tmp_path, run_prep):
    def lit_ids(seed: str) -> list[str]:
        out = tmp_path / f"data{seed}"
        assert run_prep(tree, out, "--seed", seed).returncode == 0
        return [k for k, _ in table(out / "train_1h" / "text") if k.startswith("lit_")]

    first = lit_ids("0")
    assert len(first) == 5 and lit_ids("0") == first
    assert lit_ids("1") != first


def test_single_language_and_prefix(tree, tmp_path, run_prep):
    out = tmp_path / "data"
    res = run_prep(tree, out, "--single_lang", "lit", "--id_prefix", "mlsuperb_")
    assert res.returncode == 0, res.stderr
    text = dict(table(out / "train_1h" / "text"))
    assert len(text) == 8  # monolingual: no few-shot limit
    assert all(k.startswith("mlsuperb_lit_") for k in text)
    assert all(s.startswith("mlsuperb_lit_") for _, s in table(out / "train_1h" / "utt2spk"))


def test_bad_inputs_skipped_with_warning_naming_the_file(tree, tmp_path, run_prep):
    (tree / "srcA" / "fra" / "wav").mkdir(parents=True)  # language folder, no transcripts
    (tree / "srcB" / "lit" / "wav" / "l_006.wav").unlink()  # a transcript line without wav
    (tree / "srcA" / "rus" / "transcript_10min_dev.txt").write_text("\n")  # empty transcript
    out = tmp_path / "data"
    res = run_prep(tree, out)
    assert res.returncode == 0, res.stderr
    assert f"{tree / 'srcA' / 'fra'}: language folder without transcript files" in res.stderr
    assert f"{tree / 'srcB' / 'lit' / 'transcript_1h_train.txt'}:2: utterance 'l_006'" in res.stderr
    assert f"{tree / 'srcA' / 'rus' / 'transcript_10min_dev.txt'}: empty transcript" in res.stderr
    # Nothing else lost: the rest of rus and lit is there.
    train = dict(table(out / "train_1h" / "text"))
    assert sum(k.startswith("rus_") for k in train) == 4
    assert sum(k.startswith("lit_") for k in train) == 5  # 7 left, 5 kept
    assert "lit_srcB_l_006" not in train
    dev = dict(table(out / "dev_10min" / "text"))
    assert not any(k.startswith("rus_") for k in dev) and len(dev) == 4
    assert "fra" not in (out / "train_1h" / "utt2lang").read_text()


@pytest.mark.parametrize("case", ["no_transcripts", "missing_wav", "empty_transcript"])
def test_bad_inputs_strict_fail(tree, tmp_path, run_prep, case):
    if case == "no_transcripts":
        (tree / "srcA" / "fra").mkdir()
        named = tree / "srcA" / "fra"
    elif case == "missing_wav":
        (tree / "srcA" / "rus" / "wav" / "rt_001.wav").unlink()
        named = tree / "srcA" / "rus" / "transcript_10min_test.txt"
    else:
        named = tree / "srcB" / "eng" / "transcript_10min_test.txt"
        named.write_text("")
    out = tmp_path / "data"
    res = run_prep(tree, out, "--strict", "true")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {named}")
    assert not (out / "train_1h" / "text").exists()


def test_missing_root_and_empty_tree(tmp_path, run_prep):
    res = run_prep(tmp_path / "nowhere", tmp_path / "data")
    assert res.returncode == 1 and "ML-SUPERB root not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_prep(tmp_path / "empty", tmp_path / "data")
    assert res.returncode == 1 and "no <source>/<lang> folders" in res.stderr


def test_rerun_replaces_tables(tree, tmp_path, run_prep):
    out = tmp_path / "data"
    assert run_prep(tree, out).returncode == 0
    first = (out / "train_1h" / "text").read_text(encoding="utf-8")
    shutil.rmtree(tree / "srcB")
    assert run_prep(tree, out).returncode == 0
    second = (out / "train_1h" / "text").read_text(encoding="utf-8")
    assert "srcB" in first and "srcB" not in second


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng and sox are needed to synthesize speech")  # fmt: skip
def test_generator_tree_prepares(tmp_path, run_prep):
    """The synthetic corpus is in the real layout: the real data prep reads it unchanged."""
    corpus = tmp_path / "corpus"
    gen = subprocess.run(
        [sys.executable, str(GEN), "--out_dir", str(corpus), "--n_1h", "6", "--n_10min", "2",
         "--n_dev", "1", "--n_test", "1", "--sources", "1", "--sources_per_lang", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    raw = (corpus / "espeak_read" / "hin" / "transcript_1h_train.txt").read_text(encoding="utf-8")
    assert len(raw.splitlines()) == 6
    assert any("\u0900" <= c <= "\u097f" for c in raw)
    out = tmp_path / "data"
    res = run_prep(corpus, out, "--lid", "true")
    assert res.returncode == 0, res.stderr
    text = dict(table(out / "train_1h" / "text"))
    langs = {v.split()[0] for v in text.values()}
    assert len(langs) == 9 and "[jpn]" in langs and "[rus]" in langs
    assert sum(v.startswith("[vie]") for v in text.values()) == 5  # few-shot
    assert not any(c in v for v in text.values() for c in ",.?!;।。、¿")
    assert not any(c in v.split(maxsplit=1)[1] for v in text.values() for c in "[]")
    info = sf.info(next(iter(dict(table(out / "test_10min" / "wav.scp")).values())))
    assert (info.samplerate, info.channels) == (16000, 1)
