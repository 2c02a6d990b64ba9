#!/usr/bin/env python3
"""Write an ESPnet training config fitted to a discretizer or an upstream.

Discrete ASR (``--codebook``): the frontend follows the number of unit streams M stored in the
codebook. M > 1 (PQ, RPQ, ...): ``frontend: patch`` with ``token_per_frame: M`` and
``model_conf.patch_size: M`` (one embedding per token, averaged over the M streams of a frame);
M = 1 (K-means): ``frontend: embed``, the usual ESPnet asr2 path. The embedding size comes from
the base config's ``frontend_conf.embed_dim``.

Continuous reference (``--upstream``): ``frontend: s3prl`` with the named upstream (checkpoint
and layer as given) and the upstream frozen.

    make_asr_config.py --config base.yaml --codebook exp/units_x/codebook.pt --out config.yaml
    make_asr_config.py --config base.yaml --upstream wavlm_large --layer 21 --out config.yaml
"""

import argparse
import os
import sys

import torch
import yaml


def discrete(cfg: dict, codebook: str) -> dict:
    blob = torch.load(codebook, map_location="cpu", weights_only=True)
    m = int(blob["config"].get("num_codebooks", 1))
    fconf = dict(cfg.get("frontend_conf") or {})
    embed_dim = int(fconf.get("embed_dim", 256))
    model_conf = dict(cfg.get("model_conf") or {})
    if m > 1:
        cfg["frontend"] = "patch"
        cfg["frontend_conf"] = {**fconf, "embed_dim": embed_dim, "token_per_frame": m}
        model_conf["patch_size"] = m
    else:
        cfg["frontend"] = "embed"
        fconf.pop("token_per_frame", None)
        cfg["frontend_conf"] = {**fconf, "embed_dim": embed_dim}
        model_conf.pop("patch_size", None)
    cfg["model_conf"] = model_conf
    return cfg


def continuous(cfg: dict, upstream: str, ckpt: str, layer: int) -> dict:
    fconf = dict(cfg.get("frontend_conf") or {})
    inner = dict(fconf.get("frontend_conf") or {})
    inner["upstream"] = upstream
    inner.pop("path_or_url", None)
    inner.pop("extra_conf", None)
    if ckpt and upstream == "baseline_local":
        # s3prl's baseline_local takes its feature config as ``model_config``, not ``ckpt``
        inner["extra_conf"] = {"model_config": os.path.abspath(ckpt)}
    elif ckpt:
        inner["path_or_url"] = os.path.abspath(ckpt)
    fconf["frontend_conf"] = inner
    fconf["layer"] = layer
    fconf.setdefault("multilayer_feature", False)
    cfg["frontend"] = "s3prl"
    cfg["frontend_conf"] = fconf
    cfg["freeze_param"] = sorted(set(cfg.get("freeze_param") or []) | {"frontend.upstream"})
    return cfg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="base ESPnet config (yaml)")
    p.add_argument("--out", required=True)
    p.add_argument("--codebook", help="rpq_units codebook: discrete ASR config")
    p.add_argument("--upstream", help="s3prl upstream: continuous reference config")
    p.add_argument("--upstream_ckpt", default="")
    p.add_argument("--layer", type=int, default=-1)
    args = p.parse_args()
    with open(args.config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if args.codebook:
        cfg = discrete(cfg, args.codebook)
    elif args.upstream:
        cfg = continuous(cfg, args.upstream, args.upstream_ckpt, args.layer)
    else:
        p.error("one of --codebook or --upstream is required")
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
