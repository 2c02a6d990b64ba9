#!/usr/bin/env python3
"""The RPQ paper's claims (arXiv 2504.04721), measured on the frames of the demos.

The abstract claims: (1) RPQ reduces the correlation rho (0 <= rho <= 1) between
sub-quantizers; (2) its quantization error is lower-bounded by ``rho * eps_kms``, ``eps_kms``
the error of a single K-means quantizer; (3) PQ and RPQ beat K-means in WER/CER (measured by the
recipes, not here); (4) both approach the continuous features. The paper's definition of rho is
not public, so rho is computed under every reading its wording admits
(:data:`rpq_units.evaluation.analyze.RHO_DEFINITIONS`, formulas in that module's docstring):

* ``energy``: Pearson correlation of the sub-quantizers' per-frame error energies;
* ``shared``: Pearson correlation of their errors on the dimensions two subsets share;
* ``ensemble``: the bagging reading. RPQ's decoder averages the ``c_d`` sub-codewords covering
  dimension d; with ``s2_d`` the covering sub-quantizers' mean error second moment and
  ``rho_d`` their normalised cross moment, ``E[e_d^2] = s2_d (rho_d + (1 - rho_d) / c_d)``, so
  ``eps_rpq >= rho_ens * eps_sub``, ``rho_ens = sum_d s2_d rho_d / sum_d s2_d``,
  ``eps_sub = sum_d s2_d`` (the error of one K-means sub-quantizer);
* ``codes``: normalised mutual information between the code streams.

For each definition the bound ``eps_rpq >= rho * eps_kms`` is checked with three values of
``eps_kms``: ``eps_sub`` (ensemble reading), a K-means of the sub-quantizers' K on the whole
vector (``kms_K``), and a K-means at the same bits per frame (``kms_bits``, where 2^bits
codewords can be fitted).

Data: the frames of both demo recipes, generated at small size by their stages 1-2
(``egs/mini_librispeech``: 80-dim log-mel every 40 ms; ``egs/mini_ml_superb``: 240-dim s3prl
fbank every 10 ms) into ``--work_dir``, and any dump directory named by ``--feats NAME=DIR``.
Utterances are split (seeded) into fitting and held-out frames; every figure is on held-out
frames.

    python bench/paper_claims/run.py --out_dir bench/paper_claims

writes ``results.json``, ``results.md``, ``error_vs_bits.png`` and ``rho_vs_p.png``.
``--full`` runs a larger grid on more frames.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rpq_units import make_quantizer
from rpq_units.evaluation.analyze import RHO_DEFINITIONS, bound_holds, code_stats, error_correlation
from rpq_units.files import write_text_atomic
from rpq_units.pipeline.shards import FeatureShards

logger = logging.getLogger("paper_claims")
ROOT = Path(__file__).resolve().parents[2]
RHOS = tuple(RHO_DEFINITIONS)

# Demo recipes at small size: the feature dump each one's stage 2 writes (its upstream config),
# and the recipe options for stages 1-2.
DEMOS = {
    "mini_librispeech": ("feats_mel_40ms_llast_train_clean", [
        "--feats_portion", "1.0", "--data_opts",
        "--num_train 400 --num_dev 20 --num_test 20 --num_heldout 20"]),
    "mini_ml_superb": ("feats_mel_20ms_llast_train_1h", [
        "--feats_portion", "0.5", "--data_opts", "--lid false"]),
}


# ---- data ------------------------------------------------------------------------------------


def demo_feats(name: str, work_dir: Path) -> Path:
    """The feature dump of demo ``name`` under ``work_dir/name``, made by the recipe's stages
    1-2 (``run.sh --stage 1 --stop_stage 2``) unless it is there already."""
    base = (work_dir / name).resolve()
    dump_name, opts = DEMOS[name]
    feats = base / "dump" / dump_name
    if not (feats / ".done").is_file():
        opts = list(opts)
        i = opts.index("--data_opts") + 1
        opts[i] += f" --corpus_dir {base}/corpus --datadir {base}/data"
        cmd = ["./run.sh", "--stage", "1", "--stop_stage", "2", "--datadir", f"{base}/data",
               "--dumpdir", f"{base}/dump", "--expdir", f"{base}/exp", *opts]
        logger.info("%s: %s", name, shlex.join(cmd))
        base.mkdir(parents=True, exist_ok=True)
        with open(base / "stages_1_2.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT / "egs" / name, check=True, stdout=log,
                           stderr=subprocess.STDOUT)
        if not (feats / ".done").is_file():
            raise SystemExit(f"{name}: stages 1-2 did not write {feats} (log: {base}/stages_1_2.log)")
    return feats


def split_frames(feats_dir: Path, n_fit: int, n_eval: int, seed: int,
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fitting and held-out frames ``(n, D)`` float32 from disjoint utterances (a seeded 80/20
    split of the utterances), each capped by a seeded frame subset."""
    sh = FeatureShards(feats_dir)
    utts = [u for _, u in sh.utterances()]
    order = np.random.default_rng(seed).permutation(len(utts))
    n_held = max(1, len(utts) // 5)
    rng = np.random.default_rng(seed + 1)

    def take(idx: np.ndarray, cap: int) -> np.ndarray:
        x = np.concatenate([np.asarray(utts[i], np.float32) for i in idx])
        return x if x.shape[0] <= cap else x[np.sort(rng.choice(x.shape[0], cap, replace=False))]

    return take(order[n_held:], n_fit), take(order[:n_held], n_eval), sh.info


# ---- grid ------------------------------------------------------------------------------------


def grid(full: bool, bits_list: tuple[int, ...]) -> list[tuple[str, int, int, float | None]]:
    """(method, M, K, p) cells: PQ and RPQ (p = 1/M, 2/M, 0.5) at equal bits for M in 2, 4, 8,
    the demo's 4 x 128 with RPQ p from 1/8 to 1 (rho against p), and K-means at the bits that
    fit (2^bits codewords) and at each sub-quantizer K."""
    cells: list[tuple[str, int, int, float | None]] = []
    ks: set[int] = set()
    for bits in sorted(bits_list):
        for m in (2, 4, 8):
            if bits % m or not 4 <= 2 ** (bits // m) <= (4096 if full else 1024):
                continue
            k = 2 ** (bits // m)
            ks.add(k)
            cells.append(("pq", m, k, None))
            for p in sorted({1 / m, min(1.0, 2 / m), 0.5}):
                cells.append(("rpq", m, k, p))
    ks.add(128)
    cells.append(("pq", 4, 128, None))
    for p in (0.125, 0.25, 0.375, 0.5, 0.75, 1.0):
        cells.append(("rpq", 4, 128, p))
    for b in bits_list:
        if 2**b <= (8192 if full else 4096):
            ks.add(2**b)
    ks.add(500)  # the demos' K-means
    cells += [("kmeans", 1, k, None) for k in sorted(ks)]
    return list(dict.fromkeys(cells))


# ---- measurement -----------------------------------------------------------------------------


def measure(method: str, m: int, k: int, p: float | None, xf: np.ndarray, xe: np.ndarray,
            args: argparse.Namespace) -> dict:
    """Fit on ``xf``, measure on ``xe``: MSE, usage, entropy, sub-quantizer errors, rho."""
    kw: dict = {"codebook_size": k, "seed": args.seed, "max_iter": args.max_iter}
    if method != "kmeans":
        kw["num_codebooks"] = m
    if p is not None:
        kw["dims_ratio"] = p
    t = time.perf_counter()
    q = make_quantizer(method, **kw).fit(xf)
    fit_s = time.perf_counter() - t
    codes = np.asarray(q.encode(torch.from_numpy(xe)).cpu().numpy(), np.int64)
    xh = q.decode(torch.from_numpy(codes)).cpu().numpy().astype(np.float64)
    mse = float(((xe - xh) ** 2).sum(1).mean())
    var = float(((xe - xe.mean(0)) ** 2).sum(1).mean())
    stats = code_stats(codes, k)
    ec = error_correlation(q, xe, codes, max_frames=args.n_eval)
    covered = (np.unique(np.concatenate([s.cpu().numpy() for s in q.subspace_indices()])).size
               if hasattr(q, "subspace_indices") else xe.shape[1])
    return {
        "method": method, "M": m, "K": k, "p": p, "bits": round(m * math.log2(k), 3),
        "dim": int(xe.shape[1]), "mse": mse, "rel_mse": mse / var,
        "usage": float(np.mean([s["usage"] for s in stats])),
        "entropy_bits": float(sum(s["entropy_bits"] for s in stats)),
        "sub_mse": ec["sub_mse"],
        "rho": ec["rho_definitions"],
        "ensemble_bound": ec["ensemble_bound"],
        "shared_dims": ec["shared_dims"],
        "uncovered_dims": int(xe.shape[1] - covered),
        "fit_s": round(fit_s, 2),
    }


def add_bounds(rows: list[dict]) -> None:
    """For each PQ/RPQ row and each rho definition: ``eps >= rho * eps_kms`` with eps_kms the
    ensemble's ``eps_sub``, a K-means of the same K (``kms_K``), and one at the same bits."""
    km = {(r["dataset"], r["K"]): r["mse"] for r in rows if r["method"] == "kmeans"}
    for r in rows:
        if r["method"] == "kmeans":
            continue
        refs = {"eps_sub": (r["ensemble_bound"] or {}).get("eps_sub"),
                "kms_K": km.get((r["dataset"], r["K"])),
                "kms_bits": km.get((r["dataset"], round(2 ** r["bits"])))
                if float(r["bits"]).is_integer() else None}
        r["eps_kms"] = refs
        r["bound"] = {name: {ref: (bound_holds(r["mse"], rho, v) if v is not None else None)
                             for ref, v in refs.items()}
                      for name, rho in r["rho"].items()}


# ---- report ----------------------------------------------------------------------------------


def _f(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def _p(r: dict) -> str:
    if r["p"] is None:
        return "-"
    frac = r["p"] * r["M"]
    if abs(frac - round(frac)) < 1e-9 and round(frac) in (1, 2):
        return f"{r['p']:g} ({round(frac)}/M)"
    return f"{r['p']:g}"


def _yn(v) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def claims_summary(rows: list[dict], ds: str) -> list[str]:
    """The claims, one line each, on dataset ``ds`` (the demo's 4 x 128 and the equal-bits grid)."""
    sub = [r for r in rows if r["dataset"] == ds]
    pq = next(r for r in sub if r["method"] == "pq" and r["M"] == 4 and r["K"] == 128)
    rpq = next(r for r in sub if r["method"] == "rpq" and r["M"] == 4 and r["K"] == 128
               and abs(r["p"] - 0.25) < 1e-9)
    sweep = sorted((r for r in sub if r["method"] == "rpq" and r["M"] == 4 and r["K"] == 128),
                   key=lambda r: r["p"])
    out = ["Demo setting 4 x 128 (28 bits/frame), RPQ p = 1/4, against PQ:", "",
           "| rho definition | PQ | RPQ p=1/4 | RPQ lower than PQ | RPQ rho falls as p falls (p = "
           + ", ".join(f"{r['p']:g}" for r in sweep) + ") |", "|:--|---:|---:|:--|:--|"]
    for name in RHOS:
        a, b = pq["rho"][name], rpq["rho"][name]
        seq = [r["rho"][name] for r in sweep]
        mono = None if any(v is None for v in seq) else all(
            x <= y + 1e-9 for x, y in zip(seq, seq[1:], strict=False))
        out.append(f"| {name} | {_f(a)} | {_f(b)} | "
                   f"{_yn(None if a is None or b is None else b < a)} | "
                   f"{_yn(mono)} ({', '.join(_f(v, '.2f') for v in seq)}) |")
    out += ["", "Bound eps_rpq >= rho * eps_kms over every RPQ cell (holds / checked), by "
            "eps_kms: the ensemble's sub-quantizer error, K-means of the same K, K-means at "
            "equal bits:", "",
            "| rho definition | eps_sub | kms_K | kms_bits |", "|:--|---:|---:|---:|"]
    for name in RHOS:
        cells = []
        for ref in ("eps_sub", "kms_K", "kms_bits"):
            v = [r["bound"][name][ref] for r in sub if r["method"] == "rpq"
                 and r["bound"][name][ref] is not None]
            cells.append(f"{sum(v)}/{len(v)}" if v else "-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    unc = rpq["ensemble_bound"]["eps_uncovered"]
    out += ["", f"MSE at 28 bits/frame (held-out frames): PQ {pq['mse']:.4g}, RPQ p=1/4 "
            f"{rpq['mse']:.4g} (RPQ / PQ = {rpq['mse'] / pq['mse']:.2f}), of which {unc:.4g} on "
            f"the {rpq['uncovered_dims']} of {rpq['dim']} dims no RPQ subset covers (decoded as "
            f"their mean; {rpq['mse'] - unc:.4g} on the covered dims); K-means of 500 "
            f"(the demo's, 9 bits) "
            + _f(next((r["mse"] for r in sub if r["method"] == "kmeans" and r["K"] == 500),
                      None), ".4g") + "."]
    return out


def report(rows: list[dict], args: argparse.Namespace, command: str, elapsed: float,
           sources: dict) -> str:
    out = ["# The RPQ paper's claims, measured", "", f"Command: `{command}`", "",
           f"Machine: {args.machine}. Wall time {elapsed / 60:.1f} min. Lloyd iterations "
           f"{args.max_iter}, seed {args.seed}, torch threads {args.threads}; fitting frames "
           f"at most {args.n_fit}, held-out frames at most {args.n_eval} (other utterances). "
           "MSE = mean ||x - x_hat||^2 on held-out frames; rel = MSE / total variance; sub "
           "MSE = mean per-dim error of each sub-quantizer on its own sub-vector; entropy = "
           "sum over streams of the code entropy (bits/frame). rho definitions: "
           "`rpq_units/evaluation/analyze.py` (module docstring). Bound columns: eps >= rho * eps_kms with "
           "eps_kms = eps_sub / K-means of K / K-means at equal bits (yes, NO, - undefined).", ""]
    for ds, src in sources.items():
        sub = [r for r in rows if r["dataset"] == ds]
        out += [f"## {ds} (D = {sub[0]['dim']}; {src['frames_fit']} fitting, "
                f"{src['frames_eval']} held-out frames; `{src['feats_dir']}`)", ""]
        out += claims_summary(rows, ds) + [""]
        out += ["| bits | method | M x K | p | uncovered dims | MSE | MSE of uncovered dims | rel | sub MSE (mean) | usage | entropy | "
                + " | ".join(f"rho {n}" for n in RHOS) + " | bound ens. (eps_sub) | "
                "bound energy (kms_K / kms_bits) |",
                "|---:|:--|:--|:--|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(RHOS) + ":--|:--|"]
        for r in sorted(sub, key=lambda r: (r["bits"], r["method"], r["M"], r["p"] or 0)):
            b = r.get("bound", {})
            ens = _yn(b["ensemble"]["eps_sub"]) if b else "-"
            en = f"{_yn(b['energy']['kms_K'])} / {_yn(b['energy']['kms_bits'])}" if b else "-"
            sm = "-" if not r["sub_mse"] else f"{np.mean(r['sub_mse']):.4g}"
            unc = _f((r["ensemble_bound"] or {}).get("eps_uncovered"), ".4g")
            out.append(
                f"| {r['bits']:g} | {r['method']} | {r['M']}x{r['K']} | {_p(r)} | {r['uncovered_dims']} | {r['mse']:.4g} | {unc} "
                f"| {r['rel_mse']:.4f} | {sm} | {r['usage']:.2f} | {r['entropy_bits']:.1f} | "
                + " | ".join(_f(r["rho"][n]) for n in RHOS) + f" | {ens} | {en} |")
        out.append("")
    return "\n".join(out) + "\n"


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", pad_inches=0.08)
    os.replace(tmp, path)


_PANELS = {  # feature sets this benchmark has run, as a reader names them
    "mini_librispeech": "mini LibriSpeech demo, log-mel",
    "mini_ml_superb": "mini ML-SUPERB demo, log-mel",
    "mini_ml_superb_fbank": "mini ML-SUPERB demo, s3prl fbank",
}
REL_MSE = "relative MSE: MSE / feature variance"


def panel_title(ds: str, dim: int) -> str:
    """A panel's title: the feature set in words and its dimension (``whisper_tiny_en_l2`` ->
    "Whisper tiny.en, layer 2 (D = 384)")."""
    name = _PANELS.get(ds)
    m = re.fullmatch(r"(\w+?)_l(\d+)", ds)
    if name is None and m:
        model = {"whisper_tiny_en": "Whisper tiny.en", "birq": "BiRQ", "bestrq": "BEST-RQ"}
        name = f"{model.get(m[1], m[1])}, layer {m[2]}"
    return f"{name or ds} (D = {dim})"


def _legend_below(fig, ax, ncol: int) -> None:
    """The legend under the panels, off the data, and the layout made around it."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)


def plots(rows: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 5.0), squeeze=False,
                             layout="constrained")
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = [r for r in rows if r["dataset"] == ds]
        series = [("kmeans", lambda r: r["method"] == "kmeans", "k", "-")]
        for m, c in ((2, "tab:blue"), (4, "tab:orange"), (8, "tab:green")):
            series.append((f"pq M={m}", lambda r, m=m: r["method"] == "pq" and r["M"] == m, c, "-"))
            for pm, ls in ((1, "--"), (2, ":")):
                series.append((f"rpq M={m} p={pm}/M",
                               lambda r, m=m, pm=pm: r["method"] == "rpq" and r["M"] == m
                               and abs(r["p"] - min(1.0, pm / m)) < 1e-9, c, ls))
        for label, sel, color, ls in series:
            pts = sorted((r["bits"], r["rel_mse"]) for r in sub if sel(r))
            if pts:
                ax.plot([q[0] for q in pts], [q[1] for q in pts], ls, color=color, marker="o",
                        ms=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("bits per frame")
        ax.set_ylabel(REL_MSE)
        ax.set_title(panel_title(ds, sub[0]["dim"]))
        ax.grid(True, which="both", alpha=0.3)
    _legend_below(fig, axes[0][0], ncol=4)
    _save(fig, out_dir / "error_vs_bits.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.0 * len(datasets), 4.6), squeeze=False,
                             layout="constrained")
    for ax, ds in zip(axes[0], datasets, strict=True):
        sw = sorted((r for r in rows if r["dataset"] == ds and r["method"] == "rpq"
                     and r["M"] == 4 and r["K"] == 128), key=lambda r: r["p"])
        pq = next(r for r in rows if r["dataset"] == ds and r["method"] == "pq"
                  and r["M"] == 4 and r["K"] == 128)
        for i, name in enumerate(RHOS):
            c = plt.get_cmap("tab10")(i)
            pts = [(r["p"], r["rho"][name]) for r in sw if r["rho"][name] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=c, label=f"RPQ {name}")
            if pq["rho"][name] is not None:
                ax.axhline(pq["rho"][name], color=c, ls="--", lw=1, label=f"PQ {name}")
        ax.set_xlabel("RPQ dims ratio p (M = 4, K = 128)")
        ax.set_ylabel("correlation of the sub-quantizers' errors, rho")
        ax.set_title(panel_title(ds, pq["dim"]))
        ax.grid(True, alpha=0.3)
    _legend_below(fig, axes[0][0], ncol=len(RHOS))
    _save(fig, out_dir / "rho_vs_p.png")
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out_dir", default="bench/paper_claims")
    p.add_argument("--work_dir", default="/tmp/paper_claims",
                   help="where the demo corpora and features are generated (reused if there)")
    p.add_argument("--demos", default="mini_librispeech,mini_ml_superb",
                   help="comma-separated demo recipes whose frames to use ('' for none)")
    p.add_argument("--feats", action="append", default=[], metavar="NAME=DIR",
                   help="also a feature dump directory (rpq-units dump_feats); repeatable")
    p.add_argument("--full", action="store_true", help="larger grid, more frames")
    p.add_argument("--n_fit", type=int, default=None, help="fitting frames (16500; --full 60000)")
    p.add_argument("--n_eval", type=int, default=None, help="held-out frames (5000; --full 20000)")
    p.add_argument("--bits", default="", help="bits per frame of the equal-bits grid "
                   "(default 8,12,16,24; --full 8,12,16,20,24,32)")
    p.add_argument("--max_iter", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--machine", default="2-core x86_64 CPU shared with other jobs (under load)")
    p.add_argument("--render_only", action="store_true",
                   help="rewrite results.md and the plots from out_dir/results.json (no fitting)")
    args = p.parse_args(argv)
    if args.render_only:
        res = json.loads((Path(args.out_dir) / "results.json").read_text())
        add_bounds(res["rows"])
        run_args = argparse.Namespace(**res["args"])
        write_text_atomic(Path(args.out_dir) / "results.json", json.dumps(res, indent=1) + "\n")
        write_text_atomic(Path(args.out_dir) / "results.md", report(
            res["rows"], run_args, res["command"], res["elapsed_s"], res["sources"]))
        plots(res["rows"], Path(args.out_dir))
        return 0
    args.n_fit = args.n_fit or (60000 if args.full else 16500)
    args.n_eval = args.n_eval or (20000 if args.full else 5000)
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"), format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    command = "python " + shlex.join(["bench/paper_claims/run.py", *(argv or sys.argv[1:])])
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    named: dict[str, Path] = {}
    for d in filter(None, args.demos.split(",")):
        if d not in DEMOS:
            p.error(f"--demos: unknown demo {d!r} (known: {', '.join(DEMOS)})")
        named[d] = demo_feats(d, Path(args.work_dir))
    for spec in args.feats:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"--feats {spec!r}: expected NAME=DIR")
        if not (Path(path) / "feats.json").is_file():
            print(f"error: --feats {path}: no feats.json (not an rpq-units dump_feats directory)",
                  file=sys.stderr)
            return 1
        named[name] = Path(path)
    if not named:
        p.error("nothing to measure: give --demos and/or --feats")

    t0 = time.time()
    rows: list[dict] = []
    sources: dict[str, dict] = {}
    bits = tuple(int(b) for b in args.bits.split(",")) if args.bits else (
        (8, 12, 16, 20, 24, 32) if args.full else (8, 12, 16, 24))
    cells = grid(args.full, bits)
    for ds, fdir in named.items():
        xf, xe, info = split_frames(fdir, args.n_fit, args.n_eval, args.seed)
        sources[ds] = {"feats_dir": str(fdir), "frames_fit": int(xf.shape[0]),
                       "frames_eval": int(xe.shape[0]), "upstream": info.get("upstream"),
                       "frame_rate": info.get("frame_rate")}
        logger.info("%s: D=%d, %d fitting / %d held-out frames, %d cells", ds, xf.shape[1],
                    xf.shape[0], xe.shape[0], len(cells))
        for method, m, k, pr in cells:
            if k * 4 > xf.shape[0] or (method != "kmeans" and m > xf.shape[1]):
                logger.info("%s: skip %s %dx%d (too few frames or dims)", ds, method, m, k)
                continue
            r = measure(method, m, k, pr, xf, xe, args)
            r["dataset"] = ds
            rows.append(r)
            logger.info("%s %s %dx%d p=%s: mse %.4g rho %s (%.1fs)", ds, method, m, k, pr,
                        r["mse"], {n: None if v is None else round(v, 3)
                                   for n, v in r["rho"].items()}, r["fit_s"])
    add_bounds(rows)
    elapsed = time.time() - t0
    write_text_atomic(out_dir / "results.json", json.dumps(
        {"command": command, "args": vars(args), "elapsed_s": round(elapsed, 1),
         "sources": sources, "rho_definitions": RHO_DEFINITIONS, "rows": rows}, indent=1) + "\n")
    write_text_atomic(out_dir / "results.md", report(rows, args, command, elapsed, sources))
    plots(rows, out_dir)
    logger.info("wrote %s/results.{json,md}, error_vs_bits.png, rho_vs_p.png (%.0f s)", out_dir,
                elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
