#!/usr/bin/env python
"""GPU k-means against its peers, one run: ours (``lloyd.fit_kmeans``), flash-kmeans
(``batch_kmeans_Euclid``, fp16 and fp32 inputs) and fast_pytorch_kmeans (one problem at a time),
on the same data (``bench_lloyd_gpu.make_data``), the same initial centroids and the same number
of Lloyd passes (tol 0); the objective of every result computed by one exact fp32 routine
(``search.assign_exact``, TF32 off): the mean squared distance to the nearest centroid, summed
over the problems. Seconds per pass = wall time of the fit / passes, after one warm-up fit of
one pass (compilation, autotuning). Shapes: the paper's (2 M x 1024, K 2000), 2 M x 128 with K 2000, PQ's 4 x (2 M x 256) with K 256, and many small problems (RPQ
streams). Writes ``$OUT/gpu_peers.md`` and ``.json``; bench-only dependencies (flash-kmeans,
fast_pytorch_kmeans) are installed from wheels by bench/gpu_figures.sh.

    python bench/gpu_peers.py --out "$OUT"          # needs CUDA
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

SHAPES = [  # (name, problems G, rows N, dims d, K)
    ("N 2M x D 1024, K 2000", 1, 2_000_000, 1024, 2000),
    ("N 2M x D 128, K 2000", 1, 2_000_000, 128, 2000),
    ("PQ: 4 x (2M x 256), K 256", 4, 2_000_000, 256, 256),
    ("RPQ streams: 16 x (1M x 64), K 512", 16, 1_000_000, 64, 512),
]


def sync() -> None:
    torch.cuda.synchronize()


def objective(x: torch.Tensor, c: torch.Tensor) -> float:
    from rpq_units.quant import search

    torch.backends.cuda.matmul.allow_tf32 = False
    return float(search.assign_exact(x, c.float())[1].mean(1).sum())


def timed(fn, passes: int) -> tuple[float, torch.Tensor]:
    fn(1)
    sync()
    t = time.perf_counter()
    c = fn(passes)
    sync()
    return (time.perf_counter() - t) / passes, c


def run_shape(name: str, g: int, n: int, d: int, k: int, passes: int, dev: torch.device) -> dict:
    """Every method on one shape: {method: {"s_per_pass", "objective"} or the failure}."""
    from bench_lloyd_gpu import make_data

    from rpq_units.quant import lloyd

    xs, cs = zip(*(make_data(n, d, k, 10 + gi, dev) for gi in range(g)), strict=True)
    x, init = torch.stack(xs), torch.stack(cs)
    del xs, cs
    res: dict = {"shape": name}
    methods = {
        "ours": lambda p: lloyd.fit_kmeans(x, k, init=init, max_iter=p, tol=0.0,
                                           bounds=False, device=dev)[0],
    }
    try:
        from flash_kmeans import batch_kmeans_Euclid

        for dt, label in ((torch.float16, "flash-kmeans fp16"), (torch.float32, "flash-kmeans fp32")):
            methods[label] = lambda p, dt=dt: batch_kmeans_Euclid(
                x.to(dt), k, max_iters=p, tol=0.0, init_centroids=init.to(dt))[1]
    except ImportError as e:
        res["flash-kmeans"] = f"not installed: {e}"
    if g == 1:
        try:
            from fast_pytorch_kmeans import KMeans

            def fpk(p):
                km = KMeans(n_clusters=k, max_iter=p, tol=-1.0, mode="euclidean")
                km.fit_predict(x[0], centroids=init[0].clone())
                return km.centroids[None]

            methods["fast_pytorch_kmeans"] = fpk
        except ImportError as e:
            res["fast_pytorch_kmeans"] = f"not installed: {e}"
    for label, fn in methods.items():
        try:
            s, c = timed(fn, passes)
            res[label] = {"s_per_pass": s, "objective": objective(x, c)}
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {label} {s:.4f} s/pass, "
                  f"objective {res[label]['objective']:.4f}", flush=True)
        except Exception as e:  # noqa: BLE001  (one method must not lose the others)
            traceback.print_exc()
            res[label] = f"FAILED: {type(e).__name__}: {str(e)[:300]}"
        torch.cuda.empty_cache()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_peers_out")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--shapes", default="0,1,2,3", help="indices into SHAPES")
    args = ap.parse_args()
    dev = torch.device("cuda")
    rows, table = [], []
    for si in map(int, args.shapes.split(",")):
        res = run_shape(*SHAPES[si], args.passes, dev)
        rows.append(res)
        o, f = res.get("ours"), res.get("flash-kmeans fp16")
        cell = lambda r: f"{r['s_per_pass']:.4f}" if isinstance(r, dict) else "-"  # noqa: E731
        ratio = (f"{o['s_per_pass'] / f['s_per_pass']:.2f} / {o['objective'] / f['objective']:.5f}"
                 if isinstance(o, dict) and isinstance(f, dict) else "-")
        table.append(f"| {res['shape']} | {cell(o)} | {cell(f)} | {cell(res.get('flash-kmeans fp32'))} | "
                     f"{cell(res.get('fast_pytorch_kmeans'))} | {ratio} |")
        torch.cuda.empty_cache()
    md = [f"# k-means peers on {torch.cuda.get_device_name(dev)} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), "
          f"{args.passes} passes from the same initial centroids", "",
          "| shape | ours s/pass | flash-kmeans fp16 | flash-kmeans fp32 | fast_pytorch_kmeans | "
          "ours / flash fp16: time, objective |", "|---|---|---|---|---|---|", *table, ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_peers.md").write_text("\n".join(md) + "\n")
    (out / "gpu_peers.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
