"""Shell side of the ML-SUPERB recipes: corpus path checks, id prefixing and combining."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ML_SUPERB = REPO / "egs" / "ml_superb"
COMBINED = REPO / "egs" / "librispeech_ml_superb"


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env})  # fmt: skip


def write_dir(d: Path, utts: list[str], spk_of=lambda u: u.split("-")[0]) -> None:
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("".join(f"{u} /audio/{u}.wav\n" for u in utts))
    (d / "text").write_text("".join(f"{u} SOME  TEXT\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} {spk_of(u)}\n" for u in utts))
    spks = sorted({spk_of(u) for u in utts})
    (d / "spk2utt").write_text(
        "".join(f"{s} {' '.join(u for u in utts if spk_of(u) == s)}\n" for s in spks)
    )


def test_missing_corpus_stops_with_instructions(tmp_path):
    res = run(["bash", "local/data.sh", "--datadir", str(tmp_path / "data")], ML_SUPERB,
              MLSUPERB=str(tmp_path / "nowhere"))  # fmt: skip
    assert res.returncode == 1
    assert "ML-SUPERB corpus not found" in res.stderr and "db.sh" in res.stderr
    assert not (tmp_path / "data").exists()
    res = run(["bash", "local/data.sh"], ML_SUPERB, MLSUPERB="")
    assert res.returncode == 1 and "not downloaded automatically" in res.stderr


def test_prefix_and_combine_data_dirs(tmp_path):
    write_dir(tmp_path / "ls", ["1-a", "1-b", "2-a"])
    write_dir(tmp_path / "ml", ["eng_x_1", "rus_x_1"], spk_of=lambda u: u.rsplit("_", 1)[0])
    (tmp_path / "ml" / "utt2lang").write_text("eng_x_1 eng\nrus_x_1 rus\n")
    prefix = ["bash", "local/prefix_data_dir.sh"]
    assert run([*prefix, "ls_", str(tmp_path / "ls"), str(tmp_path / "ls_p")], COMBINED).returncode == 0
    assert run([*prefix, "ml_", str(tmp_path / "ml"), str(tmp_path / "ml_p")], COMBINED).returncode == 0
    assert (tmp_path / "ls_p" / "spk2utt").read_text() == "ls_1 ls_1-a ls_1-b\nls_2 ls_2-a\n"
    assert (tmp_path / "ls_p" / "text").read_text().startswith("ls_1-a SOME  TEXT\n")
    assert (tmp_path / "ml_p" / "utt2lang").read_text() == "ml_eng_x_1 eng\nml_rus_x_1 rus\n"
    res = run(["bash", "utils/combine_data_dirs.sh", str(tmp_path / "all"), str(tmp_path / "ls_p"),
               str(tmp_path / "ml_p")], COMBINED)  # fmt: skip
    assert res.returncode == 0, res.stderr
    keys = [line.split()[0] for line in (tmp_path / "all" / "utt2spk").read_text().splitlines()]
    assert keys == sorted(keys) and len(keys) == 5
    assert not (tmp_path / "all" / "utt2lang").exists()  # not in every source
    res = run(["bash", "utils/validate_data_dir.sh", str(tmp_path / "all")], COMBINED)
    assert res.returncode == 0, res.stderr
    # Unprefixed sets with a shared id are refused, naming the id.
    write_dir(tmp_path / "ls2", ["1-a"])
    res = run(["bash", "utils/combine_data_dirs.sh", str(tmp_path / "bad"), str(tmp_path / "ls"),
               str(tmp_path / "ls2")], COMBINED)  # fmt: skip
    assert res.returncode == 1 and "'1-a'" in res.stderr
    assert not (tmp_path / "bad").exists()
