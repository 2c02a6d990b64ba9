"""Multilingual text normalisation, character tokens and CER scoring (hand-checked cases)."""

from __future__ import annotations

import json

import pytest

from rpq_units.evaluation.lang_scoring import (
    FEW_SHOT_LANGS,
    char_counts,
    char_tokens,
    normalize_text,
    score_files,
    score_multilingual,
    split_lid,
)
from rpq_units.evaluation.scoring import score


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("[noise] Hello, World!", "HELLO WORLD"),
        ("a [x] b [laughter] c", "A B C"),  # each bracketed span alone, not a..c greedily
        ("¿Qué tal? ¡Bien!", "QUÉ TAL BIEN"),
        ("Don't stop -- 100% sure.", "DONT STOP 100 SURE"),  # symbols (%) go too, digits stay
        ("кот, собака.", "КОТ СОБАКА"),
        ("Γάτα;", "ΓΆΤΑ"),
        ("बिल्ली। पानी", "बिल्ली पानी"),  # danda removed, vowel signs and virama kept
        ("ねこ、いぬ。", "ねこいぬ"),
        ("Straße", "STRASSE"),
        ("Cafe\u0301", "CAFÉ"),  # decomposed accent -> one code point (NFC)
        ("mèo  «chó»  [unk]", "MÈO CHÓ"),
        ("[noise]", ""),
    ],
)
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm


def test_normalized_text_is_nfc_single_code_points():
    assert len(normalize_text("Cafe\u0301")) == 4
    assert len(normalize_text("ΓΆΤΑ")) == 4


def test_split_lid():
    assert split_lid("[eng] HELLO WORLD") == ("eng", "HELLO WORLD")
    assert split_lid("[eng]HELLO") == ("eng", "HELLO")
    assert split_lid("HELLO [eng]") == (None, "HELLO [eng]")
    assert split_lid("") == (None, "")


def test_char_tokens_code_points_any_script():
    assert char_tokens("[eng] AB C", ["[eng]"]) == ["[eng]", "<space>", "A", "B", "<space>", "C"]
    # Devanagari: consonants, vowel signs and virama are separate code points.
    assert char_tokens("बिल्ली") == ["ब", "ि", "ल", "्", "ल", "ी"]
    assert char_tokens("ΓΆΤΑ") == ["Γ", "Ά", "Τ", "Α"]
    assert char_tokens("ねこ") == ["ね", "こ"]


def test_char_tokens_match_espnet_char_tokenizer():
    tokenizer = pytest.importorskip("espnet2.text.char_tokenizer", reason="espnet not installed")
    nlsyms = ["[eng]", "[hin]", "[jpn]"]
    tok = tokenizer.CharTokenizer(non_linguistic_symbols=nlsyms)
    for text in ["[hin] बिल्ली पानी", "[jpn] ねこいぬ", "[eng] MÈO CHÓ ΓΆΤΑ КОТ"]:
        assert tok.text2tokens(text) == char_tokens(text, nlsyms)
        assert tok.tokens2text(char_tokens(text, nlsyms)) == text


@pytest.mark.parametrize(
    ("ref", "hyp", "sub", "dele", "ins", "n"),
    [
        ("ABC", "ABD", 1, 0, 0, 3),
        ("AB CD", "ABCD", 0, 1, 0, 5),  # the space is a character
        ("बिल्ली", "बिल्ला", 1, 0, 0, 6),  # ी -> ा
        ("ΓΆΤΑ", "ΓΑΤΑ", 1, 0, 0, 4),
        ("ねこ", "ねこね", 0, 0, 1, 2),
        ("ABC", "", 0, 3, 0, 3),
    ],
)
def test_char_counts_hand_checked(ref, hyp, sub, dele, ins, n):
    c = char_counts([ref], [hyp])
    assert (c.sub, c.dele, c.ins, c.n) == (sub, dele, ins, n)
    assert c.rate == pytest.approx(100.0 * (sub + dele + ins) / n)


def test_char_counts_empty_reference():
    c = char_counts(["", "AB"], ["XY", "AB"], ids=["a", "b"])
    assert (c.ins, c.n, c.corr, c.utts, c.utt_errors) == (2, 2, 2, 2, 1)
    assert c.rate == pytest.approx(100.0)
    assert c.per_utt == [("a", 0, 0, 0, 2), ("b", 2, 0, 0, 0)]


def _sample():
    ref = {
        "eng_1": "[eng] ABC",  # 1 sub / 3
        "eng_2": "[eng] AB CD",  # 1 del / 5
        "hin_1": "[hin] बिल्ली",  # 1 sub / 6
        "lit_1": "[lit] LABAS",  # 5 del / 5 (no hypothesis)
        "vie_1": "[vie] MÈO",  # 1 ins / 3, LID wrong
    }
    hyp = {
        "eng_1": "[eng] ABD",
        "eng_2": "[eng] ABCD",
        "hin_1": "[hin] बिल्ला",
        "vie_1": "[lit] MÈOO",
    }
    return ref, hyp


def test_per_language_few_shot_and_lid():
    ref, hyp = _sample()
    r = score_multilingual(ref, hyp)
    assert {k: (v.err, v.n) for k, v in r.per_lang.items()} == {
        "eng": (2, 8), "hin": (1, 6), "lit": (5, 5), "vie": (1, 3),
    }  # fmt: skip
    assert r.per_lang["eng"].rate == pytest.approx(25.0)
    assert (r.overall.err, r.overall.n, r.overall.utts) == (9, 22, 5)
    assert r.overall.rate == pytest.approx(100 * 9 / 22)
    assert "lit" in FEW_SHOT_LANGS and "vie" in FEW_SHOT_LANGS
    assert (r.few_shot.err, r.few_shot.n) == (6, 8)
    assert (r.normal.err, r.normal.n) == (3, 14)
    # LID: eng_1, eng_2, hin_1 right; lit_1 (no hypothesis) and vie_1 wrong.
    assert (r.lid_correct, r.lid_total) == (3, 5)
    assert r.lid_accuracy == pytest.approx(60.0)
    assert r.missing_hyps == 1


def test_language_from_utt2lang_without_prefix():
    ref = {"a": "ABC", "b": "КОТ"}
    hyp = {"a": "ABC", "b": "КИТ"}
    r = score_multilingual(ref, hyp, {"a": "eng", "b": "rus"}, few_shot_langs=["rus"])
    assert r.lid_accuracy is None
    assert r.per_lang["rus"].sub == 1 and r.per_lang["eng"].err == 0
    assert r.few_shot.rate == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="no language"):
        score_multilingual(ref, hyp)


def test_hypothesis_without_reference_is_an_error():
    with pytest.raises(ValueError, match="no reference"):
        score_multilingual({"a": "[eng] A"}, {"a": "[eng] A", "zz": "[eng] B"})


def test_score_files_writes_tables(tmp_path):
    ref, hyp = _sample()
    (tmp_path / "ref").write_text("".join(f"{k} {v}\n" for k, v in ref.items()), encoding="utf-8")
    (tmp_path / "hyp").write_text("".join(f"{k} {v}\n" for k, v in hyp.items()), encoding="utf-8")
    score_files(tmp_path / "ref", tmp_path / "hyp", tmp_path / "score")
    data = json.loads((tmp_path / "score" / "cer.json").read_text(encoding="utf-8"))
    assert data["overall"]["cer"] == pytest.approx(round(100 * 9 / 22, 2))
    assert data["per_lang"]["hin"]["sub"] == 1
    assert data["lid_accuracy"] == pytest.approx(60.0)
    table = (tmp_path / "score" / "cer_per_lang.txt").read_text(encoding="utf-8")
    assert "lit *" in table and "few-shot*" in table and "LID accuracy: 60.00%" in table
    assert not list((tmp_path / "score").glob("*.tmp"))
    # result.txt has one writer, the shared scoring path; the breakdown agrees with it
    assert not (tmp_path / "score" / "result.txt").exists()
    tags = ["[eng]", "[hin]", "[lit]", "[vie]"]
    c = score(tmp_path / "ref", tmp_path / "hyp", "char", tmp_path / "result.txt", symbols=tags)
    assert (c.n, c.err) == (22, 9) and c.rate == pytest.approx(data["overall"]["cer"], abs=0.005)


def test_recipe_scoring_and_table(tmp_path):
    """local/score_ml_superb.py: rescoring of finished decodes and the per-language table."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "local" / "score_ml_superb.py"
    spec = importlib.util.spec_from_file_location("score_ml_superb", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    ref, hyp = _sample()
    data = tmp_path / "data" / "test_10min"
    data.mkdir(parents=True)
    (data / "utt2lang").write_text("".join(f"{u} {u.split('_')[0]}\n" for u in ref))
    for model, done in (("fbank_llast_pq", True), ("fbank_llast_rpq", False)):
        d = tmp_path / "exp" / f"asr_{model}" / "decode_test_10min_nolm"
        d.mkdir(parents=True)
        (d / "ref").write_text("".join(f"{k} {v}\n" for k, v in ref.items()), encoding="utf-8")
        (d / "hyp").write_text("".join(f"{k} {v}\n" for k, v in hyp.items()), encoding="utf-8")
        if done:
            (d / ".done").touch()
    args = ["--exp_dir", str(tmp_path / "exp"), "--test_sets", "test_10min"]
    assert mod.main(["score", *args, "--data_dir", str(tmp_path / "data")]) == 0
    scored = tmp_path / "exp" / "asr_fbank_llast_pq" / "decode_test_10min_nolm"
    assert json.loads((scored / "cer.json").read_text())["overall"]["err"] == 9
    assert not (tmp_path / "exp" / "asr_fbank_llast_rpq" / "decode_test_10min_nolm" / "cer.json").exists()
    text = mod.table(tmp_path / "exp", ["test_10min"])
    lines = text.splitlines()[1:]
    assert text.startswith("\n")  # appended after the engine's table
    assert lines[0] == "## test_10min: CER (%) per language"
    assert lines[2] == "| model | CER all | few-shot | normal | LID acc | eng | hin | lit* | vie* |"
    assert lines[4] == "| fbank_llast_pq | 40.9 | 75.0 | 21.4 | 60.0 | 25.0 | 16.7 | 100.0 | 33.3 |"
    assert len([line for line in lines if line.startswith("| fbank")]) == 1
    # only the decodes of the current settings (the engine's results_rows.tsv) are listed
    rows = tmp_path / "exp" / "results_rows.tsv"
    rows.write_text(f"{tmp_path}/exp/asr_fbank_llast_kmeans\tnolm\ttest_10min\tx/result.txt\n")
    assert "fbank_llast_pq" not in mod.table(tmp_path / "exp", ["test_10min"], rows)
    rows.write_text(f"{scored.parent}\tnolm\ttest_10min\t{scored}/result.txt\tconf/a.yaml\n")
    assert "| fbank_llast_pq | 40.9 |" in mod.table(tmp_path / "exp", ["test_10min"], rows)


def test_results_table_labels_cer_columns_of_a_wer_table(tmp_path):
    """The combined recipe: WER columns for LibriSpeech, a CER column for ML-SUPERB."""
    from rpq_units.evaluation.scoring import Counts, table, write_result

    adir = tmp_path / "asr_x_pq"
    for s, unit in (("ls_test_clean", "word"), ("mlsuperb_test_10min", "char")):
        (adir / f"decode_{s}_nolm").mkdir(parents=True)
        write_result(Counts(corr=9, sub=1), adir / f"decode_{s}_nolm" / "result.txt", unit)
    text = table(tmp_path, ["ls_test_clean", "mlsuperb_test_10min"])
    assert "| model | units | configs | train (min) | ls_test_clean (WER) | mlsuperb_test_10min (CER) |" in text
    assert "| 10.0 | 10.0 |" in text
    # the measure comes from each file: a cell scored differently from its column says so
    other = tmp_path / "asr_y" / "decode_mlsuperb_test_10min_nolm"
    other.mkdir(parents=True)
    write_result(Counts(corr=8, sub=2), other / "result.txt", "word")
    text = table(tmp_path, ["ls_test_clean", "mlsuperb_test_10min"])
    assert "| y | - | - | - | - | 20.0 (WER) |" in text
