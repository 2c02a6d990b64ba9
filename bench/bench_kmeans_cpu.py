#!/usr/bin/env python
"""CPU benchmark: our K-means / PQ / RPQ against sklearn MiniBatchKMeans and faiss.

One run, one seeded data set, every method fitted on the same frames. The objective is the
mean over all N frames of the squared distance to the nearest centroid (for PQ/RPQ: of
``||x - decode(encode(x))||^2``), evaluated by one exact fp32 routine (faiss ``IndexFlatL2``)
for every method.

Baselines:

* sklearn ``MiniBatchKMeans`` with the settings of ESPnet's ``learn_kmeans.py`` (from fairseq
  ``simple_kmeans``): ``init="k-means++", n_init=20, batch_size=10000, max_iter=100,
  max_no_improvement=100, reassignment_ratio=0.0, tol=0.0, init_size=None, compute_labels=False``.
* ``faiss.Kmeans(d, k, niter=20, seed=seed)``.
* ``faiss.ProductQuantizer(d, M, nbits)`` against our ``pq`` with the same M and K = 2**nbits.

Data: a seeded Gaussian mixture shaped like SSL speech features (a few thousand components
whose means lie near a low-dimensional subspace, a per-dimension scale spectrum, a non-zero
global mean). Example::

    python bench/bench_kmeans_cpu.py                 # N=100000 D=768 K=500, torch threads default
    python bench/bench_kmeans_cpu.py --n 20000 --skip_sklearn
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def make_data(n: int, d: int, *, components: int = 3000, rank: int = 64, seed: int = 0) -> np.ndarray:
    """Seeded (n, d) float32 Gaussian mixture with speech-feature-like structure."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g) / rank**0.5
    scale = 0.3 + 1.5 * torch.exp(-torch.arange(d, dtype=torch.float32) / (d / 8))
    scale = scale[torch.randperm(d, generator=g)]
    means = 2.0 * torch.randn(components, rank, generator=g) @ basis
    means += 0.4 * torch.randn(components, d, generator=g) * scale
    z = torch.randint(components, (n,), generator=g)
    x = means[z] + torch.randn(n, d, generator=g) * scale * 0.8
    x += torch.randn(d, generator=g) * 0.5  # global offset
    return x.numpy().astype(np.float32)


def kmeans_objective(x: np.ndarray, centroids: np.ndarray) -> float:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, _ = index.search(x, 1)
    return float(dist.astype(np.float64).mean())


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--pq_m", type=int, default=4)
    ap.add_argument("--pq_nbits", type=int, default=8, help="faiss PQ bits per code: K = 2**nbits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch/faiss threads (default: torch's)")
    ap.add_argument("--skip_sklearn", action="store_true")
    ap.add_argument("--skip_pq", action="store_true")
    args = ap.parse_args()

    import faiss
    from sklearn.cluster import MiniBatchKMeans

    from rpq_units import make_quantizer

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)

    x = make_data(args.n, args.d, seed=args.seed)
    load = os.getloadavg()
    print(f"# data: N={args.n} D={args.d} K={args.k} seed={args.seed}; threads={threads}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}, faiss {faiss.__version__}; loadavg at start {load[0]:.2f}")
    rows = []  # (name, wall, cpu, objective)

    # ---- ours --------------------------------------------------------------------------
    q, w, c = timed(lambda: make_quantizer("kmeans", codebook_size=args.k, seed=args.seed).fit(x))
    ours = (w, c, kmeans_objective(x, q.codebooks[0].numpy()))
    rows.append(("ours kmeans", *ours))
    print(f"  done: ours kmeans {w:.2f} s", flush=True)

    # ---- faiss ---------------------------------------------------------------------------
    def run_faiss():
        km = faiss.Kmeans(args.d, args.k, niter=20, seed=args.seed)
        km.train(x)
        return km.centroids

    cent, w, c = timed(run_faiss)
    rows.append(("faiss.Kmeans niter=20", w, c, kmeans_objective(x, cent)))
    print(f"  done: faiss.Kmeans {w:.2f} s", flush=True)

    # ---- sklearn, ESPnet/fairseq learn_kmeans settings --------------------------------------
    if not args.skip_sklearn:
        def run_sklearn():
            km = MiniBatchKMeans(
                n_clusters=args.k, init="k-means++", max_iter=100, batch_size=10000, verbose=0,
                compute_labels=False, tol=0.0, max_no_improvement=100, init_size=None, n_init=20,
                reassignment_ratio=0.0, random_state=args.seed,
            )
            km.fit(x)
            return km.cluster_centers_

        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads):  # sklearn's OpenMP and BLAS pools: same thread count
            cent, w, c = timed(run_sklearn)
        rows.append(("sklearn MiniBatchKMeans (ESPnet)", w, c, kmeans_objective(x, cent)))

    print()
    print(f"{'method':36s} {'fit s':>8s} {'cpu s':>8s} {'objective':>12s} {'time/ours':>10s} {'obj/ours':>9s}")
    for name, w, c, obj in rows:
        print(f"{name:36s} {w:8.2f} {c:8.2f} {obj:12.5f} {w / ours[0]:10.2f} {obj / ours[2]:9.4f}")
    best = min(obj for name, _, _, obj in rows[1:]) if len(rows) > 1 else ours[2]
    print(f"ours objective / best baseline objective: {ours[2] / best:.4f} (target <= 1.01)")

    if args.skip_pq:
        return
    m, kk = args.pq_m, 2**args.pq_nbits
    prows = []

    def run_faiss_pq():
        pq = faiss.ProductQuantizer(args.d, m, args.pq_nbits)
        pq.train(x)
        return pq

    pq, w, c = timed(run_faiss_pq)
    rec = pq.decode(pq.compute_codes(x))
    prows.append((f"faiss.ProductQuantizer M={m} K={kk}", w, c, float(((x - rec) ** 2).sum(1).mean())))
    for method in ("pq", "rpq"):
        q, w, c = timed(
            lambda method=method: make_quantizer(
                method, num_codebooks=m, codebook_size=kk, seed=args.seed
            ).fit(x)
        )
        prows.append((f"ours {method} M={m} K={kk}", w, c, q.distortion(x)))
    ref = prows[1]
    print()
    print(f"{'method':36s} {'fit s':>8s} {'cpu s':>8s} {'error':>12s} {'time/ours':>10s} {'err/ours':>9s}")
    for name, w, c, err in prows:
        print(f"{name:36s} {w:8.2f} {c:8.2f} {err:12.5f} {w / ref[1]:10.2f} {err / ref[3]:9.4f}")
    print(f"ours pq error / faiss pq error: {ref[3] / prows[0][3]:.4f} (target <= 1.02)")
    print(f"# loadavg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
