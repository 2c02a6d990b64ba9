"""The unit pipeline's steps as typed functions: features of a data dir, a quantizer fitted on
them, units of a data dir, the source token list. ``rpq-units <step>`` (:mod:`rpq_units.cli`)
and the recipes' step script (``egs/TEMPLATE/utils/units_steps.sh``) call them; so can a user's
own script::

    from rpq_units.pipeline import steps
    steps.dump_feats(data_dir="data/train", out_dir="dump/feats", upstream="wavlm_large", layer=21,
                     portion=0.3)
    steps.fit(feats_dir="dump/feats", out="exp/units/codebook.pt", config="conf/units/rpq.yaml")
    steps.encode(data_dir="data/test", codebook="exp/units/codebook.pt", out="dump/units/test/units")

Bad utterances (unreadable or empty audio, a failing ``cmd |``, a segment past the end,
audio too short for one frame, non-finite features) are skipped with a warning naming the
utterance, and counted in the summary at the end; ``strict=True`` stops at the first one
instead (no output written). A run where every utterance fails is an error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rpq_units.errors import UserError
from rpq_units.files import write_text_atomic
from rpq_units.pipeline.codebooks import load_quantizer, save_codebook
from rpq_units.pipeline.data import AudioError, AudioLoader, Utterance, load_data_dir
from rpq_units.pipeline.features import parse_layer, resolve_layer
from rpq_units.pipeline.shards import (
    FeatureShards,
    FeatureShardWriter,
    select_portion,
    shard_range,
    write_feats_json,
)
from rpq_units.pipeline.units import (
    UnitArkWriter,
    merge_unit_files,
    units_to_text,
    write_token_list,
    write_units,
)
from rpq_units.quant.base import METHODS, QuantizerError, make_quantizer, reconstruction_mse

logger = logging.getLogger("rpq_units")

# config keys that are not quantizer constructor arguments
_FIT_KEYS = {"method", "max_frames"}


#: with ``--batch_size`` > 1, this many batches of utterances are read ahead and grouped by length
LENGTH_SORT_BATCHES = 16
#: ``encode`` gathers utterances until their frames reach this many and quantizes them in one
#: search (256 MB of float32 frames at D = 1024); the units equal those of one utterance at
#: a time (tests/pipeline/test_encode_batched.py)
QUANTIZE_FRAMES = 1 << 16


class BadUtterance(UserError):
    """One utterance could not be turned into features or units."""


# ---- shared loop ---------------------------------------------------------------------------


def _progress(it: Any, desc: str, total: int | None = None) -> Any:
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="utt", mininterval=2.0, dynamic_ncols=True, total=total)


def _loaded_ahead(
    utts: Sequence[Utterance], load: AudioLoader, ahead: int
) -> Iterator[tuple[Utterance, np.ndarray | None, AudioError | None]]:
    """``(utterance, waveform, None)`` or ``(utterance, None, error)`` in order, the audio read
    by one background thread up to ``ahead`` utterances in advance, so reading and decoding
    overlap the upstream's forward (soundfile and the pipe reads release the GIL). One
    thread: the loader's cache of piped recordings sees the utterances in order."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor
    from itertools import islice

    def one(utt: Utterance) -> tuple[np.ndarray | None, AudioError | None]:
        try:
            return load(utt), None
        except AudioError as e:
            return None, e

    with ThreadPoolExecutor(1) as pool:
        todo = iter(utts)
        queue = deque((u, pool.submit(one, u)) for u in islice(todo, max(1, ahead)))
        while queue:
            utt, fut = queue.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(one, nxt)))
            yield (utt, *fut.result())


def iter_features(
    utts: Sequence[Utterance],
    fx: Any,
    *,
    strict: bool,
    skipped: list[str],
    batch_size: int = 1,
    desc: str = "features",
    clock: dict[str, float] | None = None,
) -> Iterator[tuple[Utterance, np.ndarray]]:
    """``(utterance, feats (T, D))`` for each good utterance; bad ones raise
    :class:`BadUtterance` (``strict``) or are logged and appended to ``skipped``.

    ``clock``: seconds are added to its ``"audio"`` (waiting for the reader thread) and
    ``"forward"`` (the upstream's forward with the copy of its output to the host) keys."""
    clock = {} if clock is None else clock
    clock.setdefault("audio", 0.0)
    clock.setdefault("forward", 0.0)

    load = AudioLoader()
    bad = _bad_utterance_handler(strict, skipped)

    def run(batch: list[tuple[Utterance, np.ndarray]]) -> list[tuple[Utterance, np.ndarray]]:
        return _extract_batch(fx, batch, bad)

    # batches of similar lengths (less padding): up to LENGTH_SORT_BATCHES batches of loaded
    # utterances are cut into batches in order of length; results come out in input order
    window = batch_size * (LENGTH_SORT_BATCHES if batch_size > 1 else 1)
    pending: list[tuple[Utterance, np.ndarray]] = []

    def flush() -> Iterator[tuple[Utterance, np.ndarray]]:
        order = sorted(range(len(pending)), key=lambda i: len(pending[i][1]))
        done: dict[str, np.ndarray] = {}
        for s in range(0, len(order), batch_size):
            with _timed(clock, "forward"):  # synchronous: the output is on the host
                ran = run([pending[i] for i in order[s : s + batch_size]])
            for utt, feats in ran:
                done[utt.uttid] = feats
        for utt, _ in pending:
            if utt.uttid in done:
                yield utt, done.pop(utt.uttid)
        pending.clear()

    loaded = iter(_progress(_loaded_ahead(utts, load, 2 * window + 2), desc, len(utts)))
    try:
        while True:
            with _timed(clock, "audio"):
                item = next(loaded, None)
            if item is None:
                break
            utt, wav, err = item
            if err is not None:
                bad(utt, err)
                continue
            pending.append((utt, wav))
            if len(pending) >= window:
                yield from flush()
        if pending:
            yield from flush()
    finally:
        # now, not when the frame is freed: the progress bar ends before an error is printed
        # and the reader thread stops
        loaded.close()


def _bad_utterance_handler(
    strict: bool, skipped: list[str]
) -> Callable[[Utterance, Exception], None]:
    """What to do with an utterance that failed: raise :class:`BadUtterance` (``strict``), or
    log it and append its id to ``skipped``."""

    def bad(utt: Utterance, err: Exception) -> None:
        msg = str(err) if utt.uttid in str(err) else f"utterance {utt.uttid}: {err}"
        if strict:
            raise BadUtterance(msg) from err
        logger.warning("skipping %s", msg)
        skipped.append(utt.uttid)

    return bad


def _extract_batch(
    fx: Any, batch: list[tuple[Utterance, np.ndarray]],
    bad: Callable[[Utterance, Exception], None],
) -> list[tuple[Utterance, np.ndarray]]:
    """``(utterance, feats (T, D))`` of the loaded ``(utterance, wav)`` of ``batch``: one
    forward of them all; when that fails, one at a time to find the culprit; each bad one goes
    to ``bad``."""
    from rpq_units.pipeline.features import FeatureError

    if len(batch) == 1:
        utt, wav = batch[0]
        try:
            return [(utt, _check_feats(utt, fx.extract(wav)))]
        except (FeatureError, BadUtterance) as e:
            bad(utt, e)
            return []
    try:
        feats = fx.extract_batch([w for _, w in batch])
    except FeatureError:  # find the culprit one by one
        return [r for item in batch for r in _extract_batch(fx, [item], bad)]
    out = []
    for (utt, _), f in zip(batch, feats, strict=True):
        try:
            out.append((utt, _check_feats(utt, f)))
        except BadUtterance as e:
            bad(utt, e)
    return out


@contextmanager
def _timed(clock: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``clock[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[key] = clock.get(key, 0.0) + time.perf_counter() - t0


def _check_feats(utt: Utterance, feats: np.ndarray) -> np.ndarray:
    if feats.shape[0] == 0:
        raise BadUtterance(f"utterance {utt.uttid}: no feature frames")
    if not np.isfinite(feats).all():
        n = int((~np.isfinite(feats)).any(axis=1).sum())
        raise BadUtterance(f"utterance {utt.uttid}: {n} of {feats.shape[0]} frames are NaN/Inf")
    return feats


def _quantize_utterances(
    q: Any, batch: Sequence[tuple[Utterance, np.ndarray]], *, strict: bool, skipped: list[str],
) -> list[tuple[Utterance, np.ndarray]]:
    """``(utterance, codes (T, M))`` for the utterances of ``batch``: one search over their
    frames together (with their lengths, so no window of frames crosses an utterance), split
    back; when that fails, one at a time to find the bad ones, which are skipped (or raise
    :class:`BadUtterance` with ``strict``)."""
    if len(batch) > 1:
        lengths = [f.shape[0] for _, f in batch]
        try:
            codes = q.encode(np.concatenate([f for _, f in batch]), lengths)
        except QuantizerError:
            pass  # find the culprit one by one below
        else:
            ends = np.cumsum(lengths)
            return [(utt, codes[e - n : e]) for (utt, _), n, e in zip(batch, lengths, ends, strict=True)]
    out = []
    for utt, feats in batch:
        try:
            out.append((utt, q.encode(feats)))
        except QuantizerError as e:
            if strict:
                raise BadUtterance(f"utterance {utt.uttid}: {e}") from e
            logger.warning("skipping utterance %s: %s", utt.uttid, e)
            skipped.append(utt.uttid)
    return out


def report_skipped(what: str, done: int, total: int, skipped: list[str]) -> None:
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        logger.warning(
            "%s: skipped %d of %d utterances (bad input): %s", what, len(skipped), total, shown
        )
    if total and not done:
        raise BadUtterance(f"{what}: all {total} utterances failed (see the warnings above)")


# ---- subcommands -------------------------------------------------------------------------


def dump_feats(
    *,
    data_dir: str,
    out_dir: str,
    upstream: str,
    portion: float,
    upstream_ckpt: str | None = None,
    layer: int = -1,
    seed: int = 0,
    nshard: int = 1,
    rank: int = 0,
    device: str = "cpu",
    batch_size: int = 1,
    chunk_s: float = 30.0,
    strict: bool = False,
    autocast: str | None = None,
    format: str = "npy",
    from_feats_dir: str | None = None,
) -> dict[str, Any]:
    """Features of a seeded ``portion`` of ``data_dir`` (shard ``rank`` of ``nshard``) to
    ``out_dir/feats.<rank>.{npy,len,ids}`` (``format="npy"``: the shards ``fit`` reads) or
    ``out_dir/feats.<rank>.{ark,scp}`` (``format="ark"``: Kaldi matrices, as ESPnet's
    ``kaldi_ark`` input), and ``out_dir/feats.json``. ``portion``: 1 for every utterance; it
    has no default here (the recipes state theirs once, in egs/TEMPLATE/utils/unit_defaults.sh).

    ``from_feats_dir``: an npy dump of the same data dir: its utterances are copied from it
    (e.g. into the ark the continuous reference reads), only the others run through the
    upstream; used only when it was made with the same upstream, checkpoint, layer, autocast
    and batch size (the rule ``encode --feats_dir`` follows)."""
    from rpq_units.pipeline.features import FeatureArkWriter, FeatureExtractor

    writers = {"npy": FeatureShardWriter, "ark": FeatureArkWriter}
    if format not in writers:
        raise ValueError(f"unknown feature format {format!r} (npy or ark)")

    mine = _portion_shard(data_dir, portion, seed, nshard, rank)
    start = time.perf_counter()
    clock = {"load": 0.0, "audio": 0.0, "forward": 0.0, "write": 0.0}
    with _timed(clock, "load"):
        fx = FeatureExtractor(
            upstream=upstream, ckpt=upstream_ckpt, layer=layer, device=device, chunk_s=chunk_s,
            autocast=autocast,
        )
    skipped: list[str] = []
    dumped: dict[str, np.ndarray] = {}
    if from_feats_dir is not None:
        dumped, _ = features_of(
            "dump_feats", from_feats_dir, mine, data_dir=data_dir, upstream=upstream,
            ckpt=fx.ckpt, sha=fx.ckpt_sha256, layer=fx.layer, autocast=autocast,
            batch_size=batch_size)
    rest = [u for u in mine if u.uttid not in dumped]
    computed = iter_features(rest, fx, strict=strict, skipped=skipped, batch_size=batch_size,
                             desc=f"dump_feats.{rank}", clock=clock)
    out = Path(out_dir)
    try:
        with writers[format](out, rank) as writer:
            for utt, feats in merge_in_order(mine, dumped, computed):
                with _timed(clock, "write"):
                    writer.add(utt.uttid, feats)
            report_skipped("dump_feats", len(writer.ids), len(mine), skipped)
            writer.dim = writer.dim or fx.dim
    finally:
        computed.close()  # its progress bar ends its line before an error is printed
    clock["total"] = time.perf_counter() - start  # with the files closed and renamed
    info = {
        **fx.describe(),
        "data_dir": str(Path(data_dir).resolve()),
        "nshard": nshard,
        "portion": portion,
        "seed": seed,
        "format": format,
        "batch_size": batch_size,
    }
    write_feats_json(out, info)
    summary = {"utterances": len(writer.ids), "frames": sum(writer.lens), "skipped": len(skipped),
               "seconds": clock}
    logger.info("dump_feats: wrote %s (%d utterances, %d frames, %d skipped)", writer.path,
                summary["utterances"], summary["frames"], summary["skipped"])
    logger.info("dump_feats: %s", clock_line(clock))
    return summary


def _portion_shard(
    data_dir: str, portion: float, seed: int, nshard: int, rank: int
) -> list[Utterance]:
    """The utterances of shard ``rank`` of ``nshard`` of a seeded ``portion`` of ``data_dir``."""
    utts = load_data_dir(data_dir)
    chosen = select_portion(len(utts), portion, seed)
    mine = [utts[chosen[i]] for i in shard_range(len(chosen), nshard, rank)]
    logger.info(
        "dump_feats: %d of %d utterances selected (portion %g, seed %d); shard %d/%d has %d",
        len(chosen), len(utts), portion, seed, rank, nshard, len(mine),
    )
    return mine


def clock_line(clock: dict[str, float]) -> str:
    """``"12.0 s: forward 2.3, write 8.1, audio 0.4, other 1.2"``: where a step's time went."""
    total = clock["total"]
    parts = [f"{k} {v:.1f}" for k, v in clock.items() if k != "total"]
    other = total - sum(v for k, v in clock.items() if k != "total")
    return f"{total:.1f} s: " + ", ".join([*parts, f"other {other:.1f}"])


def _fit_config(config: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise QuantizerError(f"{config}: no such config file")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise QuantizerError(f"{config}: not valid YAML ({e})") from e
        if not isinstance(cfg, dict):
            raise QuantizerError(f"{config}: expected a mapping of options")
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    if "method" not in cfg:
        raise QuantizerError(
            f"no quantization method: give --method ({', '.join(sorted(METHODS))}) or --config"
        )
    return cfg


def fit(
    *,
    feats_dir: str,
    out: str,
    config: str | None = None,
    method: str | None = None,
    num_codebooks: int | None = None,
    codebook_size: int | None = None,
    dims_ratio: float | None = None,
    seed: int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    max_frames: int | None = None,
    device: str = "cpu",
    memory_budget: float | None = None,
) -> dict[str, Any]:
    """Fit a quantizer on the frames of ``feats_dir`` (YAML ``config`` overridden by the
    arguments); writes ``out`` (codebook), ``out`` with ``.yaml`` (config and provenance) and
    ``.metrics.json`` (training distortion, time)."""
    cfg = _fit_config(
        config,
        {
            "method": method,
            "num_codebooks": num_codebooks,
            "codebook_size": codebook_size,
            "dims_ratio": dims_ratio,
            "seed": seed,
            "max_iter": max_iter,
            "tol": tol,
            "max_frames": max_frames,
        },
    )
    method = cfg["method"]
    qargs = {k: v for k, v in cfg.items() if k not in _FIT_KEYS}
    shards = FeatureShards(feats_dir)
    layer_dims = shards.info.get("layer_dims")
    try:
        if layer_dims:  # features of several layers side by side: each its own discretizer
            q = make_quantizer("layers", inner=method, layer_dims=layer_dims, device=device,
                               seed=qargs.pop("seed", 0), inner_conf=qargs)
        else:
            q = make_quantizer(method, device=device, **qargs)
    except TypeError as e:
        raise QuantizerError(f"method {method}: bad option ({e})") from e
    t0 = time.time()
    x, lengths = _training_frames(q, shards, cfg)
    t_load = time.time() - t0
    logger.info("fit: %s on %d x %d frames from %s%s", method, x.shape[0], x.shape[1], feats_dir,
                f" (layers {shards.info.get('layer')}, each its own)" if layer_dims else "")
    if x.shape[0] == 0:
        raise QuantizerError(f"{feats_dir}: no frames to fit on")
    t0 = time.time()
    budget = None if memory_budget is None else int(memory_budget * 2**30)
    q.fit(x, lengths, memory_budget=budget)
    t_fit = time.time() - t0
    q.meta = _codebook_meta(shards.info, feats_dir)
    out_path = Path(out)
    save_codebook(q, out_path)
    distortion = reconstruction_mse(q, x, lengths, memory_budget=budget)
    metrics = {
        "method": method,
        "frames": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "distortion": distortion,
        "distortion_per_dim": distortion / x.shape[1],
        "fit_seconds": round(t_fit, 3),
        "load_seconds": round(t_load, 3),
        "device": device,
    }
    desc = {"config": q.config(), "meta": q.meta, "fit": {k: cfg[k] for k in sorted(cfg)}}
    write_text_atomic(out_path.with_suffix(".yaml"), yaml.safe_dump(desc, sort_keys=False))
    write_text_atomic(out_path.with_suffix(".metrics.json"), json.dumps(metrics, indent=2) + "\n")
    logger.info("fit: wrote %s (distortion %.6g, %.1f s)", out_path, distortion, t_fit)
    return metrics


def _training_frames(
    q: Any, shards: FeatureShards, cfg: dict[str, Any]
) -> tuple[np.ndarray, list[int] | None]:
    """The frames ``x: (N, D)`` to fit ``q`` on (at most ``cfg["max_frames"]``, drawn with
    ``cfg["seed"]``) and, for a quantizer of windows of frames, the lengths of their
    utterances (whole utterances, never pooled frames); else lengths ``None``."""
    if q.context_frames > 1:
        return shards.utterance_frames(cfg.get("max_frames"), int(cfg.get("seed", 0)))
    return shards.frames(cfg.get("max_frames"), int(cfg.get("seed", 0))), None


def _codebook_meta(info: dict[str, Any], feats_dir: str) -> dict[str, Any]:
    """A codebook's provenance: the upstream and layer of the features (``feats.json``
    ``info``) it was fit on, and their folder."""
    return {
        "upstream": info.get("upstream"),
        "upstream_ckpt": info.get("upstream_ckpt"),
        "upstream_sha256": info.get("upstream_sha256"),
        "upstream_kind": info.get("upstream_kind"),
        "layer": info.get("layer"),
        "sample_rate": info.get("sample_rate", 16000),
        "frame_rate": info.get("frame_rate"),
        "feats_dir": str(Path(feats_dir).resolve()),
    }


def features_of(
    what: str, feats_dir: str, utts: Sequence[Utterance], **same_as: Any
) -> tuple[dict[str, np.ndarray], int]:
    """The features of those of ``utts`` that ``feats_dir`` holds, by utterance id, and their
    dimension, when :func:`reusable_features` (``same_as``: its keyword arguments) allows;
    logs how many come from there (``what``: the step's name)."""
    dumped, dim = reusable_features(feats_dir, **same_as)
    dumped = {u.uttid: dumped[u.uttid] for u in utts if u.uttid in dumped}
    logger.info("%s: %d of %d utterances from the features in %s, %d through the upstream",
                what, len(dumped), len(utts), feats_dir, len(utts) - len(dumped))
    return dumped, dim


def reusable_features(
    feats_dir: str, *, data_dir: str, upstream: str, ckpt: str | None, sha: str | None,
    layer: int | list[int], autocast: str | None, batch_size: int,
) -> tuple[dict[str, np.ndarray], int]:
    """The features ``dump_feats`` wrote to ``feats_dir`` by utterance id (memory-mapped
    views) and their dimension, when they were computed from ``data_dir`` with the same
    upstream, checkpoint, layer, precision and batch size as the features ``encode`` would
    compute; else ``({}, 0)`` with a log line saying what differs."""
    shards = FeatureShards(feats_dir)
    info = shards.info
    lay = info.get("layer")
    num_layers = info.get("num_layers")
    known = isinstance(num_layers, int) and num_layers > 0
    want_layer = resolve_layer(layer, num_layers) if known else parse_layer(layer)
    want = {
        "data_dir": str(Path(data_dir).resolve()),
        "upstream": upstream,
        "upstream_ckpt": None if ckpt is None else str(Path(ckpt).resolve()),
        "layer": want_layer,
        "autocast": autocast,
        "batch_size": batch_size,
        "format": "npy",
    }
    have = {**info, "layer": lay, "batch_size": info.get("batch_size", 1)}
    differ = [f"{k} {have.get(k)!r} (here {v!r})" for k, v in want.items() if have.get(k) != v]
    if sha and info.get("upstream_sha256") not in (None, sha):
        differ.append("upstream_sha256")
    if differ:
        logger.info("encode: not using the features in %s: %s differ", feats_dir,
                    ", ".join(differ))
        return {}, 0
    out: dict[str, np.ndarray] = dict(shards.utterances())
    return out, shards.dim


def merge_in_order(
    utts: Sequence[Utterance], dumped: dict[str, np.ndarray],
    computed: Iterator[tuple[Utterance, np.ndarray]],
) -> Iterator[tuple[Utterance, np.ndarray]]:
    """``(utterance, feats)`` in the order of ``utts``: from ``dumped`` where there, else from
    ``computed`` (the others, in order; an utterance it skipped is left out)."""
    nxt = next(computed, None)
    for utt in utts:
        if utt.uttid in dumped:
            yield utt, _check_feats(utt, np.array(dumped[utt.uttid], dtype=np.float32))
        elif nxt is not None and nxt[0].uttid == utt.uttid:
            yield nxt
            nxt = next(computed, None)


def encode(
    *,
    data_dir: str,
    codebook: str,
    out: str,
    ark: str | None = None,
    nshard: int = 1,
    rank: int = 0,
    device: str = "cpu",
    upstream: str | None = None,
    upstream_ckpt: str | None = None,
    layer: int | None = None,
    batch_size: int = 1,
    chunk_s: float = 30.0,
    strict: bool = False,
    autocast: str | None = None,
    feats_dir: str | None = None,
    quantize_frames: int = QUANTIZE_FRAMES,
) -> dict[str, Any]:
    """Units of shard ``rank`` of ``data_dir``, features computed on the fly with the
    codebook's upstream/layer (or the given overrides); writes ``out`` (sorted unit text) and,
    with ``ark``, a kaldiio ark + scp (``ark`` with ``.scp``) of ``(T, M)`` int32 codes.

    ``feats_dir``: a ``dump_feats`` output of the same data dir (the features a codebook was
    fit on): its utterances are encoded from those features, only the others run through the
    upstream (which is not loaded at all when every utterance is there). Used only when the
    features were made with the same upstream, checkpoint, layer, autocast and batch size.

    ``quantize_frames``: utterances are gathered until their frames reach this many and
    quantized in one search on the codebook's device (a longer utterance alone; 1: one
    utterance at a time); the units are the same for any value."""
    from rpq_units.pipeline.features import FeatureExtractor

    q = load_quantizer(codebook, device=device)
    meta = q.meta
    up, same, ckpt, lay = _encoding_upstream(meta, codebook, upstream, upstream_ckpt, layer)
    start = time.perf_counter()
    clock = {"load": 0.0, "audio": 0.0, "forward": 0.0, "quantize": 0.0, "write": 0.0}
    utts = load_data_dir(data_dir)
    mine = [utts[i] for i in shard_range(len(utts), nshard, rank)]
    sha = meta.get("upstream_sha256")
    dumped: dict[str, np.ndarray] = {}
    if feats_dir is not None:
        dumped, dim = features_of(
            "encode", feats_dir, mine, data_dir=data_dir, upstream=up, ckpt=ckpt,
            sha=sha if same else None, layer=lay, autocast=autocast, batch_size=batch_size)
        if dumped and dim != q.dim:
            raise QuantizerError(f"codebook {codebook} was trained on {q.dim}-dim features but "
                                 f"{feats_dir} has {dim}-dim features")
    rest = [u for u in mine if u.uttid not in dumped]
    computed: Iterator[tuple[Utterance, np.ndarray]] = iter(())
    skipped: list[str] = []
    if rest:
        with _timed(clock, "load"):
            fx = FeatureExtractor(upstream=up, ckpt=ckpt, layer=lay, device=device,
                                  chunk_s=chunk_s, autocast=autocast)
        _check_upstream_fits(fx, q, codebook, up, sha if same else None)
        computed = iter_features(rest, fx, strict=strict, skipped=skipped, batch_size=batch_size,
                                 desc=f"encode.{rank}", clock=clock)
    arks = UnitArkWriter(ark) if ark else None
    units, frames = _units_of(q, merge_in_order(mine, dumped, computed), arks,
                              quantize_frames=quantize_frames, strict=strict, skipped=skipped,
                              clock=clock)
    report_skipped("encode", len(units), len(mine), skipped)
    with _timed(clock, "write"):
        write_units(out, units)
        if arks is not None:
            arks.close()
    clock["total"] = time.perf_counter() - start
    summary = {"utterances": len(units), "frames": frames, "skipped": len(skipped),
               "from_feats_dir": len(dumped), "seconds": clock}
    logger.info("encode: wrote %s (%d utterances, %d frames, %d skipped)", out, len(units),
                frames, len(skipped))
    logger.info("encode: %s", clock_line(clock))
    return summary


def _encoding_upstream(
    meta: dict[str, Any], codebook: str, upstream: str | None, upstream_ckpt: str | None,
    layer: int | None,
) -> tuple[str, bool, str | None, int]:
    """``(upstream, same, ckpt, layer)`` that ``encode`` computes features with: the given
    ones, else the codebook's (``meta``); ``same``: the upstream is the codebook's own. The
    layer of another upstream defaults to its last."""
    up = upstream or meta.get("upstream")
    if not up:
        raise QuantizerError(f"{codebook}: no upstream recorded in the codebook; give --upstream")
    same = up == meta.get("upstream")
    ckpt = upstream_ckpt if upstream_ckpt is not None or not same else meta.get("upstream_ckpt")
    if layer is not None:
        lay = layer
    else:  # the codebook's layer for its own upstream, the last layer of another one
        lay = meta.get("layer", -1) if same else -1
    return up, same, ckpt, lay


def _check_upstream_fits(fx: Any, q: Any, codebook: str, up: str, sha: str | None) -> None:
    """Refuse the features of ``fx`` (upstream ``up``) whose checkpoint is not the one the codebook was fit on (``sha``:
    its recorded sha256, for the codebook's own upstream) or whose features have another
    dimension."""
    if sha and fx.ckpt_sha256 != sha:
        raise QuantizerError(
            f"codebook {codebook} was fit on features of a checkpoint with sha256 "
            f"{sha[:12]}..., but {fx.ckpt} has sha256 {(fx.ckpt_sha256 or '')[:12]}... "
            "(another or changed file)"
        )
    if fx.dim != q.dim:
        raise QuantizerError(
            f"codebook {codebook} was trained on {q.dim}-dim features but upstream {up} "
            f"layer {fx.layer} gives {fx.dim}-dim features"
        )


def _units_of(
    q: Any, feats: Iterator[tuple[Utterance, np.ndarray]], arks: UnitArkWriter | None, *,
    quantize_frames: int, strict: bool, skipped: list[str], clock: dict[str, float],
) -> tuple[dict[str, str], int]:
    """Unit text by utterance id of ``(utterance, feats)`` and the number of frames; codes are
    also added to ``arks``. Utterances are gathered until their frames reach
    ``quantize_frames`` and quantized in one search (a longer utterance alone)."""
    units: dict[str, str] = {}
    frames = 0
    pending: list[tuple[Utterance, np.ndarray]] = []
    pending_frames = 0

    def flush() -> None:
        nonlocal frames, pending_frames
        with _timed(clock, "quantize"):
            for utt, codes in _quantize_utterances(q, pending, strict=strict, skipped=skipped):
                units[utt.uttid] = units_to_text(codes, q.codebook_size)
                frames += codes.shape[0]
                if arks is not None:
                    arks.add(utt.uttid, codes)
        pending.clear()
        pending_frames = 0

    for utt, f in feats:
        if pending and pending_frames + f.shape[0] > quantize_frames:
            flush()
        pending.append((utt, f))
        pending_frames += f.shape[0]
    if pending:
        flush()
    return units, frames


def token_list(
    *,
    out: str,
    codebook: str | None = None,
    num_codebooks: int | None = None,
    codebook_size: int | None = None,
) -> int:
    """Write the source token list for ``codebook`` (or M and K); returns its length."""
    if codebook is not None:
        q = load_quantizer(codebook)
        m, k = q.num_codebooks, q.codebook_size
    elif num_codebooks is not None and codebook_size is not None:
        m, k = num_codebooks, codebook_size
    else:
        raise QuantizerError("give --codebook, or --num_codebooks and --codebook_size")
    write_token_list(out, m, k)
    return m * k + 3


def merge(*, inputs: Sequence[str], out: str) -> int:
    """Merge unit files into one sorted by utterance id; returns the number of utterances."""
    n = merge_unit_files(inputs, out)
    logger.info("merge: %d utterances from %d files -> %s", n, len(inputs), out)
    return n
