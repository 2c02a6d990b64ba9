"""Sharding and feature shard files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rpq_units.pipeline.shards import (
    FeatureShards,
    FeatureShardWriter,
    ShardError,
    select_portion,
    shard_file,
    shard_range,
    write_feats_json,
)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 10, 64, 101, 1000])
@pytest.mark.parametrize("nshard", [1, 2, 3, 4, 7, 16, 200])
def test_shard_range_covers_every_item_exactly_once(n, nshard):
    parts = [shard_range(n, nshard, r) for r in range(nshard)]
    flat = [i for p in parts for i in p]
    assert flat == list(range(n))  # contiguous, in order, no gaps or repeats
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_range_rejects_bad_arguments():
    with pytest.raises(ValueError, match="0-based"):
        shard_range(10, 2, 2)
    with pytest.raises(ValueError, match="rank"):
        shard_range(10, 2, -1)
    with pytest.raises(ValueError, match="nshard"):
        shard_range(10, 0, 0)


def test_select_portion_is_seeded_sorted_and_sized():
    a = select_portion(100, 0.3, seed=1)
    assert a == select_portion(100, 0.3, seed=1)
    assert a != select_portion(100, 0.3, seed=2)
    assert len(a) == 30 and a == sorted(a) and len(set(a)) == 30
    assert select_portion(10, 1.0, 0) == list(range(10))
    assert len(select_portion(10, 0.01, 0)) == 1
    with pytest.raises(ValueError, match="portion"):
        select_portion(10, 0.0, 0)


def write_shards(tmp_path, nshard=2, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    ref = {}
    for r in range(nshard):
        with FeatureShardWriter(tmp_path, r) as w:
            for u in range(3):
                x = rng.normal(size=(4 + u + r, dim)).astype(np.float32)
                uttid = f"u{r}_{u}"
                w.add(uttid, x)
                ref[uttid] = x
    write_feats_json(tmp_path, {"dim": dim, "nshard": nshard, "upstream": "fbank", "layer": 0})
    return ref


def test_writer_reader_round_trip(tmp_path):
    ref = write_shards(tmp_path)
    arr = np.load(shard_file(tmp_path, 0, "npy"))  # a standard .npy file
    assert arr.dtype == np.float32 and arr.shape == (4 + 5 + 6, 5)
    assert shard_file(tmp_path, 1, "len").read_text().split() == ["5", "6", "7"]
    s = FeatureShards(tmp_path)
    assert s.dim == 5 and s.num_frames == sum(len(v) for v in ref.values())
    assert s.ids == list(ref)
    got = dict(s.utterances())
    assert list(got) == list(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(got[k], v)
    allx = s.frames()
    np.testing.assert_array_equal(allx, np.concatenate(list(ref.values())))


def test_frames_subsample_is_seeded_subset(tmp_path):
    write_shards(tmp_path)
    s = FeatureShards(tmp_path)
    allx = s.frames()
    a = s.frames(max_frames=10, seed=3)
    assert a.shape == (10, 5)
    np.testing.assert_array_equal(a, s.frames(max_frames=10, seed=3))
    assert not np.array_equal(a, s.frames(max_frames=10, seed=4))
    rows = {r.tobytes() for r in allx}
    assert all(r.tobytes() in rows for r in a)
    assert len({r.tobytes() for r in a}) == 10  # without replacement


def test_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with FeatureShardWriter(tmp_path, 0) as w:
            w.add("a", np.ones((3, 2), np.float32))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_features(tmp_path):
    with FeatureShardWriter(tmp_path, 0) as w:
        w.add("a", np.ones((3, 2), np.float32))
        with pytest.raises(ShardError, match="b: feature dimension 3 != 2"):
            w.add("b", np.ones((3, 3), np.float32))
        with pytest.raises(ShardError, match="c: features must be"):
            w.add("c", np.ones((0, 2), np.float32))
        with pytest.raises(ShardError, match="whitespace"):
            w.add("d e", np.ones((1, 2), np.float32))


def test_reader_errors(tmp_path):
    with pytest.raises(ShardError, match="feats.json: no such file"):
        FeatureShards(tmp_path)
    write_shards(tmp_path, nshard=2)
    info = json.loads((tmp_path / "feats.json").read_text())
    info["nshard"] = 3
    (tmp_path / "feats.json").write_text(json.dumps(info))
    with pytest.raises(ShardError, match=r"shard\(s\) \[2\] of 3 are missing"):
        FeatureShards(tmp_path)
    info["nshard"] = 2
    (tmp_path / "feats.json").write_text(json.dumps(info))
    shard_file(tmp_path, 1, "len").write_text("5\n6\n")
    with pytest.raises(ShardError, match="inconsistent"):
        FeatureShards(tmp_path)


def test_empty_shard_is_valid(tmp_path):
    """More shards than utterances: a rank with nothing to do writes an empty shard."""
    with FeatureShardWriter(tmp_path, 0) as w:
        w.add("a", np.ones((3, 2), np.float32))
    with FeatureShardWriter(tmp_path, 1) as w:
        w.dim = 2
    write_feats_json(tmp_path, {"dim": 2, "nshard": 2})
    s = FeatureShards(tmp_path)
    assert s.ids == ["a"] and s.num_frames == 3 and s.frames().shape == (3, 2)
    assert [k for k, _ in s.utterances()] == ["a"]


def test_feats_json_written_by_two_shards_at_once(tmp_path, monkeypatch):
    """Every shard's job writes feats.json, and an array's jobs end together (seen on Slurm:
    two tasks 50 ms apart). One shard's writer runs whole between the other's write and rename:
    both must succeed, and feats.json is one of the two, whole."""
    import os

    real_replace, renamed = os.replace, []

    def replace(src, dst):
        renamed.append(os.path.basename(src))
        if len(renamed) == 1:  # the other shard's job ends here
            write_feats_json(tmp_path, {"rank": 1, "dim": 4})
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_feats_json(tmp_path, {"rank": 0, "dim": 4})
    assert len(set(renamed)) == 2 and all(n.endswith(".tmp") for n in renamed)
    assert json.loads((tmp_path / "feats.json").read_text()) == {"rank": 0, "dim": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.json"]
