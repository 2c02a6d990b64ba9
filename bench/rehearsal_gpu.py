#!/usr/bin/env python
"""Full-size rehearsal of the LibriSpeech recipe's unit stages on one GPU.

A WavLM-Large-shaped model with random weights (24 layers, 1024 dims, 315 M parameters) is
written in s3prl's ``wavlm_local`` checkpoint format, a few hours of audio are generated (tones
and noise, 4-16 s utterances, 16 kHz WAV files in a Kaldi data dir), and the recipe's stages
run through the library functions the ``rpq-units`` commands call:

* stage 2 ``dump_feats`` on ``--portion`` of the utterances (layer 21),
* stage 3 ``fit`` of K-means K = 2000 (``conf/units/kmeans.yaml`` of the recipe),
* stage 4 ``encode`` of every utterance with ``feats_dir`` = stage 2's output (as the recipe's
  stage 4 does for the training set): the utterances stage 2 dumped are encoded from those
  features, the upstream runs on the others only.

It reports the wall time of each stage and the ratio ``bare / (stage 2 + 3 + 4)``, where
``bare`` is the upstream forward alone over the same audio (the same model, precision and
length-sorted batches, audio already on the device): 1.0 would mean the stages cost nothing
beyond one forward over the corpus. Stages 2 and 4 together run the forward once over all of
the audio, and each loads the upstream once (the load time is reported: it does not grow
with the corpus). With ``--autocast bf16`` it also measures, on a few utterances, how close
bf16 features and their units are to fp32 ones.

    python bench/rehearsal_gpu.py --hours 3 --device cuda --autocast bf16 --out_dir /tmp/reh
    python bench/rehearsal_gpu.py --tiny --device cpu --out_dir /tmp/reh   # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LARGE = {  # WavLM Large (Chen et al., 2022), as in its released config
    "extractor_mode": "layer_norm", "encoder_layers": 24, "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096, "encoder_attention_heads": 16, "layer_norm_first": True,
    "normalize": True, "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800,
    "gru_rel_pos": True, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
}
TINY = {**LARGE, "encoder_layers": 3, "encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128,
        "encoder_attention_heads": 4, "conv_pos": 16, "conv_pos_groups": 4,
        "num_buckets": 32, "max_distance": 128,
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_checkpoint(path: Path, cfg_over: dict, seed: int = 0) -> Path:
    """A random-weight WavLM in s3prl's ``wavlm_local`` format ``{"cfg", "model"}``."""
    from rpq_units.pipeline.s3prl_compat import install

    install()
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = WavLMConfig()
    cfg.update(cfg_over)
    torch.manual_seed(seed)
    model = WavLM(cfg)
    torch.save({"cfg": dict(cfg.__dict__), "model": model.state_dict()}, path)
    return path


def make_audio(data_dir: Path, hours: float, seed: int = 0, min_s: float = 4.0,
               max_s: float = 16.0) -> tuple[int, float]:
    """Utterances of tones plus noise (lengths uniform in [min_s, max_s]) as 16-bit WAV files
    and a Kaldi data dir (wav.scp, utt2spk, spk2utt, text). Returns (utterances, seconds)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    wav_dir = data_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    total, i, lines = 0.0, 0, []
    sr = 16000
    while total < hours * 3600:
        dur = float(rng.uniform(min_s, max_s))
        n = int(dur * sr)
        t = np.arange(n, dtype=np.float32) / sr
        f0 = rng.uniform(90, 250)
        sig = sum(np.sin(2 * np.pi * f0 * h * t * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t)))
                  / h for h in range(1, 5))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
        sig = 0.2 * sig * env + 0.02 * rng.standard_normal(n)
        uid = f"spk{i % 20:02d}-utt{i:06d}"
        path = wav_dir / f"{uid}.wav"
        sf.write(path, sig.astype(np.float32), sr, subtype="PCM_16")
        lines.append((uid, str(path)))
        total += n / sr
        i += 1
    lines.sort()
    (data_dir / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in lines))
    (data_dir / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u, _ in lines))
    spk: dict[str, list[str]] = {}
    for u, _ in lines:
        spk.setdefault(u.split("-")[0], []).append(u)
    (data_dir / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk.items())))
    (data_dir / "text").write_text("".join(f"{u} A\n" for u, _ in lines))
    return len(lines), total


def bare_forward(fx, wavs: list[np.ndarray], batch_size: int, device: str) -> float:
    """Seconds of the upstream forward alone over ``wavs`` in length-sorted batches."""
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
    on_dev = [torch.from_numpy(wavs[i]).to(device) for i in order]
    fx._forward(on_dev[:batch_size])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(on_dev), batch_size):
        fx._forward(on_dev[s : s + batch_size])
    sync(device)
    return time.perf_counter() - t0


def agreement(ckpt: Path, layer: int, codebook: Path, wavs: list[np.ndarray], device: str,
              autocast: str) -> dict:
    """Features and units of ``wavs`` with ``autocast`` against fp32."""
    from rpq_units.pipeline.codebooks import load_quantizer
    from rpq_units.pipeline.features import FeatureExtractor

    q = load_quantizer(codebook, device=device)
    f32 = FeatureExtractor(upstream="wavlm_local", ckpt=str(ckpt), layer=layer, device=device)
    flo = FeatureExtractor(upstream="wavlm_local", ckpt=str(ckpt), layer=layer, device=device,
                           autocast=autocast)
    rel, cos, same, frames = [], [], 0, 0
    for w in wavs:
        a, b = f32.extract(w), flo.extract(w)
        rel.append(float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30)))
        cos.append(float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                                             + 1e-30)).mean()))
        ca, cb = q.encode(a), q.encode(b)
        same += int((ca == cb).all(1).sum())
        frames += len(ca)
    return {"utterances": len(wavs), "feature_rel_error": float(np.mean(rel)),
            "feature_cosine": float(np.mean(cos)), "units_equal_pct": 100.0 * same / frames}


def run(*, out_dir: Path, hours: float, device: str, autocast: str | None, batch_size: int,
        portion: float, tiny: bool, codebook_size: int, layer: int, check_utts: int = 20) -> dict:
    from rpq_units.pipeline import steps
    from rpq_units.pipeline.data import AudioLoader, load_data_dir
    from rpq_units.pipeline.features import FeatureExtractor

    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"device": device, "autocast": autocast, "batch_size": batch_size,
                 "portion": portion, "tiny": tiny}
    t0 = time.perf_counter()
    ckpt = make_checkpoint(out_dir / "wavlm_large_random.pt", TINY if tiny else LARGE)
    log(f"checkpoint {ckpt} ({ckpt.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    data = out_dir / "data" / "train"
    n_utt, secs = make_audio(data, hours)
    res.update(utterances=n_utt, audio_hours=secs / 3600)
    log(f"audio: {n_utt} utterances, {secs / 3600:.2f} h in {time.perf_counter() - t0:.1f} s")

    feats, udir = out_dir / "feats", out_dir / "units"
    cfg = ROOT / "egs" / "librispeech" / "conf" / "units" / "kmeans.yaml"
    common = {"device": device, "batch_size": batch_size, "autocast": autocast}
    times = {}
    t0 = time.perf_counter()
    dumped = steps.dump_feats(data_dir=str(data), out_dir=str(feats), upstream="wavlm_local",
                              upstream_ckpt=str(ckpt), layer=layer, portion=portion, seed=0,
                              **common)
    sync(device)
    times["stage2_features"] = time.perf_counter() - t0
    # where stage 2's time goes: upstream load, waiting for audio, forward (with the copy to
    # the host), shard writes
    res["stage2_breakdown"] = dumped["seconds"]
    log(f"stage 2 (features of {portion:g} of the audio, {dumped['utterances']} utterances): "
        f"{times['stage2_features']:.1f} s; {steps.clock_line(dumped['seconds'])}")
    t0 = time.perf_counter()
    metrics = steps.fit(feats_dir=str(feats), out=str(udir / "codebook.pt"), config=str(cfg),
                      codebook_size=codebook_size, device=device)
    sync(device)
    times["stage3_fit"] = time.perf_counter() - t0
    res["fit_frames"] = metrics["frames"]
    res["fit_seconds_inside"] = metrics["fit_seconds"]
    log(f"stage 3 (k-means K={codebook_size} on {metrics['frames']} frames): "
        f"{times['stage3_fit']:.1f} s (fit itself {metrics['fit_seconds']:.1f} s)")
    t0 = time.perf_counter()
    enc = steps.encode(data_dir=str(data), codebook=str(udir / "codebook.pt"),
                     out=str(udir / "train.units"), feats_dir=str(feats), **common)
    sync(device)
    times["stage4_encode"] = time.perf_counter() - t0
    res["encoded_frames"] = enc["frames"]
    res["encoded_from_feats"] = enc["from_feats_dir"]
    res["stage4_breakdown"] = enc["seconds"]
    log(f"stage 4 (encode all {enc['utterances']} utterances, {enc['from_feats_dir']} from "
        f"stage 2's features): {times['stage4_encode']:.1f} s; {steps.clock_line(enc['seconds'])}")
    total = sum(times.values())

    load = AudioLoader()
    t0 = time.perf_counter()
    wavs = [load(u) for u in load_data_dir(data)]
    t_audio = time.perf_counter() - t0
    t0 = time.perf_counter()
    fx = FeatureExtractor(upstream="wavlm_local", ckpt=str(ckpt), layer=layer, device=device,
                          autocast=autocast)
    sync(device)
    t_load = time.perf_counter() - t0
    bare = bare_forward(fx, wavs, batch_size, device)
    log(f"bare upstream forward over all {secs / 3600:.2f} h: {bare:.1f} s "
        f"({secs / bare:.0f} s of audio per second); upstream load {t_load:.1f} s, reading "
        f"all audio {t_audio:.1f} s")
    loads = 2 if enc["from_feats_dir"] < enc["utterances"] else 1
    res.update(times, total_seconds=total, bare_forward_seconds=bare,
               ratio=bare / total, audio_per_second_bare=secs / bare,
               upstream_load_seconds=t_load, upstream_loads=loads, audio_read_seconds=t_audio,
               ratio_without_loads=bare / max(total - loads * t_load, 1e-9),
               # what grows with the audio: stages 2-4 without the upstream loads and the fit
               # (both of fixed size here); the ratio a corpus-scale run approaches
               ratio_per_audio=bare / max(total - loads * t_load - times["stage3_fit"], 1e-9))
    if autocast:
        res["agreement"] = agreement(ckpt, layer, udir / "codebook.pt", wavs[:check_utts], device,
                                     autocast)
        log(f"{autocast} vs fp32 on {check_utts} utterances: {res['agreement']}")
    (out_dir / "rehearsal.json").write_text(json.dumps(res, indent=2) + "\n")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--autocast", default="bf16", choices=["bf16", "fp16", "none"])
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--portion", type=float, default=0.3, help="stage 2 portion (recipe: 0.3)")
    ap.add_argument("--codebook_size", type=int, default=2000)
    ap.add_argument("--tiny", action="store_true", help="a 3-layer 64-dim model (smoke test)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    layer = -1 if args.tiny else 21
    res = run(out_dir=Path(args.out_dir), hours=args.hours, device=args.device,
              autocast=None if args.autocast == "none" else args.autocast,
              batch_size=args.batch_size, portion=args.portion, tiny=args.tiny,
              codebook_size=args.codebook_size, layer=layer)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
