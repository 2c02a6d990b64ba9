"""Several ESPnet decodes in one process (rpq_units.pipeline.espnet_decode): the jobs file's
quoting, and a failing decode that does not stop the next one. Decoding itself, through the
engine's stages 9 and 11, is covered by the recipe tests (tests/recipes)."""

import shlex

import pytest

from rpq_units.pipeline import espnet_decode


def test_jobs_file_keeps_quoted_arguments(tmp_path):
    jobs = tmp_path / "jobs.1.txt"
    argv = ["--key_file", "dir with space/keys.1.scp", "--ctc_weight", "0.5"]
    jobs.write_text(shlex.join(argv) + "\n\n" + shlex.join(["--x", "a'b"]) + "\n")
    assert espnet_decode.read_jobs(str(jobs)) == [argv, ["--x", "a'b"]]


def test_a_failing_decode_is_counted_and_the_next_one_runs(tmp_path, capsys):
    jobs = tmp_path / "jobs.txt"
    # ESPnet's own parser rejects both (a missing model, an unknown option): each is one failure
    jobs.write_text("--output_dir out1 --no_such_option 1\n--output_dir out2 --no_such_option 2\n")
    assert espnet_decode.main(["--bin", "mt_inference", "--jobs", str(jobs)]) == 1
    err = capsys.readouterr().err
    assert "# decode 1/2 failed" in err and "# decode 2/2 failed" in err


def test_empty_jobs_file_is_no_work(tmp_path):
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("\n")
    assert espnet_decode.main(["--bin", "asr_inference", "--jobs", str(jobs)]) == 0


def test_unknown_binary_is_refused():
    with pytest.raises(ValueError, match="binary must be one of"):
        espnet_decode.run_decodes("lm_train", [])
