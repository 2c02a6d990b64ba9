#!/usr/bin/env python3
"""Trade-off study of VQ variants (after Vali & Backstrom's VQ-variants study): reconstruction
error, nearest-neighbour recall, encode and training time against bits per vector.

Datasets (all generated here, from ``--seed``):
  * ``uncorrelated``: x ~ N(0, I_D), D = ``--toy_dim``.
  * ``correlated``: x ~ N(0, S) with S_ij = 0.9^|i-j| (an AR(1) process), D = ``--toy_dim``.
  * ``speech``: 80-dim log-mel filterbank frames (Kaldi fbank, 25 ms / 10 ms) of English
    sentences synthesised with espeak-ng (several voices and rates), frames shuffled.

Each dataset is split into ``--n_train`` training vectors, a database of ``--n_db`` vectors and
``--n_query`` queries. Each method is fitted on the training vectors and encodes the database;
reported: MSE ``mean ||x - x_hat||^2`` on the database, relative MSE (MSE / total variance),
recall@1/10/100 of the exact nearest neighbour of each query among the database (asymmetric
distance: raw query against reconstructed database), fit and database-encode seconds.

Methods at each (M, K) = bits M*log2(K): ours ``kmeans`` (one codebook of 2^bits, where it
fits the training set), ``pq``, ``rpq``, ``rvq`` (greedy), ``rvq_beam`` (beam B), ``avq``
(beam B), ``rvq_nsvq`` / ``rvq_ste`` (gradient-trained RVQ codebooks), ``random_projection``
(BEST-RQ, no stacking since frames are shuffled; its decode is a pseudo-inverse pre-image, for
information only); faiss ``ResidualQuantizer`` with ``max_beam_size`` 1 and B
(``faiss_rq``, ``faiss_rq_beam``) and ``LocalSearchQuantizer`` (``faiss_lsq``).

    python bench/vq_variants/run.py --out_dir bench/vq_variants

writes ``results.json``, ``results.md`` (tables, ratios to faiss) and ``error_vs_bits.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rpq_units import make_quantizer

logger = logging.getLogger("vq_variants")

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this "
    "from or had by hot word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like so "
    "these her long make thing see him two has look more day could go come did number sound no "
    "most people my over know water than call first who may down side been now find any new "
    "work part take get place made live where after back little only round man year came show "
    "every good me give our under name very through just form sentence great think say help low "
    "line differ turn cause much mean before move right boy old too same tell does set three "
    "want air well also play small end put home read hand port large spell add even land here "
    "must big high such follow act why ask men change went light kind off need house picture try "
    "again animal point mother world near build self earth father head stand own page should "
    "country found answer school grow study still learn plant cover food sun four between state "
    "keep eye never last let thought city tree cross farm hard start might story saw far sea draw"
).split()
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us+f3", "en-gb+m4", "en+f2")


# ---- data ------------------------------------------------------------------------------------


def toy(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal((n, d))
    if kind == "uncorrelated":
        return z.astype(np.float32)
    cov = 0.9 ** np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    return (z @ np.linalg.cholesky(cov).T).astype(np.float32)


def speech(n: int, rng: np.random.Generator, work: Path) -> np.ndarray:
    """At least ``n`` fbank frames of espeak-ng speech (80 dims)."""
    import soundfile as sf
    import torchaudio

    frames: list[np.ndarray] = []
    total, i = 0, 0
    while total < n:
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(8, 16))))
        voice = VOICES[i % len(VOICES)]
        rate = int(rng.integers(130, 190))
        wav = work / f"s{i:04d}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(wav), text],
                       check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
        w = torch.from_numpy(audio).unsqueeze(0)
        if sr != 16000:
            w = torchaudio.functional.resample(w, sr, 16000)
        fb = torchaudio.compliance.kaldi.fbank(w * 32768.0, num_mel_bins=80,
                                               sample_frequency=16000.0, dither=0.0)
        frames.append(fb.numpy())
        total += fb.shape[0]
        i += 1
    logger.info("speech: %d utterances, %d frames", i, total)
    x = np.concatenate(frames)
    return x[rng.permutation(x.shape[0])[:n]].astype(np.float32)


# ---- methods ---------------------------------------------------------------------------------


def run_ours(method: str, kw: dict, xt: np.ndarray, xdb: np.ndarray):
    q = make_quantizer(method, **kw)
    t = time.perf_counter()
    q.fit(xt)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    codes = q.encode(xdb)
    t_enc = time.perf_counter() - t
    return q.decode(codes), t_fit, t_enc


def run_faiss(kind: str, m: int, nbits: int, beam: int, niter: int, xt: np.ndarray,
              xdb: np.ndarray):
    import faiss

    d = xt.shape[1]
    if kind == "rq":
        q = faiss.ResidualQuantizer(d, m, nbits)
        q.max_beam_size = beam
        q.cp.niter = niter  # k-means iterations per stage, as ours
    else:
        q = faiss.LocalSearchQuantizer(d, m, nbits)
    t = time.perf_counter()
    q.train(np.ascontiguousarray(xt))
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    codes = q.compute_codes(np.ascontiguousarray(xdb))
    t_enc = time.perf_counter() - t
    return q.decode(codes), t_fit, t_enc


def recall(xq: np.ndarray, xdb: np.ndarray, rec: np.ndarray, ranks=(1, 10, 100)) -> dict:
    q, db, r = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (xq, xdb, rec))
    truth = torch.cdist(q.double(), db.double()).argmin(1)
    approx = torch.cdist(q, r).topk(max(ranks), dim=1, largest=False).indices
    hit = approx == truth.unsqueeze(1)
    return {f"recall@{k}": float(hit[:, :k].any(1).float().mean()) for k in ranks}


def methods_for(m: int, k: int, args: argparse.Namespace, n_train: int, dim: int) -> dict:
    bits = m * int(math.log2(k))
    b = args.beam
    tconf = {"epochs": args.grad_epochs}
    out = {}
    if 2**bits <= n_train // 4:
        out["kmeans"] = ("ours", "kmeans", {"num_codebooks": 1, "codebook_size": 2**bits,
                                            "max_iter": args.max_iter})
    if m <= dim:
        out["pq"] = ("ours", "pq", {"num_codebooks": m, "codebook_size": k, "max_iter": args.max_iter})
        out["rpq"] = ("ours", "rpq", {"num_codebooks": m, "codebook_size": k, "max_iter": args.max_iter})
    out["rvq"] = ("ours", "rvq", {"num_codebooks": m, "codebook_size": k, "max_iter": args.max_iter})
    out["faiss_rq"] = ("faiss", "rq", 1)
    if b > 1:
        out["rvq_beam"] = ("ours", "rvq", {"num_codebooks": m, "codebook_size": k,
                                           "max_iter": args.max_iter, "beam_width": b})
        out["faiss_rq_beam"] = ("faiss", "rq", b)
    out["avq"] = ("ours", "avq", {"num_codebooks": m, "codebook_size": k, "beam_width": b,
                                  "num_iters": args.avq_iters, "max_iter": args.max_iter})
    out["faiss_lsq"] = ("faiss", "lsq", 0)
    out["rvq_nsvq"] = ("ours", "rvq", {"num_codebooks": m, "codebook_size": k, "trainer": "nsvq",
                                       "trainer_conf": tconf})
    out["rvq_ste"] = ("ours", "rvq", {"num_codebooks": m, "codebook_size": k, "trainer": "ste",
                                      "trainer_conf": tconf})
    out["random_projection"] = ("ours", "random_projection", {
        "num_codebooks": m, "codebook_size": k, "proj_dim": 16, "stack_frames": 1})
    return {name: spec for name, spec in out.items() if name in args.methods}


# ---- report ----------------------------------------------------------------------------------

PAIRS = (("rvq", "faiss_rq"), ("rvq_beam", "faiss_rq_beam"), ("avq", "faiss_lsq"))


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    out = ["# VQ variants: error, recall and time against bits per vector", "",
           f"Command: `{command}`", "",
           f"N train {args.n_train}, database {args.n_db}, queries {args.n_query}; beam {args.beam}; "
           f"Lloyd iterations {args.max_iter} (ours and faiss RQ per stage); AVQ alternations {args.avq_iters}; gradient epochs "
           f"{args.grad_epochs}; torch/faiss threads {args.threads}. MSE on the database; "
           "rel = MSE / total variance; recall of the exact nearest neighbour (raw query against "
           "reconstructed database); times in seconds.", ""]
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == ds]
        out += [f"## {ds} (D = {sub[0]['dim']})", "",
                "| bits | M x K | method | MSE | rel | R@1 | R@10 | R@100 | fit s | encode s |",
                "|---:|:--|:--|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sub:
            out.append(
                f"| {r['bits']} | {r['M']}x{r['K']} | {r['method']} | {r['mse']:.4g} | "
                f"{r['rel_mse']:.4f} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | "
                f"{r['recall@100']:.3f} | {r['fit_s']:.2f} | {r['encode_s']:.2f} |")
        out.append("")
    out += ["## Ours against faiss at equal bits (MSE ratio ours / faiss; target <= 1.03)", "",
            "| dataset | bits | ours | faiss | MSE ours | MSE faiss | ratio |",
            "|:--|---:|:--|:--|---:|---:|---:|"]
    for ours, ref in PAIRS:
        for r in rows:
            if r["method"] != ours:
                continue
            f = [s for s in rows if s["method"] == ref and s["dataset"] == r["dataset"]
                 and s["bits"] == r["bits"] and s["K"] == r["K"]]
            if f:
                out.append(f"| {r['dataset']} | {r['bits']} | {ours} | {ref} | {r['mse']:.4g} | "
                           f"{f[0]['mse']:.4g} | {r['mse'] / f[0]['mse']:.3f} |")
    return "\n".join(out) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = [r for r in rows if r["dataset"] == ds]
        colors = plt.get_cmap("tab20").colors
        for i, meth in enumerate(dict.fromkeys(r["method"] for r in sub)):
            pts = sorted((r["bits"], r["rel_mse"]) for r in sub if r["method"] == meth)
            style = "--" if meth.startswith("faiss") else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=meth,
                    color=colors[(2 * i) % 20 + (2 * i) // 20])
        ax.set_yscale("log")
        ax.set_xlabel("bits per vector")
        ax.set_ylabel("relative MSE (MSE / variance)")
        ax.set_title(f"{ds} (D = {sub[0]['dim']})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


# ---- main ------------------------------------------------------------------------------------

ALL_METHODS = ("kmeans", "pq", "rpq", "rvq", "faiss_rq", "rvq_beam", "faiss_rq_beam", "avq",
               "faiss_lsq", "rvq_nsvq", "rvq_ste", "random_projection")


def merge_update(path: Path, new: list[dict], args: argparse.Namespace, command: str,
                 elapsed: float) -> tuple[list[dict], str, float]:
    """Rows of an earlier run at ``path`` with those of the re-measured methods replaced by
    ``new`` (matched on dataset, M, K and method); the commands are joined with " && "."""
    if not path.exists():
        raise SystemExit(f"run.py --update: no earlier results at {path}")
    old = json.loads(path.read_text())
    for key in ("n_train", "n_db", "n_query", "toy_dim", "beam", "max_iter", "seed"):
        if old["args"][key] != getattr(args, key):
            raise SystemExit(f"run.py --update: {path} was made with --{key} "
                             f"{old['args'][key]}, not {getattr(args, key)}")
    fresh = {(r["dataset"], r["M"], r["K"], r["method"]): r for r in new}
    rows = [fresh.pop((r["dataset"], r["M"], r["K"], r["method"]), r) for r in old["rows"]]
    rows += list(fresh.values())  # cells the earlier run did not have
    return rows, f"{old['command']} && {command}", old["elapsed_s"] + elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="bench/vq_variants")
    p.add_argument("--datasets", default="uncorrelated,correlated,speech")
    p.add_argument("--configs", default="2x64,2x256,3x256,4x256,5x256",
                   help="comma-separated MxK (bits = M*log2 K)")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--n_train", type=int, default=10000)
    p.add_argument("--n_db", type=int, default=10000)
    p.add_argument("--n_query", type=int, default=200)
    p.add_argument("--toy_dim", type=int, default=32)
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--max_iter", type=int, default=25, help="Lloyd iterations per k-means (ours, and faiss RQ niter)")
    p.add_argument("--avq_iters", type=int, default=4)
    p.add_argument("--grad_epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch and faiss threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--update", action="store_true",
                   help="re-measure only --methods: replace their rows in the out_dir's "
                        "results.json from an earlier run (same data settings) and rewrite the "
                        "tables and the plot from the merged rows")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.methods = args.methods.split(",")
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("rpq_units").setLevel(logging.WARNING)
    command = "python bench/vq_variants/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    n = args.n_train + args.n_db + args.n_query
    rows: list[dict] = []
    t_all = time.perf_counter()
    for ds in args.datasets.split(","):
        rng = np.random.default_rng(args.seed)
        if ds == "speech":
            with tempfile.TemporaryDirectory() as work:
                x = speech(n, rng, Path(work))
        else:
            x = toy(ds, n, args.toy_dim, rng)
        xt, xdb = x[: args.n_train], x[args.n_train : args.n_train + args.n_db]
        xq = x[args.n_train + args.n_db :]
        var = float(((xdb - xdb.mean(0)) ** 2).sum(1).mean())
        for m, k in configs:
            bits = m * int(math.log2(k))
            for name, spec in methods_for(m, k, args, args.n_train, x.shape[1]).items():
                if spec[0] == "ours":
                    rec, t_fit, t_enc = run_ours(spec[1], {**spec[2], "seed": args.seed}, xt, xdb)
                else:
                    rec, t_fit, t_enc = run_faiss(spec[1], m, int(math.log2(k)), spec[2],
                                                  args.max_iter, xt, xdb)
                mse = float(((xdb.astype(np.float64) - rec) ** 2).sum(1).mean())
                row = {"dataset": ds, "dim": int(x.shape[1]), "bits": bits, "M": m, "K": k,
                       "method": name, "mse": mse, "rel_mse": mse / var, "fit_s": t_fit,
                       "encode_s": t_enc, **recall(xq, xdb, rec)}
                rows.append(row)
                logger.info("%s %2d bits %dx%d %-17s mse %.4g rel %.4f R@1 %.3f fit %.1fs enc %.1fs",
                            ds, bits, m, k, name, mse, mse / var, row["recall@1"], t_fit, t_enc)
    elapsed = time.perf_counter() - t_all
    if args.update:
        rows, command, elapsed = merge_update(out_dir / "results.json", rows, args, command, elapsed)
    (out_dir / "results.json").write_text(json.dumps(
        {"command": command, "elapsed_s": elapsed, "args": vars(args), "rows": rows}, indent=1) + "\n")
    text = report(rows, args, command) + f"\nTotal wall time: {elapsed:.0f} s.\n"
    (out_dir / "results.md").write_text(text)
    plot(rows, out_dir / "error_vs_bits.png")
    logger.info("done in %.0f s -> %s", elapsed, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
