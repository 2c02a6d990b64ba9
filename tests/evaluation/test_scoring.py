"""WER/CER scoring against hand-checked alignments, result.txt and the results table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rpq_units.evaluation import scoring


def test_scoring_starts_without_torch():
    """Stages 10 and 12 start the scoring once per decode and table: without torch (the package
    loads its top-level names on first use) it starts in a tenth of a second, not in seconds."""
    code = "import sys, rpq_units.evaluation.scoring; sys.exit('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _files(tmp_path, refs: dict[str, str], hyps: dict[str, str]):
    r, h = tmp_path / "ref", tmp_path / "hyp"
    r.write_text("".join(f"{k} {v}\n" for k, v in refs.items()))
    h.write_text("".join(f"{k} {v}\n" for k, v in hyps.items()))
    return r, h


# (ref, hyp, corr, sub, del, ins), each checked by hand
WORD_CASES = [
    ("A B C D", "A B C D", 4, 0, 0, 0),
    ("A B C D", "A X C D", 3, 1, 0, 0),
    ("A B C", "A C", 2, 0, 1, 0),
    ("A B", "A B C", 2, 0, 0, 1),
    ("THE CAT SAT", "CAT SAT ON MAT", 2, 0, 1, 2),   # drop THE, add ON MAT: 3 edits, not 4 subs
    ("ONE TWO THREE", "", 0, 0, 3, 0),
    ("", "SPURIOUS", 0, 0, 0, 1),
    ("A B C D E", "X A B D E F", 4, 0, 1, 2),         # insert X, delete C, insert F
]


@pytest.mark.parametrize("ref, hyp, corr, sub, dele, ins", WORD_CASES)
def test_word_alignment_counts(tmp_path, ref, hyp, corr, sub, dele, ins):
    r, h = _files(tmp_path, {"u1": ref}, {"u1": hyp})
    c = scoring.score(r, h, "word")
    assert (c.corr, c.sub, c.dele, c.ins) == (corr, sub, dele, ins)
    assert c.n == len(ref.split())


def test_set_level_rate_sums_counts(tmp_path):
    refs = {f"u{i}": case[0] for i, case in enumerate(WORD_CASES)}
    hyps = {f"u{i}": case[1] for i, case in enumerate(WORD_CASES)}
    r, h = _files(tmp_path, refs, hyps)
    c = scoring.score(r, h, "word", out=tmp_path / "result.txt")
    n = sum(len(case[0].split()) for case in WORD_CASES)
    errs = sum(case[3] + case[4] + case[5] for case in WORD_CASES)
    assert (c.n, c.err) == (n, errs) == (24, 13)
    assert c.rate == pytest.approx(100 * 13 / 24)
    text = (tmp_path / "result.txt").read_text()
    assert text.startswith("WER 54.17 % | N=24 Corr=17 Sub=1 Del=6 Ins=6 Err=13")
    assert scoring.read_result(tmp_path / "result.txt") == {
        "N": 24, "Corr": 17, "Sub": 1, "Del": 6, "Ins": 6, "Err": 13}
    assert "u1 4 1 0 0" in text.splitlines()


def test_char_scoring_counts_spaces(tmp_path):
    r, h = _files(tmp_path, {"u": "AB CD"}, {"u": "AB CE"})
    c = scoring.score(r, h, "char")
    assert (c.n, c.sub, c.dele, c.ins) == (5, 1, 0, 0)   # A B <space> C D
    r, h = _files(tmp_path, {"u": "AB CD"}, {"u": "ABCD"})
    c = scoring.score(r, h, "char")
    assert (c.n, c.corr, c.dele) == (5, 4, 1)


def test_missing_hypothesis_counts_as_deleted(tmp_path, caplog):
    r, h = _files(tmp_path, {"a": "X Y", "b": "Z"}, {"a": "X Y"})
    c = scoring.score(r, h)
    assert (c.n, c.dele, c.err) == (3, 1, 1)
    assert "1 of 2 utterances have no hypothesis" in caplog.text


def test_bad_files(tmp_path):
    r, h = _files(tmp_path, {"a": "X"}, {"a": "X", "zz": "Y"})
    with pytest.raises(scoring.ScoringError, match="utterance zz has no reference"):
        scoring.score(r, h)
    r.write_text("a X\na Y\n")
    with pytest.raises(scoring.ScoringError, match="duplicate utterance id a"):
        scoring.score(r, h)
    with pytest.raises(scoring.ScoringError, match="cannot read"):
        scoring.score(tmp_path / "nope", h)
    r.write_bytes("a X\nb CAF\u00c9\n".encode("latin-1"))
    with pytest.raises(scoring.ScoringError, match=r"ref:2: not UTF-8 text \(byte 0xc9\)"):
        scoring.score(r, h)


def test_cli_and_results_table(tmp_path, capsys):
    exp = tmp_path / "exp"
    for tag, hyp in (("fbank_llast_pq", "A B C"), ("fbank_llast_kmeans", "A X")):
        for s in ("test_a", "test_b"):
            d = exp / f"asr_{tag}" / f"decode_{s}_nolm"
            d.mkdir(parents=True)
            (d / "ref").write_text("u1 A B C\n")
            (d / "hyp").write_text(f"u1 {hyp}\n")
            assert scoring.main(["score", "--ref", str(d / "ref"), "--hyp", str(d / "hyp"),
                                 "--out", str(d / "result.txt")]) == 0
    (exp / "units_fbank_llast_pq").mkdir()
    (exp / "units_fbank_llast_pq" / "config.yaml").write_text("method: pq\nnum_codebooks: 4\ncodebook_size: 128\n")
    (exp / "timing.tsv").write_text("1\tdata\t10\n8\ttrain\t100\n8\ttrain\t5\n")
    out = tmp_path / "RESULTS.md"
    assert scoring.main(["table", "--exp_dir", str(exp), "--test_sets", "test_a test_b",
                         "--command", "./run.sh --x 1", "--timing", str(exp / "timing.tsv"),
                         "--out", str(out)]) == 0
    text = out.read_text()
    assert "| model | units | configs | train (min) | test_a (WER) | test_b (WER) |" in text
    assert "| fbank_llast_pq | pq 4x128 | - | - | 0.0 | 0.0 |" in text
    assert "| fbank_llast_kmeans | - | - | - | 66.7 | 66.7 |" in text   # 1 sub + 1 del of 3
    assert "./run.sh --x 1" in text
    # the paper's form: relative improvement over K-means, 100 (66.7 - 0.0) / 66.7
    assert "| fbank_llast_pq | fbank_llast_kmeans | +100.0 | +100.0 |" in text
    assert "| 8 train | 105 |" in text

    # --rows: only the decodes listed (the engine lists those of the current settings)
    pq = exp / "asr_fbank_llast_pq"
    rows = tmp_path / "rows.tsv"
    rows.write_text(f"{pq}\tnolm\ttest_a\t{pq}/decode_test_a_nolm/result.txt\tconf/units/pq.yaml conf/asr/a.yaml\n")
    assert scoring.main(["table", "--exp_dir", str(exp), "--test_sets", "test_a test_b",
                         "--rows", str(rows), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| fbank_llast_pq | pq 4x128 | `conf/asr/a.yaml` `conf/units/pq.yaml` | - | 0.0 | - |" in text
    assert "kmeans" not in text
    assert scoring.main(["score", "--ref", str(tmp_path / "none"), "--hyp", str(out)]) == 1


def test_relative_lines_against_kmeans_and_continuous():
    rates = {("f_kmeans", ""): [40.0, 50.0], ("f_rpq", ""): [30.0, None],
             ("f_continuous", ""): [20.0, 25.0], ("f_rpq", " + LM"): [28.0, 40.0],
             ("f_kmeans", " + LM"): [35.0, 40.0]}
    units = {"f_kmeans": "kmeans 1x500", "f_rpq": "rpq 4x128", "f_continuous": "continuous"}
    lines = scoring.relative_lines(rates, units, ["a", "b"])
    assert "| f_rpq | f_kmeans | +25.0 | - |" in lines
    assert "| f_rpq | f_continuous | -50.0 | - |" in lines
    assert "| f_rpq + LM | f_kmeans + LM | +20.0 | +0.0 |" in lines
    assert not any(line.startswith("| f_kmeans |") for line in lines)
    assert scoring.relative_lines({("f_pq", ""): [1.0]}, {"f_pq": "pq 4x128"}, ["a"]) == []
