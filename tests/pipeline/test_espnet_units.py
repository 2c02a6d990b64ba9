"""Unit files written by rpq-units are read by ESPnet's own tokenizer path, unchanged.

ESPnet's MT task (``mt_train``, model ``discrete_asr``) reads the source units with a ``word``
tokenizer and a TokenIDConverter built from the source token list, through
``MutliTokenizerCommonPreprocessor``. These tests build exactly that from our token list and
check that every unit line maps to the intended ids, with no ``<unk>``, frame-interleaved so
that ``frontend: patch`` (``token_per_frame: M``) regroups the M streams of each frame.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("espnet2")
from espnet2.text.build_tokenizer import build_tokenizer  # noqa: E402
from espnet2.text.token_id_converter import TokenIDConverter  # noqa: E402
from espnet2.train.preprocessor import MutliTokenizerCommonPreprocessor  # noqa: E402

from rpq_units import cli  # noqa: E402
from rpq_units.pipeline.units import text_to_units, units_to_text, write_token_list  # noqa: E402


@pytest.mark.parametrize("m, k", [(1, 50), (4, 16)])
def test_espnet_word_tokenizer_maps_units_to_ids(tmp_path, m, k):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, k, size=(37, m))
    write_token_list(tmp_path / "tokens.txt", m, k)
    converter = TokenIDConverter(str(tmp_path / "tokens.txt"), unk_symbol="<unk>")
    assert converter.get_num_vocabulary_size() == m * k + 3
    tokens = build_tokenizer("word").text2tokens(units_to_text(codes, k))
    ids = np.asarray(converter.tokens2ids(tokens))
    # <blank>=0, <unk>=1, then unit u at id u + 2: stream s of frame t is codes[t, s] + s*K + 2
    expected = (codes + np.arange(m) * k + 2).reshape(-1)
    np.testing.assert_array_equal(ids, expected)
    # the patch frontend's view (T, M) holds one frame per row, stream s in column s
    np.testing.assert_array_equal(ids.reshape(-1, m) - 2 - np.arange(m) * k, codes)
    np.testing.assert_array_equal(text_to_units(converter.ids2tokens(ids), m, k), codes)
    assert converter.token_list[-1] == "<sos/eos>"


def test_units_from_the_cli_through_espnet_preprocessor(tmp_path, tiny_data):
    """dump_feats -> fit (PQ, M=4) -> encode -> token_list, then mt_train's preprocessor."""
    feats, book, units, toks = tmp_path / "feats", tmp_path / "pq.pt", tmp_path / "units", tmp_path / "tokens.txt"
    assert cli.main(["dump_feats", "--portion", "1", "--data_dir", str(tiny_data), "--out_dir", str(feats), "--upstream", "fbank"]) == 0
    assert cli.main(["fit", "--feats_dir", str(feats), "--out", str(book), "--method", "pq",
                     "--num_codebooks", "4", "--codebook_size", "8"]) == 0
    assert cli.main(["encode", "--data_dir", str(tiny_data), "--codebook", str(book), "--out", str(units)]) == 0
    assert cli.main(["token_list", "--codebook", str(book), "--out", str(toks)]) == 0
    (tmp_path / "chars.txt").write_text("<blank>\n<unk>\nA\nB\n<space>\n<sos/eos>\n")

    pre = MutliTokenizerCommonPreprocessor(
        train=False, token_type=["char", "word"], token_list=[str(tmp_path / "chars.txt"), str(toks)],
        bpemodel=[None, None], text_name=["text", "src_text"])
    lines = units.read_text().splitlines()
    wav_ids = [line.split()[0] for line in (tiny_data / "wav.scp").read_text().splitlines()]
    assert [line.split()[0] for line in lines] == wav_ids
    for line in lines:
        uttid, body = line.split(maxsplit=1)
        out = pre(uttid, {"text": "AB BA", "src_text": body})
        ids = out["src_text"]
        assert len(ids) == len(body.split()) and len(ids) % 4 == 0
        assert 1 not in ids, f"{uttid}: <unk> in ESPnet's reading of the unit line"
        frames = ids.reshape(-1, 4) - 2
        for s in range(4):
            assert ((frames[:, s] >= s * 8) & (frames[:, s] < (s + 1) * 8)).all()
