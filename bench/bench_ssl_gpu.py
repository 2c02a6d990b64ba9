#!/usr/bin/env python
"""GPU benchmark: BEST-RQ / BiRQ pre-training step throughput on one GPU.

For each paper-scale config (``conf/ssl/bestrq_librispeech960.yaml``,
``conf/ssl/birq_librispeech960.yaml``) and each precision (fp32 with TF32 off, bf16 autocast),
times one training step (forward + backward + AdamW step) on random 15 s batches of 80-dim
log-mel at 100 Hz, for

* ``reference``: plain torch: the same ESPnet Conformer (same config, same normalisation) with
  a stand-in loss (mean square of the last layer), no masking, labels or heads;
* ``ours``: :class:`rpq_units.ssl.model.BestRQModel` with the config's loss as the SSL task
  builds it: span masking with noise, per-utterance anchor labels through the random-projection
  quantizer, prediction heads and cross-entropy, and for BiRQ the unmasked pass through the
  first k layers and the Gumbel-softmax enhanced labels,

and prints input frames/s (100 Hz), utterances/s, ms per step, peak memory and ours/reference
throughput (the overhead of the label and loss code). Steps are timed after warm-up, median of
``--steps``. The waveform frontend is left out of both (it is the same STFT either way).

Needs torch (CUDA) and, besides this repository, these wheels (no other ESPnet dependency is
imported): ``espnet==202511``, ``typeguard==4.6.1``, ``packaging`` (pure Python), ``PyYAML``,
``numpy`` (cp312 binary wheels, if absent). Without CUDA it says so and exits 0. Examples::

    python bench/bench_ssl_gpu.py                       # both configs, batch 16 x 15 s
    python bench/bench_ssl_gpu.py --device cpu --tiny   # tiny sizes, to check the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRAME_RATE = 100  # input frames per second (10 ms hop)
TINY_ENCODER = {"output_size": 64, "attention_heads": 2, "linear_units": 128, "num_blocks": 3,
                "cnn_module_kernel": 7}


def load_config(path: Path, tiny: bool) -> dict:
    import yaml

    conf = yaml.safe_load(path.read_text())
    if tiny:
        conf["encoder_conf"].update(TINY_ENCODER)
        conf["loss"][0]["conf"]["codebook_size"] = 256
        if conf["loss"][0]["name"] == "birq":
            conf["loss"][0]["conf"]["enhanced_layer"] = None  # 0.7 of the tiny depth
    return conf


def build_encoder(conf: dict, input_size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """ESPnet Conformer + utterance MVN of ``conf``, imported directly (not through the SSL
    task, whose import pulls in text front ends this benchmark does not need)."""
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    from espnet2.layers.utterance_mvn import UtteranceMVN

    assert conf["encoder"] == "conformer" and conf["normalize"] == "utterance_mvn", conf
    return (ConformerEncoder(input_size=input_size, **conf["encoder_conf"]),
            UtteranceMVN(**conf["normalize_conf"]))


def build_ours(conf: dict, input_size: int) -> torch.nn.Module:
    """The model exactly as ``SSLTask.build_model`` assembles it for this config."""
    from rpq_units.ssl.loss import BestRQLoss, BiRQLoss
    from rpq_units.ssl.masking import SpanMasking
    from rpq_units.ssl.model import BestRQModel

    encoder, normalize = build_encoder(conf, input_size)
    (entry,) = conf["loss"]
    loss_cls = {"bestrq": BestRQLoss, "birq": BiRQLoss}[entry["name"]]
    loss = loss_cls(encoder.output_size(), **entry.get("conf", {}))
    util_conf = next(u.get("conf", {}) for u in conf["util"] if u["name"] == "span_mask")
    return BestRQModel(
        frontend=None, specaug=None, normalize=normalize, preencoder=None, encoder=encoder,
        losses=[loss], util_attributes={"span_mask"}, required_inputs=set(loss.required_inputs),
        util_modules=torch.nn.ModuleDict({"span_mask": SpanMasking(**util_conf)}),
        token_list=["<unused>"], input_size=input_size)


class Reference(torch.nn.Module):
    """Plain torch: normalisation + the same Conformer + a stand-in loss."""

    def __init__(self, conf: dict, input_size: int) -> None:
        super().__init__()
        self.encoder, self.normalize = build_encoder(conf, input_size)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        x, lens = self.normalize(feats, lens)
        out, _, _ = self.encoder(x, lens)
        return out.float().pow(2).mean()


def time_steps(model, step_loss, feats, lens, dtype, warmup: int, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = feats.device
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = step_loss(model, feats, lens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None,
                    help="SSL config(s) (default: both librispeech960 configs)")
    ap.add_argument("--batch", type=int, default=16, help="utterances per step")
    ap.add_argument("--seconds", type=float, default=15.0, help="utterance length")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny model and batch (script check)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_ssl_gpu: no CUDA device available; nothing measured "
              "(run this on a GPU machine, or --device cpu --tiny to check the script)")
        return 0
    if args.tiny:
        args.batch, args.seconds, args.warmup, args.steps = 2, 3.0, 1, 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    configs = args.config or [str(ROOT / "conf/ssl/bestrq_librispeech960.yaml"),
                              str(ROOT / "conf/ssl/birq_librispeech960.yaml")]
    n_frames = int(args.seconds * FRAME_RATE)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {name}; torch {torch.__version__}; batch {args.batch} x {args.seconds:g} s "
          f"({n_frames} frames of 80-dim log-mel); median of {args.steps} steps after "
          f"{args.warmup} warm-up; fp32 = TF32 off{'; TINY sizes' if args.tiny else ''}")
    header = (f"{'config':24s} {'dtype':5s} {'impl':9s} {'params M':>8s} {'frames/s':>10s} "
              f"{'utt/s':>7s} {'ms/step':>8s} {'peak GB':>8s} {'ours/ref':>8s}")
    print(header)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    feats = (torch.randn(args.batch, n_frames, 80, generator=g) * 2.0 + 1.0).to(device)
    lens = torch.full((args.batch,), n_frames, dtype=torch.long, device=device)

    def ours_loss(model, x, n):
        return model(x, n)[0].sum()

    def ref_loss(model, x, n):
        return model(x, n)

    for cfg in configs:
        conf = load_config(Path(cfg), args.tiny)
        label = Path(cfg).stem
        for dtype in args.dtypes.split(","):
            rates = {}
            for impl in ("reference", "ours"):
                torch.manual_seed(args.seed)
                model = (Reference(conf, 80) if impl == "reference"
                         else build_ours(conf, 80)).to(device).train()
                params = sum(p.numel() for p in model.parameters()) / 1e6
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times = time_steps(model, ref_loss if impl == "reference" else ours_loss,
                                   feats, lens, dtype, args.warmup, args.steps)
                t = statistics.median(times)
                rates[impl] = args.batch * n_frames / t
                peak = (torch.cuda.max_memory_allocated(device) / 2**30
                        if device.type == "cuda" else float("nan"))
                ratio = rates[impl] / rates["reference"]
                print(f"{label:24s} {dtype:5s} {impl:9s} {params:8.1f} {rates[impl]:10.0f} "
                      f"{args.batch / t:7.2f} {1000 * t:8.1f} {peak:8.2f} {ratio:8.2f}",
                      flush=True)
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
