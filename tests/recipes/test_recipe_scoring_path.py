"""One scoring path for every model: the combined LibriSpeech + ML-SUPERB recipe's continuous
reference (stage 11) is scored like the discrete models (stage 10's path), its ML-SUPERB cell is CER under a CER
header, and language tags are not counted as characters."""

from __future__ import annotations

import shutil

from recipe_helpers import ROOT, run

from rpq_units.evaluation.scoring import read_measure, read_result

LS, ML = "ls_test_clean", "mlsuperb_test_10min"


def recipe_copy(tmp_path):
    """The engine, the combined recipe and what its links point to, in tmp_path."""
    for part in ("egs/TEMPLATE", "egs/librispeech_ml_superb", "egs/ml_superb", "local", "conf"):
        shutil.copytree(ROOT / part, tmp_path / part, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "dump", "exp", "RESULTS*", "__pycache__"))
    return tmp_path / "egs" / "librispeech_ml_superb"


def write_table(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(rows.items())))


def test_continuous_row_is_cer_under_its_cer_header(tmp_path):
    recipe = recipe_copy(tmp_path)
    (recipe / "nlsyms.txt").write_text("[eng]\n[deu]\n")
    ml_ref = {"mlsuperb_u1": "[eng] HELLO WORLD", "mlsuperb_u2": "[deu] GUTEN TAG"}
    ml_hyp = {"mlsuperb_u1": "[eng] HELO WORLD", "mlsuperb_u2": "[eng] GUTEN TAG"}
    ls_ref = {"ls_1-2-3": "A B C D", "ls_1-2-4": "E F"}
    ls_hyp = {"ls_1-2-3": "A B X D"}  # ls_1-2-4 has no hypothesis: two deletions
    write_table(recipe / "data" / ML / "text", ml_ref)
    write_table(recipe / "data" / ML / "utt2lang", {"mlsuperb_u1": "eng", "mlsuperb_u2": "deu"})
    write_table(recipe / "data" / LS / "text", ls_ref)
    common = ["--run_continuous", "true", "--test_sets", f"{LS} {ML}", "--nlsyms_txt", "nlsyms.txt",
              "--discretizers", ""]

    def stamp(result):
        """What the engine's done marker of `result` records under the current settings."""
        r = run(["./run.sh", *common, "--show_stamp", result], cwd=recipe)
        assert r.returncode == 0 and "upstream=" in r.stdout, r.stderr[-3000:]
        return r.stdout

    # a finished continuous reference: stage 11's training and decoding markers, with the stamps
    # stage 11 writes (a decode without its stamp is not current and is left out of the table)
    adir = recipe / "exp" / "asr_wavlm_large_l21_continuous"
    for marker in ("stats/.done", ".done_train"):
        (adir / marker).parent.mkdir(parents=True, exist_ok=True)
        (adir / marker).write_text(stamp("ctrain"))
    for s, ref, hyp in ((ML, ml_ref, ml_hyp), (LS, ls_ref, ls_hyp)):
        d = adir / f"decode_{s}_nolm"
        write_table(d / "ref", ref)
        write_table(d / "hyp", hyp)
        (d / ".done").write_text(stamp(f"cdecode {s}"))

    # stage 10 scores every current decode, the continuous reference's included; stage 12 tables it
    for st in ("10", "12"):
        r = run(["./run.sh", "--stage", st, "--stop_stage", st, *common,
                 "--local_score_opts", f"--test_sets {ML}"], cwd=recipe)
        assert r.returncode == 0, r.stderr[-3000:]

    ml = adir / f"decode_{ML}_nolm" / "result.txt"
    ls = adir / f"decode_{LS}_nolm" / "result.txt"
    assert read_measure(ml) == "CER" and read_measure(ls) == "WER"
    # CER without the tags: "HELLO WORLD" (11 chars, 1 deleted) + "GUTEN TAG" (9 chars, correct)
    assert (read_result(ml)["N"], read_result(ml)["Err"]) == (20, 1)
    # WER on the whole test set: the utterance without a hypothesis counts as deleted
    assert (read_result(ls)["N"], read_result(ls)["Err"], read_result(ls)["Del"]) == (6, 3, 2)
    assert "Missing 1" in ls.read_text() and "ls_1-2-4" in ls.read_text()
    table = (recipe / "RESULTS.md").read_text()
    assert f"| model | units | configs | train (min) | {LS} (WER) | {ML} (CER) |" in table
    assert "| wavlm_large_l21_continuous | continuous | `conf/asr/train_continuous_ebranchformer.yaml` | - | 50.0 | 5.0 |" in table


def test_show_stamp_names_the_results_it_knows(tmp_path):
    recipe = recipe_copy(tmp_path)
    r = run(["./run.sh", "--test_sets", LS, "--show_stamp", "nonsense"], cwd=recipe)
    assert r.returncode == 2 and "no result named 'nonsense'" in r.stderr and "cdecode" in r.stderr
    assert not (recipe / "data").exists()  # nothing ran: stage 1 was not started


def test_results_tags_join_other_feature_tags_while_their_decodes_stand(tmp_path):
    """Stage 12 of one feature tag tables the rows another tag's stage 12 tabled, checked against
    their decodes' done markers (a decode redone since is left out with a warning)."""
    recipe = recipe_copy(tmp_path)
    ref = {"ls_1-2-3": "A B C D", "ls_1-2-4": "E F"}
    write_table(recipe / "data" / LS / "text", ref)
    hyps = {21: {"ls_1-2-3": "A B C D", "ls_1-2-4": "E F"}, 12: {"ls_1-2-3": "A B X D"}}
    for layer, hyp in hyps.items():
        # layer 12 also has a discrete model (K-means units) beside its continuous reference
        units = "kmeans" if layer == 12 else ""
        opts = ["--run_continuous", "true", "--test_sets", LS, "--discretizers", units, "--layer", str(layer)]
        decodes = {"continuous": f"cdecode {LS}"} | ({"kmeans": f"decode kmeans {LS} nolm"} if units else {})
        for model, result in decodes.items():
            r = run(["./run.sh", *opts, "--show_stamp", result], cwd=recipe)
            assert r.returncode == 0, r.stderr[-3000:]
            d = recipe / "exp" / f"asr_wavlm_large_l{layer}_{model}" / f"decode_{LS}_nolm"
            write_table(d / "ref", ref)
            write_table(d / "hyp", hyp)
            (d / ".done").write_text(r.stdout)
        for st in ("10", "12"):
            tags = ["--results_tags", "wavlm_large_l21"] if layer == 12 else []
            r = run(["./run.sh", "--stage", st, "--stop_stage", st, *opts, *tags], cwd=recipe)
            assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split(" | ")[0]: line for line in (recipe / "RESULTS.md").read_text().splitlines()}
    assert rows["| wavlm_large_l21_continuous"].endswith("| 0.0 |")
    assert rows["| wavlm_large_l12_continuous"].endswith("| 50.0 |")  # 1 sub + 2 del of 6
    assert rows["| wavlm_large_l12_kmeans"].endswith("| 50.0 |")

    # another source text of l12 (repeated frames removed; no decode of its own yet) keeps its
    # rows apart: l12's as-encoded rows still join l21's table
    opts = ["--run_continuous", "true", "--test_sets", LS, "--discretizers", "kmeans", "--layer", "12"]
    r = run(["./run.sh", "--stage", "12", "--stop_stage", "12", *opts, "--src_case", "rm"], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    rm_rows = (recipe / "exp" / "results_rows" / "wavlm_large_l12_rm.tsv").read_text()
    assert "asr_wavlm_large_l12_continuous" in rm_rows and "kmeans" not in rm_rows
    r = run(["./run.sh", "--stage", "12", "--stop_stage", "12", "--run_continuous", "true",
             "--test_sets", LS, "--discretizers", "", "--results_tags", "wavlm_large_l12"],
            cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| wavlm_large_l12_kmeans |" in (recipe / "RESULTS.md").read_text()

    # l21's decode is redone with other settings: its row no longer joins l12's table
    marker = recipe / "exp" / "asr_wavlm_large_l21_continuous" / f"decode_{LS}_nolm" / ".done"
    marker.write_text(marker.read_text() + "inference_args=--beam_size 1\n")
    opts = ["--run_continuous", "true", "--test_sets", LS, "--discretizers", "kmeans", "--layer", "12"]
    r = run(["./run.sh", "--stage", "12", "--stop_stage", "12", *opts,
             "--results_tags", "wavlm_large_l21"], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "was redone or removed since stage 12 of wavlm_large_l21 tabled it" in r.stderr
    table = (recipe / "RESULTS.md").read_text()
    assert "wavlm_large_l21_continuous" not in table and "| wavlm_large_l12_continuous |" in table

    r = run(["./run.sh", "--stage", "12", "--stop_stage", "12", *opts, "--results_tags", "nope_l1"],
            cwd=recipe)
    assert r.returncode == 1 and "--results_tags: no rows of 'nope_l1'" in r.stderr


def test_a_set_named_like_a_decode_variant_is_scored_as_itself(tmp_path):
    """Stage 10 takes each decode's set from the list of decodes, not from its dir's name: a set
    named ``x_lm`` (decode dir ``decode_x_lm_nolm``) is scored as ``x_lm``, here CER as
    --char_test_sets says, not as a set ``x``."""
    recipe = recipe_copy(tmp_path)
    s = "mlsuperb_x_lm"
    ref, hyp = {"u1": "AB CD"}, {"u1": "AB CX"}
    write_table(recipe / "data" / s / "text", ref)
    opts = ["--run_continuous", "true", "--test_sets", s, "--discretizers", "", "--char_test_sets", s]
    r = run(["./run.sh", *opts, "--show_stamp", f"cdecode {s}"], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    d = recipe / "exp" / "asr_wavlm_large_l21_continuous" / f"decode_{s}_nolm"
    write_table(d / "ref", ref)
    write_table(d / "hyp", hyp)
    (d / ".done").write_text(r.stdout)
    r = run(["./run.sh", "--stage", "10", "--stop_stage", "10", *opts], cwd=recipe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_measure(d / "result.txt") == "CER"
    assert (read_result(d / "result.txt")["N"], read_result(d / "result.txt")["Err"]) == (5, 1)
