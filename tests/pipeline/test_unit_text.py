"""The source text a model reads: repeated frames removed, units spelled as characters."""

from __future__ import annotations

import pytest

from rpq_units.cli import main
from rpq_units.pipeline.unit_text import (
    CHAR_BASE,
    dedup_frames,
    from_chars,
    source_line,
    to_chars,
    write_source_text,
)
from rpq_units.pipeline.units import UnitsError, text_to_units, units_to_text


def test_dedup_single_stream_removes_runs():
    assert dedup_frames("5 5 5 7 5 5 9".split(), 1) == "5 7 5 9".split()
    assert dedup_frames([], 1) == []


def test_dedup_multi_stream_removes_whole_frames_only():
    # frames (1,5) (1,5) (1,6) (2,6) (2,6): only a frame equal in every stream is a repeat
    tokens = units_to_text([[1, 5], [1, 5], [1, 6], [2, 6], [2, 6]], 8).split()
    out = dedup_frames(tokens, 2)
    assert text_to_units(out, 2, 8).tolist() == [[1, 5], [1, 6], [2, 6]]
    assert len(out) % 2 == 0  # whole frames: the patch frontend still reads M per frame


def test_dedup_refuses_a_line_that_is_not_whole_frames():
    with pytest.raises(UnitsError, match="not a multiple of num_codebooks=2"):
        dedup_frames("1 9 3".split(), 2)


def test_chars_round_trip_and_range():
    tokens = [str(t) for t in (0, 1, 511, 20991)]
    s = to_chars(tokens)
    assert len(s) == 4 and s[0] == chr(CHAR_BASE) and " " not in s
    assert from_chars(s) == tokens
    assert from_chars("\u2581" + s[:2] + " " + s[2:]) == tokens  # sentencepiece's marks ignored
    with pytest.raises(UnitsError, match="cannot be spelled"):
        to_chars(["20992"])
    with pytest.raises(UnitsError, match="does not spell a unit"):
        from_chars("a")


@pytest.mark.parametrize("case,chars,want", [
    ("ts", False, "3 11 3 11 4 11"),
    ("rm", False, "3 11 4 11"),
    ("rm", True, "".join(chr(CHAR_BASE + t) for t in (3, 11, 4, 11))),
])
def test_source_line_settings(case, chars, want):
    assert source_line("3 11 3 11 4 11", 2, case, chars) == want


def test_source_file_names_the_bad_utterance_and_writes_nothing(tmp_path):
    units = tmp_path / "units"
    units.write_text("a 1 9 1 9\nb 1 9 3\n")
    out = tmp_path / "src"
    with pytest.raises(UnitsError, match=r"units: utterance b: 3 tokens"):
        write_source_text(units, out, num_codebooks=2, case="rm", chars=False)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_cli_src_text_counts_and_order(tmp_path, capsys):
    units = tmp_path / "units"
    units.write_text("u1 1 5 1 5 1 5 2 6\nu2 3 7\n")
    out = tmp_path / "src"
    assert main(["src_text", "--units", units, "--out", out, "--num_codebooks", "2", "--case", "rm"]) == 0
    assert out.read_text() == "u1 1 5 2 6\nu2 3 7\n"
    assert main(["src_text", "--units", units, "--out", out, "--num_codebooks", "2", "--case", "rm",
                 "--chars"]) == 0
    lines = out.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["u1", "u2"]
    assert from_chars(lines[0].split()[1]) == "1 5 2 6".split()
    assert main(["src_text", "--units", tmp_path / "missing", "--out", out, "--num_codebooks", "2"]) == 1
    assert "missing" in capsys.readouterr().err
