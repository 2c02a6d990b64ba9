"""utils/stamp.sh: the done markers that record the settings behind a result."""

from __future__ import annotations

import subprocess

from recipe_helpers import UTILS


def stamp(tmp_path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; . {UTILS}/stamp.sh; {script}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_stamp_ok_and_diff_name_each_changed_setting(tmp_path):
    new = "a=1\nb=two words\nc=3"
    r = stamp(tmp_path, f"stamp_write d/.done $'{new}'; stamp_ok d/.done $'{new}' && echo same")
    assert r.returncode == 0 and r.stdout == "same\n"
    assert (tmp_path / "d" / ".done").read_text() == new + "\n"
    r = stamp(tmp_path, "stamp_ok d/.done $'a=1\\nb=two words' || echo differs")
    assert r.stdout == "differs\n"
    r = stamp(tmp_path, "stamp_diff d/.done $'a=1\\nb=three words\\nd=4'")
    assert r.stdout == "b: two words -> three words; d: (not recorded) -> 4; c: 3 -> (not set)\n"
    r = stamp(tmp_path, "stamp_diff d/.done $'a=1\\nb=two words\\nc=3'")
    assert r.stdout == "same settings\n"
    (tmp_path / "old").write_text("Fri Nov 27 10:00:00 UTC 2026\n")  # a marker from before stamps
    r = stamp(tmp_path, "stamp_ok old 'a=1' || stamp_diff old 'a=1'")
    assert r.stdout == "settings not recorded (made before stamps)\n"


def test_file_sig_is_a_content_hash(tmp_path):
    (tmp_path / "x.yaml").write_text("k: 1\n")
    (tmp_path / "y.yaml").write_text("k: 1\n")
    r = stamp(tmp_path, "file_sig x.yaml; file_sig y.yaml; file_sig ''; file_sig nowhere.yaml")
    x, y, empty, missing = r.stdout.split()
    assert x == y and len(x) == 16 and (empty, missing) == ("none", "missing")
