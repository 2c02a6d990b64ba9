"""Unit text for ESPnet (single and frame-interleaved multi-stream), token lists, merge, ark."""

from __future__ import annotations

import os
import subprocess

import kaldiio
import numpy as np
import pytest

from rpq_units.pipeline.units import (
    UnitArkWriter,
    UnitsError,
    merge_unit_files,
    read_units,
    text_to_units,
    token_list,
    units_to_text,
    write_lines_atomic,
    write_token_list,
    write_units,
)


def test_single_stream_text():
    assert units_to_text(np.array([[3], [0], [7]]), 8) == "3 0 7"
    np.testing.assert_array_equal(text_to_units("3 0 7", 1, 8), [[3], [0], [7]])


def test_multi_stream_is_frame_interleaved_with_offsets():
    codes = np.array([[1, 2, 0], [4, 0, 3]])  # T=2, M=3, K=5
    assert units_to_text(codes, 5) == "1 7 10 4 5 13"
    np.testing.assert_array_equal(text_to_units("1 7 10 4 5 13", 3, 5), codes)


@pytest.mark.parametrize("m, k", [(1, 2000), (2, 7), (4, 2000), (8, 16)])
def test_round_trip_random(m, k):
    rng = np.random.default_rng(m * k)
    codes = rng.integers(0, k, size=(50, m))
    toks = units_to_text(codes, k)
    assert len(toks.split()) == 50 * m
    np.testing.assert_array_equal(text_to_units(toks.split(), m, k), codes)
    assert max(map(int, toks.split())) < m * k


def test_parse_errors():
    with pytest.raises(UnitsError, match="not a multiple of num_codebooks=2"):
        text_to_units("1 2 3", 2, 5)
    with pytest.raises(UnitsError, match="stream 1's range \\[5, 10\\)"):
        text_to_units("1 2", 2, 5)  # second token of a frame must be offset by K
    with pytest.raises(UnitsError, match="non-integer"):
        text_to_units("1 x", 1, 5)
    with pytest.raises(UnitsError, match="outside"):
        units_to_text(np.array([[5]]), 5)


def test_token_list(tmp_path):
    toks = token_list(2, 3)
    assert toks == ["<blank>", "<unk>", "0", "1", "2", "3", "4", "5", "<sos/eos>"]
    write_token_list(tmp_path / "tokens.txt", 4, 2000)
    lines = (tmp_path / "tokens.txt").read_text().splitlines()
    assert len(lines) == 4 * 2000 + 3 and lines[2] == "0" and lines[-2] == "7999"


def test_merge_sorts_in_c_locale_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("utt_b 1 2\nUtt_Z 3\n")
    b.write_text("utt_a 4\nutt-c 5 6\n")
    n = merge_unit_files([a, b], tmp_path / "all")
    assert n == 4
    lines = (tmp_path / "all").read_text().splitlines()
    env = {**os.environ, "LC_ALL": "C"}
    c_sorted = subprocess.run(
        ["sort"], input="\n".join(lines) + "\n", capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert lines == c_sorted
    assert read_units(tmp_path / "all")["utt-c"] == "5 6"


def test_merge_rejects_overlapping_shards(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("u1 1\n")
    b.write_text("u1 2\n")
    with pytest.raises(UnitsError, match="'u1' is in both"):
        merge_unit_files([a, b], tmp_path / "all")
    assert not (tmp_path / "all").exists()
    with pytest.raises(UnitsError, match="no such unit file"):
        merge_unit_files([a, tmp_path / "missing"], tmp_path / "all")


def test_atomic_writer_keeps_previous_file_on_failure(tmp_path):
    out = tmp_path / "units"
    write_units(out, {"b": "2", "a": "1"})
    assert out.read_text() == "a 1\nb 2\n"

    def lines():
        yield "c 3"
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_lines_atomic(out, lines())
    assert out.read_text() == "a 1\nb 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units"]


def test_ark_scp_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ref = {f"u{i}": rng.integers(0, 100, size=(5 + i, 4)) for i in (2, 0, 1)}
    w = UnitArkWriter(tmp_path / "units.ark")
    for k, v in ref.items():
        w.add(k, v)
    w.close()
    scp = (tmp_path / "units.scp").read_text().splitlines()
    assert [line.split()[0] for line in scp] == ["u0", "u1", "u2"]
    assert all(str(tmp_path / "units.ark") in line for line in scp)
    got = kaldiio.load_scp(str(tmp_path / "units.scp"))
    for k, v in ref.items():
        assert got[k].dtype == np.int32
        np.testing.assert_array_equal(got[k], v)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.ark", "units.scp"]
