"""BiRQ label-collapse probe: the measurements behind the BiRQ part of
``rpq_units/ssl/loss.py``'s docstring. Not a test (pytest does not collect it): a script.

A small BiRQ Conformer (d 96, 4 layers, 4 heads, conv2d 4x subsampling, enhanced labels from
layer 3, 1024 anchor and enhanced codes, 16-dim projections, masking 0.01 x 40 frames) trains on
8 utterances per step of the demo corpus's generated audio (AdamW lr 2e-3, betas 0.9/0.98, 50
warm-up steps then inverse square root, gradient clip 5, one thread), printing one JSON line
every ``--every`` steps: ``ppl_enhanced`` (perplexity of the argmax enhanced labels over the
batch's valid frames), ``erank_RNh`` / ``top1_RNh`` (effective rank exp(H(s^2 / sum s^2)) and
top share of the squared singular values s of R N(h^k) over the batch, at most 16), ``erank_Nh``
(the same for N(h^k), at most d), the losses and accuracies; at the end the ESPnet validation
statistics over 20 dev utterances (eval mode: argmax labels). Data, from egs/mini_librispeech:

    local/data.sh --num_train 200 --num_dev 20 --num_test 10 --num_heldout 10 \\
        --corpus_dir /tmp/birq/corpus --datadir /tmp/birq/data

Two modes. Default: the model's own forward with the birq loss conf ``--loss_conf`` (JSON; labels
from a moving-average copy of the encoder: ``{"label_ema_decay": 0.99}``). ``--paths`` (ablation):
the loss assembled here from the loss's own parts, with F's gradient through the labels
(``label``), F's gradient through the masked pass (``pred``) and G (``anchor``) each on or off, and
every ``--every`` steps the gradient of each part on the label encoder (embed and layers 1..k): its
norm and the first-order change of the batch's soft label entropy (entropy of the mean
softmax(logits / tau)) along minus it (``dH_*``).
Runs take 2.5-4 minutes for 150 steps on a loaded 2-core machine; seeds 0 and 1 were measured.

    python tests/ssl/birq_probe.py --tag old --loss_conf '{"label_gradient": "gumbel"}'
    python tests/ssl/birq_probe.py --tag new                       # the defaults
    python tests/ssl/birq_probe.py --tag stopgrad --paths pred,anchor
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from rpq_units.ssl.encoder import encoder_hidden_states as ehs  # noqa: E402
from rpq_units.ssl.labels import normalise_per_utterance  # noqa: E402
from rpq_units.ssl.loss import label_perplexity  # noqa: E402
from rpq_units.ssl.registry import register  # noqa: E402


def load_data(path, n):
    """The first ``n`` waveforms of a ``wav.scp`` (key path per line) as float32 tensors."""
    wavs = []
    with open(path) as f:
        for line in f:
            w, _ = sf.read(line.split()[1], dtype="float32")
            wavs.append(torch.from_numpy(w))
            if len(wavs) >= n:
                break
    return wavs


def batches(wavs, bs, g):
    """One epoch of padded batches (B, S) and lengths (B,) in a ``g``-seeded order."""
    idx = torch.randperm(len(wavs), generator=g).tolist()
    for i in range(0, len(idx) - bs + 1, bs):
        sel = [wavs[j] for j in idx[i:i + bs]]
        lens = torch.tensor([len(w) for w in sel])
        x = torch.zeros(len(sel), int(lens.max()))
        for j, w in enumerate(sel):
            x[j, :len(w)] = w
        yield x, lens


def config(dim, layers, k, codebook, loss_extra):
    """The probe's ESPnet SSL config (the demo's, smaller encoder)."""
    conf = {"codebook_size": codebook, "num_codebooks": 1, "proj_dim": 16, "stack_frames": 4,
            "enhanced_layer": k, **loss_extra}
    return {
        "frontend": "default",
        "frontend_conf": {"fs": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160,
                          "n_mels": 80},
        "normalize": "utterance_mvn",
        "normalize_conf": {"norm_means": True, "norm_vars": True},
        "preencoder": None, "specaug": None,
        "encoder": "conformer",
        "encoder_conf": {"output_size": dim, "attention_heads": 4, "linear_units": 4 * dim,
                         "num_blocks": layers, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                         "input_layer": "conv2d", "normalize_before": True,
                         "macaron_style": True, "pos_enc_layer_type": "rel_pos",
                         "selfattention_layer_type": "rel_selfattn", "rel_pos_type": "latest",
                         "activation_type": "swish", "use_cnn_module": True,
                         "cnn_module_kernel": 15},
        "model": "bestrq",
        "loss": [{"name": "birq", "conf": conf}],
        "util": [{"name": "span_mask", "conf": {"mask_prob": 0.01, "mask_length": 40,
                                                "noise_std": 0.1, "min_spans": 1}}],
        "token_list": ["<unused>"], "use_preprocessor": False,
    }


def build(conf, path, seed):
    """Build the model through ESPnet's parser and ``SSLTask.build_model`` (the trainer's path)."""
    register()
    from espnet2.tasks.ssl import SSLTask
    with open(path, "w") as f:
        yaml.safe_dump(conf, f)
    args = SSLTask.get_parser().parse_args(["--config", path])
    torch.manual_seed(seed)
    return SSLTask.build_model(args)


def eff_rank(x):
    """x: (N, d) -> (effective rank exp(H(s^2/sum)), top-1 energy fraction)."""
    s = torch.linalg.svdvals(x.double())
    p = s ** 2 / (s ** 2).sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum())), float(p.max())


def projected(loss_fn, h, lens):
    """R N(h) over valid frames: (N, p)."""
    hn = normalise_per_utterance(h.float(), lens, eps=math.sqrt(1e-5))
    valid = torch.arange(h.shape[1]).unsqueeze(0) < lens.unsqueeze(1)
    return (hn @ loss_fn.enhanced_projection)[valid], hn[valid]


def soft_batch_entropy(loss_fn, h, lens):
    """Entropy of the batch-mean softmax(logits / tau) over valid frames: differentiable proxy
    of the label perplexity."""
    logits = loss_fn.enhanced_logits(h, lens)
    valid = torch.arange(h.shape[1]).unsqueeze(0) < lens.unsqueeze(1)
    p = (logits[valid] / loss_fn.gumbel_tau).softmax(-1).mean(0)
    return -(p * p.clamp_min(1e-12).log()).sum()


def training_setup(model, a):
    """AdamW with the recipe's warm-up then inverse-square-root schedule, the batch order's
    generator, and the seeded global RNG, the same for both probes."""
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-6,
                            weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / a.warmup, (a.warmup / (s + 1)) ** 0.5))
    g = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed + 1)
    return opt, sched, g


def run_paths(a):
    """Ablation: the loss assembled from its parts, each gradient path on or off."""
    torch.set_num_threads(1)
    wavs = load_data(a.wav_scp, a.num_utts)
    # the unmasked pass keeps its graph (the paths are chosen here, not by the loss conf)
    extra = {"label_gradient": "gumbel", **json.loads(a.loss_conf)}
    model = build(config(a.dim, a.layers, a.k, a.codebook, extra), f"{a.out_dir}/conf_{a.tag}.yaml",
                  a.seed)
    loss_fn = model.losses[0]
    enc = model.encoder
    below = [p for n, p in enc.named_parameters()
             if n.startswith("embed") or any(n.startswith(f"encoders.{i}.") for i in range(a.k))]
    opt, sched, g = training_setup(model, a)
    step, t0 = 0, time.time()
    log = []
    while step < a.steps:
        for wav, lens in batches(wavs, a.bs, g):
            if step >= a.steps:
                break
            model.train()
            data = model.encode(wav, lens)
            hidden = data["encoder_output"][-1]
            out_lens = data["encoder_output_lengths"]
            labels, valid, masked = loss_fn.anchor_targets(
                data["feats"], data["feats_lengths"], data["mask_info"]["mask"], out_lens,
                hidden.shape[1])
            g_loss, _ = loss_fn.anchor_loss(hidden, labels, valid, masked)
            hk = data["unmasked_hidden"]
            hk_lab = hk if "label" in a.paths else hk.detach()
            e_all = loss_fn.enhanced_logits(hk_lab, out_lens)
            e_ids = e_all.argmax(-1).detach()
            target = loss_fn.enhanced_targets(e_all[masked])
            hid_f = hidden if "pred" in a.paths else hidden.detach()
            pred = loss_fn.enhanced_head(hid_f[masked]).float()
            f_loss = -(target * pred.log_softmax(-1)).sum(-1).mean()
            loss = loss_fn.enhanced_weight * f_loss + (loss_fn.anchor_weight * g_loss
                                                       if "anchor" in a.paths else 0.0 * g_loss)
            rec = None
            if step % a.every == 0 or step == a.steps - 1:
                # gradient decomposition on embed + layers 1..k, and each part's first-order
                # effect on the batch label entropy (soft proxy): <grad H, -grad part>
                h_ent = soft_batch_entropy(loss_fn, hk, out_lens)
                gh = torch.autograd.grad(h_ent, below, retain_graph=True, allow_unused=True)
                f_lab = -(loss_fn.enhanced_targets(
                    loss_fn.enhanced_logits(hk, out_lens)[masked])
                    * pred.detach().log_softmax(-1)).sum(-1).mean()
                f_pred = -(target.detach() * loss_fn.enhanced_head(hidden[masked]).float()
                           .log_softmax(-1)).sum(-1).mean()
                parts = {"F_label": loss_fn.enhanced_weight * f_lab,
                         "F_pred": loss_fn.enhanced_weight * f_pred,
                         "G": loss_fn.anchor_weight * g_loss}
                rec = {"step": step}
                for name, val in parts.items():
                    gp = torch.autograd.grad(val, below, retain_graph=True, allow_unused=True)
                    norm = math.sqrt(sum(float((x ** 2).sum()) for x in gp if x is not None))
                    dot = sum(float((x * y).sum()) for x, y in zip(gh, gp, strict=True)
                              if x is not None and y is not None)
                    # dH for a step -grad part, per unit step: -<gH, gp>
                    rec[f"|g_{name}|"] = norm
                    rec[f"dH_{name}"] = -dot
                with torch.no_grad():
                    y, hn = projected(loss_fn, hk, out_lens)
                    r, top = eff_rank(y)
                    rh, _ = eff_rank(hn)
                samp = target.argmax(-1)
                rec.update({"ppl_enh": label_perplexity(e_ids.unsqueeze(-1), valid,
                                                        loss_fn.enhanced_codebook_size),
                            "ppl_sample": (label_perplexity(samp[:, None], torch.ones_like(
                                samp, dtype=torch.bool), loss_fn.enhanced_codebook_size)),
                            "erank_RNh": r, "top1_RNh": top, "erank_Nh": rh,
                            "F": float(f_loss), "G": float(g_loss),
                            "acc_enh": float((pred.argmax(-1) == samp).float().mean()),
                            "t": round(time.time() - t0, 1)})
                log.append(rec)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in rec.items()}), flush=True)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
    with open(f"{a.out_dir}/log_{a.tag}.json", "w") as f:
        json.dump({"args": vars(a), "log": log}, f)


def run_forward(a):
    """The model's own forward with ``--loss_conf``."""
    torch.set_num_threads(1)
    wavs = load_data(a.wav_scp, a.num_utts)
    dev = load_data(a.dev_scp, 20)
    extra = json.loads(a.loss_conf)
    model = build(config(a.dim, a.layers, a.k, a.codebook, extra), f"{a.out_dir}/conf_{a.tag}.yaml",
                  a.seed)
    loss_fn = model.losses[0]
    opt, sched, g = training_setup(model, a)
    step, t0 = 0, time.time()
    log = []
    while step < a.steps:
        for wav, lens in batches(wavs, a.bs, g):
            if step >= a.steps:
                break
            model.train()
            loss, stats, _ = model(wav, lens)
            if step % a.every == 0 or step == a.steps - 1:
                with torch.no_grad():
                    feats, flens = model._extract_feats(wav, lens)
                    feats, flens = model.normalize(feats, flens)
                    states, olens = ehs(model.labeller, feats, flens, a.k)
                    y, hn = projected(loss_fn, states[a.k], olens)
                    r, top = eff_rank(y)
                    rh, _ = eff_rank(hn)
                rec = {"step": step, "erank_RNh": r, "top1_RNh": top, "erank_Nh": rh,
                       "t": round(time.time() - t0, 1)}
                rec.update({k: float(v) for k, v in stats.items()
                            if k in ("loss_anchor", "acc_anchor", "loss_enhanced", "acc_enhanced",
                                     "ppl_enhanced", "loss_diversity")})
                log.append(rec)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in rec.items()}), flush=True)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
    # held-out: ESPnet's validation (eval mode: argmax enhanced labels, masking as in training)
    model.eval()
    torch.manual_seed(123)
    agg = {}
    with torch.no_grad():
        for wav, lens in batches(dev, 10, torch.Generator().manual_seed(0)):
            _, stats, _ = model(wav, lens)
            for k, v in stats.items():
                agg.setdefault(k, []).append(float(v))
    final = {f"dev_{k}": sum(v) / len(v) for k, v in agg.items()
             if k in ("acc_anchor", "acc_enhanced", "ppl_enhanced", "loss_anchor")}
    print(json.dumps({"final": True, **{k: round(v, 4) for k, v in final.items()},
                      "t": round(time.time() - t0, 1)}), flush=True)
    with open(f"{a.out_dir}/log_{a.tag}.json", "w") as f:
        json.dump({"args": vars(a), "log": log, "final": final}, f)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True, help="log: <out_dir>/log_<tag>.json")
    p.add_argument("--out_dir", default="/tmp/birq")
    p.add_argument("--wav_scp", default="/tmp/birq/data/train_clean/wav.scp")
    p.add_argument("--dev_scp", default="/tmp/birq/data/dev_clean/wav.scp")
    p.add_argument("--num_utts", type=int, default=200)
    p.add_argument("--bs", type=int, default=8)
    p.add_argument("--dim", type=int, default=96)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--codebook", type=int, default=1024)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss_conf", default="{}", help="birq loss conf, JSON")
    p.add_argument("--paths", default=None,
                   help="ablation: comma list of label, pred, anchor (see the docstring)")
    args = p.parse_args()
    if args.paths is None:
        run_forward(args)
    else:
        args.paths = set(args.paths.split(",")) - {""}
        run_paths(args)
