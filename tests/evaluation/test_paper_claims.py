"""bench/paper_claims/run.py on a dump of generated frames: every cell measured, rho under
each definition, the ensemble bound holding everywhere, tables and plots written."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest
from recipe_helpers import ROOT

from rpq_units.evaluation.analyze import RHO_DEFINITIONS
from rpq_units.pipeline.shards import FeatureShardWriter, write_feats_json


@pytest.fixture(scope="module")
def bench_main():
    sys.path.insert(0, str(ROOT / "bench" / "paper_claims"))
    yield runpy.run_path(str(ROOT / "bench" / "paper_claims" / "run.py"))["main"]
    sys.path.pop(0)


def test_paper_claims_bench_on_a_feature_dump(tmp_path, bench_main):
    rng = np.random.default_rng(0)
    feats = tmp_path / "feats"
    with FeatureShardWriter(feats, 0) as w:
        for i in range(40):  # correlated 16-dim frames, 40 utterances of 60 frames
            z = rng.normal(size=(60, 4))
            w.add(f"utt{i:03d}", (z @ rng.normal(size=(4, 16)) + 0.3 * rng.normal(size=(60, 16))).astype(np.float32))
    write_feats_json(feats, {"dim": 16, "nshard": 1, "upstream": "toy", "layer": 0, "frame_rate": 50.0})
    out = tmp_path / "out"
    assert bench_main(["--out_dir", str(out), "--demos", "", "--feats", f"toy={feats}", "--bits", "8",
                       "--max_iter", "5", "--machine", "test"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["sources"]["toy"]["frames_fit"] + res["sources"]["toy"]["frames_eval"] == 2400
    rows = res["rows"]
    methods = {(r["method"], r["M"], r["K"], r["p"]) for r in rows}
    assert {("pq", 2, 16, None), ("rpq", 2, 16, 0.5), ("rpq", 2, 16, 1.0), ("kmeans", 1, 256, None),
            ("pq", 4, 128, None), ("rpq", 4, 128, 0.125), ("rpq", 4, 128, 1.0)} <= methods
    for r in rows:
        assert set(r["rho"]) == set(RHO_DEFINITIONS)
        if r["method"] == "rpq":
            # holds wherever subsets overlap (rho_d <= 1), where the decomposition is exact;
            # undefined where no subsets overlap
            assert r["bound"]["ensemble"]["eps_sub"] is (True if r["shared_dims"] else None)
            if r["shared_dims"]:
                assert r["ensemble_bound"]["eps_pred"] == pytest.approx(r["ensemble_bound"]["eps"], rel=1e-6)
            assert r["eps_kms"]["kms_K"] is not None
        if r["method"] == "pq":
            assert r["rho"]["shared"] is None and r["uncovered_dims"] == 0
    assert sum(r["bound"]["ensemble"]["eps_sub"] is True for r in rows if r["method"] == "rpq") >= 8
    # equal bits: K-means 256 is the 8-bit reference of 2x16 and 4x4
    pq = next(r for r in rows if r["method"] == "pq" and r["K"] == 16)
    km = next(r for r in rows if r["method"] == "kmeans" and r["K"] == 256)
    assert pq["eps_kms"]["kms_bits"] == km["mse"]
    md = (out / "results.md").read_text()
    assert "| energy |" in md and "Bound eps_rpq >= rho * eps_kms" in md
    for png in ("error_vs_bits.png", "rho_vs_p.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_paper_claims_bench_bad_feats(tmp_path, bench_main, capsys):
    assert bench_main(["--out_dir", str(tmp_path / "o"), "--demos", "", "--feats", f"x={tmp_path}"]) == 1
    assert f"--feats {tmp_path}: no feats.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench_main(["--out_dir", str(tmp_path / "o"), "--demos", "", "--feats", "nodir"])
    assert e.value.code == 2
