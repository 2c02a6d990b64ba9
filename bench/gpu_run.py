#!/usr/bin/env python
"""One GPU session of measurements, each part in its own try block; writes a markdown report.

1. **Lloyd pass** over N x D frames, K centroids (default 2M x 1024, K = 2000; data and
   mid-fit centroids of ``bench_lloyd_gpu.make_data``): plain torch fp32 (chunked ``addmm``,
   ``argmin``, ``index_add_``), the same with TF32, the certified fp16 search
   ``search.assign_lowp`` + ``index_add_``, and the fused Triton search
   ``search.assign_fused`` + the segment-sum update ``search.cluster_sums``: rows prepared per
   call, rows prepared once (``search.prepare_rows``; what ``lloyd.fit_kmeans`` runs on CUDA),
   the GEMM + scan variant (``kernel="gemm"``) and the uncertified fast mode
   (``certify=False``), each with the seconds per phase (preparation, kernel, rescoring,
   fallback, distances). Median of ``--reps``; codes equal to fp32 in %, and codes against a
   float64 search on a row subset. The bf16 variant of the fused kernel is checked for
   exactness too (Triton's CPU interpreter cannot run it).
2. **Streamed fit**: ``lloyd.fit_kmeans`` on frames 4x larger than ``memory_budget``, from host
   memory, against the same fit with the frames on the device (time, equal result).
3. **Rehearsal** (``bench/rehearsal_gpu.py``): WavLM-Large-shaped random checkpoint, 3 h of
   generated audio, recipe stages 2-4 (stage 4 encoding stage 2's sample from its dumped
   features); wall time and ratio to the bare upstream forward.
4. **Tiles**: the fused kernel with each tile of its autotuner (and the small-call tile),
   fp16 and bf16, on ``--tile_n`` rows against torch's fp32 product of the same rounded
   inputs: which compiled tiles are wrong.

    python bench/gpu_run.py --out "$OUT"            # full size (about 5 minutes on one H200)
    python bench/gpu_run.py --tiny --out /tmp/gpu   # CPU smoke test of every part
    python bench/gpu_run.py --parts lloyd,stream --out "$OUT"   # some parts only (about 45 s)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

# without a GPU the Triton kernels run in Triton's interpreter (to be set before triton loads)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - T0:6.1f}s] {msg}", flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timeit(fn, reps: int) -> float:
    """Median wall seconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def part_lloyd(args, dev: torch.device, report: list[str]) -> None:
    from bench_lloyd_gpu import make_data, reference_assign, update

    from rpq_units.quant import search

    n, d, k, reps = args.n, args.d, args.k, args.reps
    torch.backends.cuda.matmul.allow_tf32 = False
    x, cent = make_data(n, d, k, 0, dev)
    x3, c3 = x.unsqueeze(0), cent.unsqueeze(0)
    sync()
    log(f"lloyd: data {n} x {d}, K={k} on {dev}")

    def lowp_pass():
        return update(x, search.assign_lowp(x3, c3)[0][0], k)

    ref = reference_assign(x, cent)
    rows = []
    t_ref = timeit(lambda: update(x, reference_assign(x, cent), k), reps)
    t_ref_a = timeit(lambda: reference_assign(x, cent), reps)
    rows.append(("torch fp32 (addmm, argmin, index_add_)", t_ref, t_ref_a, 100.0))
    log(f"lloyd: fp32 pass {t_ref:.4f} s")
    torch.backends.cuda.matmul.allow_tf32 = True
    tf32 = reference_assign(x, cent)
    t_tf = timeit(lambda: update(x, reference_assign(x, cent), k), reps)
    t_tf_a = timeit(lambda: reference_assign(x, cent), reps)
    torch.backends.cuda.matmul.allow_tf32 = False
    rows.append(("torch TF32", t_tf, t_tf_a, 100.0 * float((tf32 == ref).float().mean())))
    log(f"lloyd: TF32 pass {t_tf:.4f} s")
    st_low: dict = {}
    low = search.assign_lowp(x3, c3, stats=st_low)[0][0]
    t_low = timeit(lowp_pass, reps)
    t_low_a = timeit(lambda: search.assign_lowp(x3, c3), reps)
    rows.append(("certified fp16, torch (assign_lowp) + index_add_", t_low, t_low_a,
                 100.0 * float((low == ref).float().mean())))
    log(f"lloyd: certified fp16 pass {t_low:.4f} s")
    t = time.perf_counter()
    for kern in ("gemm", "triton"):  # first calls: compilation and autotuning of the kernels
        search.assign_fused(x3, c3, kernel=kern)
    sync()
    log(f"lloyd: fused first call (compile + autotune) {time.perf_counter() - t:.1f} s")
    prep = search.prepare_rows(x3)
    t_prep_once = timeit(lambda: search.prepare_rows(x3), reps)
    new_sums = lambda: torch.zeros(k, d, dtype=torch.float64, device=dev)  # noqa: E731
    once = {"prepared": prep, "need_dist": False}
    # the segment sum's tile is tuned on its first call: on the exact codes, before any variant
    search.cluster_sums(x, ref, k, out=new_sums())
    variants = [
        ("gemm", "**certified fp16, `kernel=\"gemm\"` (the default: cuBLAS fp32-output GEMM + "
                 "Triton top-3 scan), rows prepared once per fit (as `lloyd.fit_kmeans`)**",
         {**once, "kernel": "gemm"}),
        ("gemm, per call", "certified fp16, `kernel=\"gemm\"`, rows prepared per call (with "
                           "distances)", {"kernel": "gemm"}),
        ("fused", "fused Triton fp16 (`kernel=\"triton\"`), rows prepared per call (with "
                  "distances)", {"kernel": "triton"}),
        ("fused, prepared once", "fused Triton fp16 (`kernel=\"triton\"`), rows prepared once "
                                 "per fit", {**once, "kernel": "triton"}),
        ("uncertified fast mode", "uncertified fast mode (`certify=False`: tier 1 only), "
                                  "`kernel=\"gemm\"`, rows prepared once",
         {**once, "kernel": "gemm", "certify": False}),
    ]
    phases = ("prep", "kernel", "rescore", "fallback", "dist")
    codes_of: dict = {}
    stats_of: dict = {}
    breakdown: dict = {}
    failed: list = []
    for key, label, kw in variants:
        try:
            st: dict = {}
            codes_v = search.assign_fused(x3, c3, stats=st, **kw)[0][0]

            def one_pass(kw=kw):
                codes, _ = search.assign_fused(x3, c3, **kw)
                sums, counts = search.cluster_sums(x, codes[0], k, out=new_sums())
                return (sums / counts.clamp_min(1).unsqueeze(1)).float()

            t_v = timeit(one_pass, reps)
            t_v_a = timeit(lambda kw=kw: search.assign_fused(x3, c3, **kw), reps)
            runs = []
            for _ in range(max(1, reps)):
                stt: dict = {"timing": True}
                search.assign_fused(x3, c3, stats=stt, **kw)
                runs.append(stt)
            breakdown[label] = {p: sorted(r.get(f"t_{p}", 0.0) for r in runs)[len(runs) // 2]
                                for p in phases}
            rows.append((label + " + segment sum", t_v, t_v_a,
                         100.0 * float((codes_v == ref).float().mean())))
            codes_of[key], stats_of[key] = codes_v, st
            log(f"lloyd: {key}: pass {t_v:.4f} s, assign {t_v_a:.4f} s, phases {breakdown[label]}")
        except Exception as e:  # noqa: BLE001  (one variant must not lose the others)
            traceback.print_exc()
            failed.append(f"{label}: FAILED ({type(e).__name__}: {str(e)[:300]})")
            log(f"lloyd: {key} FAILED: {e}")
    # the update alone, on the exact (fp32) codes: its time depends on the cluster sizes (one
    # program per cluster in the segment sum, atomics on the same rows in index_add_), so it
    # is timed on the codes every correct search gives, not on those of a variant under test
    t_upd = timeit(lambda: search.cluster_sums(x, ref, k, out=new_sums()), reps)
    t_idx = timeit(lambda: update(x, ref, k), reps)
    sizes = torch.bincount(ref, minlength=k)
    tuned = "n/a (interpreter)"
    try:
        from rpq_units.quant import search_triton

        best = getattr(search_triton._top2_tuned, "best_config", None)
        if best is not None:
            tuned = f"{best.kwargs}, num_warps={best.num_warps}, num_stages={best.num_stages}"
    except Exception as e:  # noqa: BLE001  (report, never fail the part on it)
        tuned = f"unknown ({e})"
    log(f"lloyd: update {t_upd:.4f} s; tile {tuned}")
    # exactness on a subset against float64
    m = min(n, args.exact_rows)
    d64 = torch.cdist(x[:m].double(), cent.double())
    truth = d64.argmin(1)
    del d64
    exact = {name: 100.0 * float((c[:m] == truth).float().mean())
             for name, c in (("fp32", ref), ("TF32", tf32), ("lowp", low), *codes_of.items())}
    st_b: dict = {"rows": 1, "rescored": 0, "fallback": 0}
    if os.environ.get("TRITON_INTERPRET") != "1":  # the interpreter's bf16 tl.dot is wrong
        st_b = {}
        fused_b = search.assign_fused(x3[:, :m], c3, dtype=torch.bfloat16, stats=st_b)[0][0]
        exact["fused bf16"] = 100.0 * float((fused_b == truth).float().mean())
    log(f"lloyd: codes equal to float64 on {m} rows: {exact}")
    report += [
        f"## 1. One Lloyd pass, N = {n:,} x D = {d}, K = {k} (median of {reps})", "",
        "| method | pass s | assign s | codes = fp32 % | vs fp32 |", "|---|---|---|---|---|",
    ]
    for name, tp, ta, eq in rows:
        report.append(f"| {name} | {tp:.4f} | {ta:.4f} | {eq:.4f} | {t_ref / tp:.2f}x |")
    def pct(st: dict, key: str) -> str:
        return f"{100 * st[key] / max(st['rows'], 1):.3f} %"

    report += [
        "",
        "Where the time of one fused assignment goes (seconds, synchronised per phase, median "
        f"of {max(1, reps)}; the update is the segment sum):", "",
        "| variant | " + " | ".join(phases) + " | update |",
        "|---|" + "---|" * (len(phases) + 1),
    ]
    for label, b in breakdown.items():
        report.append(f"| {label} | " + " | ".join(f"{b[p]:.4f}" for p in phases)
                      + f" | {t_upd:.4f} |")
    report += [
        "",
        f"Preparation of the rows, once per fit: {t_prep_once:.4f} s. Kernel tile chosen by the "
        f"autotuner: {tuned}.",
        "",
        f"Update alone, on the fp32 codes (cluster sizes {int(sizes.min())}-{int(sizes.max())}): "
        f"segment sum {t_upd:.4f} s, `index_add_` {t_idx:.4f} s. "
        f"Rows rescored / searched again in fp32: certified fp16 (torch) "
        f"{pct(st_low, 'rescored')} / {pct(st_low, 'fallback')}, "
        + "".join(f"{kk} {pct(v, 'rescored')} / {pct(v, 'fallback')}, "
                  for kk, v in stats_of.items())
        + f"fused bf16 {pct(st_b, 'rescored')} / {pct(st_b, 'fallback')}.",
        "",
        *([f"- {f}" for f in failed] + ([""] if failed else [])),
        f"Codes equal to a float64 search on the first {m:,} rows: "
        + ", ".join(f"{kk} {v:.4f} %" for kk, v in exact.items()) + ".", "",
    ]


def part_stream(args, dev: torch.device, report: list[str]) -> None:
    from bench_lloyd_gpu import make_data

    from rpq_units.quant import lloyd, search

    n, d, k = args.stream_n, args.d, args.stream_k
    x, c0 = make_data(n, d, k, 1, dev)
    # compile and autotune the kernels for this codebook shape before anything is timed
    search.assign(x[: min(n, 1 << 19)].unsqueeze(0), c0.unsqueeze(0))
    sync()
    x = x.cpu()
    budget = x.numel() * 4 // 4
    log(f"stream: {n} x {d} ({x.numel() * 4 / 1e9:.2f} GB) on the host, budget {budget / 1e9:.2f} GB")
    kw = {"seed": 0, "max_iter": args.stream_iters, "tol": 0.0, "bounds": False, "device": dev}
    t = time.perf_counter()
    c_mem, i_mem = lloyd.fit_kmeans(x, k, **kw)
    sync()
    t_mem = time.perf_counter() - t
    log(f"stream: in-memory fit {t_mem:.2f} s")
    t = time.perf_counter()
    c_str, i_str = lloyd.fit_kmeans(x, k, memory_budget=budget, **kw)
    sync()
    t_str = time.perf_counter() - t
    log(f"stream: streamed fit {t_str:.2f} s")
    diff = float((c_mem - c_str).abs().max())
    scale = float(c_mem.abs().max())
    sub = x[: min(n, 200_000)].to(dev)
    a = search.assign(sub.unsqueeze(0), c_mem.unsqueeze(0))[0]
    b = search.assign(sub.unsqueeze(0), c_str.unsqueeze(0))[0]
    same = 100.0 * float((a == b).float().mean())
    report += [
        f"## 2. k-means fit streamed from host memory ({n:,} x {d} = {x.numel() * 4 / 1e9:.2f} GB, "
        f"budget {budget / 1e9:.2f} GB, K = {k}, {args.stream_iters} passes, tol 0)", "",
        "| fit | wall s | inertia |", "|---|---|---|",
        f"| frames on the device | {t_mem:.2f} | {float(i_mem):.6f} |",
        f"| streamed (memory_budget) | {t_str:.2f} | {float(i_str):.6f} |", "",
        f"Largest centroid difference {diff:.3g} (centroid scale {scale:.3g}); codes of "
        f"{sub.shape[0]:,} frames under the two codebooks equal for {same:.4f} %.", "",
    ]


def part_tiles(args, dev: torch.device, report: list[str]) -> None:
    """The fused kernel (``search_triton.top2``) tile by tile, fp16 and bf16, against the same
    rounded inputs multiplied by torch in fp32 (no TF32): which compiled tiles give wrong top-2s
    (the autotuned BM 64 / BN 256 / BK 64 tile gave 23 % equal codes on an H200 in fp16). Each
    tile gets K and d padded to its own BN and BK, so the same list runs in the CPU interpreter
    (where the tile is only a block size: the kernel's logic at that shape)."""
    from bench_lloyd_gpu import make_data

    from rpq_units.quant import search
    from rpq_units.quant import search_triton as st

    n, d, k = args.tile_n, args.d, args.k
    torch.backends.cuda.matmul.allow_tf32 = False
    x, cent = make_data(max(n, k), d, k, 0, dev)
    x = x[:n].contiguous()
    c = cent.float()
    mu = c.mean(0)
    # the tiles in use, then those left out for wrong codes (search_triton.WRONG_TILES), so a
    # run shows whether they still are
    tiles = st.tiles(wrong=True)
    report += [f"## 4. Fused kernel per tile ({n:,} x {d}, K = {k}; top-2 of the kernel against "
               "torch's fp32 product of the same rounded inputs)", "",
               "| dtype | BM | BN | BK | warps | stages | best equal % | second equal % | "
               "max abs error of best score | s per call |", "|---|---|---|---|---|---|---|---|---|---|"]
    # Triton's CPU interpreter reads bf16 tensors wrongly (tests/quant/test_search.py skips it)
    dtypes = (torch.float16, torch.bfloat16) if dev.type == "cuda" else (torch.float16,)
    for dt in dtypes:
        name = "fp16" if dt == torch.float16 else "bf16"
        cache: dict = {}
        for tile in tiles:
            kp, dp = -(-k // tile[1]) * tile[1], -(-d // tile[2]) * tile[2]
            if (kp, dp) not in cache:
                cache.clear()
                _, _, beta, ch, cnp, _ = search.fused_codebook(c, mu, dt, kp, dp)
                xh, nrm, _ = st.prepare(x, mu, dt, dp)
                scale = 2.0 * beta * nrm
                ref = (cnp[None, :] - scale[:, None] * (xh.float() @ ch.float().T)).topk(
                    2, dim=1, largest=False)
                cache[(kp, dp)] = ((xh, ch, cnp, scale), ref)
            inputs, (ref_v, ref_i) = cache[(kp, dp)]
            i1, i2, v1, _, _ = st.top2(*inputs, tile=tile)
            sync()
            t = timeit(lambda a=inputs, tile=tile: st.top2(*a, tile=tile), 2)
            eq1 = 100.0 * float((i1.long() == ref_i[:, 0]).float().mean())
            eq2 = 100.0 * float((i2.long() == ref_i[:, 1]).float().mean())
            err = float((v1 - ref_v[:, 0]).abs().max())
            log(f"tiles: {name} {tile}: best equal {eq1:.3f} %, second {eq2:.3f} %, "
                f"max error {err:.3g}, {t:.4f} s")
            report.append(f"| {name} | " + " | ".join(map(str, tile))
                          + f" | {eq1:.3f} | {eq2:.3f} | {err:.3g} | {t:.4f} |")
        cache.clear()
    report += ["", "Near-ties decided by the accumulation order keep a correct tile a little "
               "under 100 %; a wrong tile is far below. In the CPU interpreter the warps and "
               "stages do nothing and the times are the interpreter's.", ""]


def part_rehearsal(args, dev: torch.device, report: list[str]) -> None:
    import rehearsal_gpu

    from rpq_units.pipeline.steps import clock_line

    out = Path(args.work) / "rehearsal"
    res = rehearsal_gpu.run(out_dir=out, hours=args.hours, device=str(dev), autocast="bf16",
                            batch_size=args.batch_size, portion=0.3, tiny=args.tiny,
                            codebook_size=args.k if not args.tiny else 20,
                            layer=-1 if args.tiny else 21)
    ag = res.get("agreement", {})
    report += [
        f"## 3. Rehearsal: recipe stages 2-4, {res['audio_hours']:.2f} h of generated audio "
        f"({res['utterances']} utterances), {'tiny model' if args.tiny else 'WavLM-Large-shaped random model'}, "
        f"bf16 autocast, batch {res['batch_size']}", "",
        "| step | wall s |", "|---|---|",
        f"| stage 2: features of 30 % of the audio | {res['stage2_features']:.1f} |",
        f"| stage 3: k-means fit ({res['fit_frames']:,} frames; fit itself {res['fit_seconds_inside']:.1f} s) | {res['stage3_fit']:.1f} |",
        f"| stage 4: encode all ({res['encoded_from_feats']} utterances from stage 2's features, "
        f"the others through the upstream) | {res['stage4_encode']:.1f} |",
        f"| **stages 2-4** | **{res['total_seconds']:.1f}** |",
        f"| bare upstream forward over all the audio | {res['bare_forward_seconds']:.1f} |", "",
        f"Ratio bare forward / stages 2-4: **{res['ratio']:.3f}**. Bare forward: "
        f"{res['audio_per_second_bare']:.0f} s of audio per second. Loading the upstream "
        f"(checkpoint, s3prl; built without random initialisation) took "
        f"{res['upstream_load_seconds']:.1f} s and happens {res['upstream_loads']} time(s) in "
        f"stages 2-4; without those loads the ratio is {res['ratio_without_loads']:.3f}, and "
        f"without the loads and the fit (the costs that do not grow with the audio) "
        f"{res['ratio_per_audio']:.3f}. Reading "
        f"all the audio (one thread): {res['audio_read_seconds']:.1f} s (overlapped with the "
        f"forward in stages 2 and 4).", "",
        "Where the time of stages 2 and 4 went (s; forward includes the copy of its output to "
        "the host; other: the progress bar, feature checks, file renames, reading stage 2's "
        "features in stage 4):", "",
        f"- stage 2: {clock_line(res['stage2_breakdown'])}",
        f"- stage 4: {clock_line(res['stage4_breakdown'])}", "",
        f"bf16 vs fp32 on {ag.get('utterances', 0)} utterances: feature relative error "
        f"{ag.get('feature_rel_error', math.nan):.4g}, mean cosine {ag.get('feature_cosine', math.nan):.6f}, "
        f"units equal {ag.get('units_equal_pct', math.nan):.3f} %.", "",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_run_out"))
    ap.add_argument("--work", default=None, help="scratch dir (default: /tmp/gpu_run)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CPU smoke test)")
    ap.add_argument("--parts", default="lloyd,stream,rehearsal,tiles",
                    help="comma-separated parts to run, of lloyd, stream, rehearsal, tiles "
                         "(default all)")
    ap.add_argument("--tile_n", type=int, default=1 << 18, help="rows of the per-tile check")
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--k", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--exact_rows", type=int, default=50_000)
    ap.add_argument("--stream_n", type=int, default=1_000_000)
    ap.add_argument("--stream_k", type=int, default=1000)
    ap.add_argument("--stream_iters", type=int, default=8)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--batch_size", type=int, default=16)
    args = ap.parse_args()
    parts = {"lloyd": part_lloyd, "stream": part_stream, "rehearsal": part_rehearsal,
             "tiles": part_tiles}
    chosen = [p for p in args.parts.split(",") if p]
    unknown = [p for p in chosen if p not in parts]
    if unknown or not chosen:
        ap.error(f"--parts {args.parts!r}: unknown part(s) {unknown} (choose from {', '.join(parts)})")
    if args.tiny:
        args.n, args.d, args.k, args.reps, args.exact_rows = 800, 32, 20, 1, 800
        args.stream_n, args.stream_k, args.stream_iters = 4000, 30, 3
        args.hours, args.batch_size = 0.01, 4
        args.tile_n = 300
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.work = args.work or "/tmp/gpu_run"
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "absent"
    report = [f"# GPU run ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
              f"Device: {name}; torch {torch.__version__}; triton {tv}; python "
              f"{sys.version.split()[0]}; TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}."
              f" Command: `{' '.join(sys.argv)}`", ""]
    status = {}
    for p in chosen:
        log(f"=== part {p}")
        t = time.perf_counter()
        try:
            parts[p](args, dev, report)
            status[p] = f"ok ({time.perf_counter() - t:.0f} s)"
        except Exception as e:  # one failing part must not lose the others
            tb = traceback.format_exc()
            print(tb, flush=True)
            status[p] = f"FAILED: {type(e).__name__}: {e}"
            report += [f"## {p}: FAILED", "", "```", tb[-3000:], "```", ""]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        (out / "gpu_run.md").write_text("\n".join(report) + "\n")
        log(f"=== part {p}: {status[p]}")
    report += ["## Parts", ""] + [f"- {p}: {s}" for p, s in status.items()] + [
        "", f"Total {time.time() - T0:.0f} s."]
    (out / "gpu_run.md").write_text("\n".join(report) + "\n")
    (out / "gpu_run.json").write_text(json.dumps(status, indent=2) + "\n")
    print("\n".join(report))
    return 0 if all(s.startswith("ok") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
