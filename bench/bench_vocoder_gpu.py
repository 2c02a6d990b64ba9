#!/usr/bin/env python
"""GPU benchmark of the resynthesis vocoder (:mod:`rpq_units.evaluation.vocoder`: ESPnet's HiFi-GAN
generator and multi-scale + multi-period discriminators, the project's training loop).

Measures, with a config from ``conf/vocoder/`` (default: ``hifigan_gpu.yaml``, HiFi-GAN V1 on
WavLM-Large-sized features, 1024 dims at a 320-sample hop):

* training: steps/s of the full GAN update (generator + discriminators, batch and segment
  from the config) after ``--warmup`` steps, the audio seconds trained per second, and the
  peak device memory of the timed steps (the warm-up's peak, which includes cuDNN's
  autotuning workspaces, is printed beside it);
* synthesis: audio seconds generated per second for one ``--infer_seconds`` utterance, fp32
  and under bf16 autocast.

The table's ratio column compares each speed with real time (1.0 = as fast as the audio
plays), the usual yardstick for vocoders; bf16 synthesis is also given against fp32 from
the same run. Features and audio are random (speed does not depend on content).

Needs only torch, numpy, pyyaml, tqdm and the ``espnet`` wheel (``pip install --no-deps
espnet==202511``: ``espnet2.gan_tts.hifigan`` imports torch and numpy alone), plus this
repository on ``PYTHONPATH``. On a machine without CUDA it says so and exits 0, unless
``--device cpu`` is given (the tiny CPU run the tests use)::

    PYTHONPATH=. python bench/bench_vocoder_gpu.py                       # one GPU
    PYTHONPATH=. python bench/bench_vocoder_gpu.py --device cpu --config conf/vocoder/hifigan_cpu.yaml \\
        --dim 16 --steps 2 --warmup 1 --infer_seconds 0.5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rpq_units.evaluation.vocoder import Vocoder, train_hifigan  # noqa: E402

SR = 16000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(cfg: dict, dim: int, hop: int, steps: int, warmup: int,
                device: torch.device, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    tc = cfg.setdefault("train", {})
    seg = int(tc.get("segment_frames", 16))
    feats = [rng.standard_normal((seg * 4, dim)).astype(np.float32) for _ in range(8)]
    wavs = [(0.1 * rng.standard_normal(seg * 4 * hop)).astype(np.float32) for _ in range(8)]
    tc["adv_start_step"] = 0  # time the full GAN update
    tc["log_every"] = max(1, steps)
    voc = Vocoder(in_dim=dim, hop=hop, config=cfg, device=device)
    train_hifigan(voc, feats, wavs, train_steps=warmup)
    _sync(device)
    warm_peak = float("nan")
    if device.type == "cuda":  # the warm-up's peak includes cuDNN autotuning workspaces
        warm_peak = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    train_hifigan(voc, feats, wavs, train_steps=warmup + steps)
    _sync(device)
    secs = time.perf_counter() - t0
    sps = steps / secs
    batch = int(tc.get("batch_size", 8))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"steps_per_s": sps, "audio_s_per_s": sps * batch * seg * hop / SR, "peak_gib": peak,
            "warmup_peak_gib": warm_peak,
            "batch": batch, "segment_samples": seg * hop,
            "generator_params_m": sum(p.numel() for p in voc.generator.parameters()) / 1e6}


@torch.no_grad()
def bench_infer(cfg: dict, dim: int, hop: int, seconds: float, reps: int,
                device: torch.device, bf16: bool) -> float:
    voc = Vocoder(in_dim=dim, hop=hop, config=cfg, device=device)
    voc.generator.eval()
    frames = max(1, int(seconds * SR / hop))
    x = torch.randn(1, dim, frames, device=device)
    times = []
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            y = voc.generator(x)
        _sync(device)
        if i:  # the first call warms up kernels
            times.append(time.perf_counter() - t0)
    assert y.shape[-1] == frames * hop
    return frames * hop / SR / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "conf" / "vocoder" / "hifigan_gpu.yaml"))
    p.add_argument("--dim", type=int, default=1024, help="feature dims (WavLM Large: 1024)")
    p.add_argument("--hop", type=int, default=320, help="samples per feature frame")
    p.add_argument("--steps", type=int, default=50, help="timed training steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed training steps first")
    p.add_argument("--infer_seconds", type=float, default=10.0, help="utterance length")
    p.add_argument("--reps", type=int, default=5, help="timed synthesis runs (median)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (give --device cpu for a CPU run)")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    tr = bench_train(cfg, args.dim, args.hop, args.steps, args.warmup, device, args.seed)
    fp32 = bench_infer(cfg, args.dim, args.hop, args.infer_seconds, args.reps, device, False)
    bf16 = bench_infer(cfg, args.dim, args.hop, args.infer_seconds, args.reps, device, True)
    print(f"# vocoder benchmark: {Path(args.config).name}, {args.dim} dims, hop {args.hop}, "
          f"{name}, torch {torch.__version__}")
    print(f"generator {tr['generator_params_m']:.2f} M parameters; training batch {tr['batch']} "
          f"x {tr['segment_samples']} samples; peak memory {tr['peak_gib']:.2f} GiB in the timed "
          f"steps ({tr['warmup_peak_gib']:.2f} GiB in the warm-up, with cuDNN autotuning)")
    print()
    print("| measure | value | ratio |")
    print("|---|---|---|")
    print(f"| training steps/s | {tr['steps_per_s']:.2f} | - |")
    print(f"| training audio s/s (vs real time) | {tr['audio_s_per_s']:.1f} | "
          f"{tr['audio_s_per_s']:.1f}x |")
    print(f"| synthesis fp32 audio s/s (vs real time) | {fp32:.1f} | {fp32:.1f}x |")
    print(f"| synthesis bf16 audio s/s (vs real time; vs fp32) | {bf16:.1f} | "
          f"{bf16:.1f}x; {bf16 / fp32:.2f}x fp32 |")
    steps_total = int(cfg.get("train", {}).get("steps", 0))
    if steps_total and device.type == "cuda":
        print()
        print(f"the config's {steps_total} steps at this speed: "
              f"{steps_total / tr['steps_per_s'] / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
