#!/usr/bin/env python3
"""Write an ESPnet training config fitted to a discretizer or an upstream.

Discrete ASR (``--codebook``): the frontend follows the number of unit streams M stored in the
codebook. M > 1 (PQ, RPQ, ...): ``frontend: patch`` with ``token_per_frame: M`` and
``model_conf.patch_size: M`` (one embedding per token, averaged over the M streams of a frame);
M = 1 (K-means): ``frontend: embed``, the usual ESPnet asr2 path; ``--src_token_type bpe`` (sentencepiece pieces over the units,
rpq_units.pipeline.unit_text): ``frontend: embed`` whatever M. The embedding size comes from
the base config's ``frontend_conf.embed_dim``.

Continuous reference (``--feats_json``): the frozen upstream's features are dumped once by
``rpq-units dump_feats --format ark`` (any upstream kind: s3prl names, ``baseline_local``,
``rpq_ssl`` encoders) and read by ESPnet as ``kaldi_ark`` input. The config gets
``input_size: D`` from the dump's ``feats.json`` and no frontend (ESPnet builds none when
``input_size`` is set); an ``s3prl`` frontend section of the base config and its
``freeze_param`` entry are dropped, and a ``linear`` preencoder's input size is set to D.

    make_asr_config.py --config base.yaml --codebook exp/units_x/codebook.pt --out config.yaml
    make_asr_config.py --config base.yaml --feats_json dump/continuous_x/train/feats.json --out config.yaml
"""

import argparse
import json
import os
import sys

import yaml


def discrete(cfg: dict, codebook: str, src_token_type: str = "word") -> dict:
    from rpq_units.pipeline.codebooks import load_quantizer

    # sentencepiece pieces over the units are one token stream whatever M (one embedding each)
    m = load_quantizer(codebook).num_codebooks if src_token_type == "word" else 1
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


def continuous(cfg: dict, feats_json: str) -> dict:
    with open(feats_json, encoding="utf-8") as f:
        info = json.load(f)
    dim = int(info["dim"])
    cfg.pop("frontend", None)
    cfg.pop("frontend_conf", None)
    freeze = [p for p in cfg.get("freeze_param") or [] if not p.startswith("frontend")]
    if freeze:
        cfg["freeze_param"] = freeze
    else:
        cfg.pop("freeze_param", None)
    if cfg.get("preencoder") == "linear":
        cfg["preencoder_conf"] = {**(cfg.get("preencoder_conf") or {}), "input_size": dim}
    cfg["input_size"] = dim
    return cfg


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="base ESPnet config (yaml)")
    p.add_argument("--out", required=True)
    p.add_argument("--codebook", help="rpq_units codebook: discrete ASR config")
    p.add_argument("--src_token_type", default="word", choices=["word", "bpe"],
                   help="with --codebook: units as words, or sentencepiece pieces over them")
    p.add_argument("--feats_json", help="feats.json of dumped features: continuous reference config")
    args = p.parse_args()
    with open(args.config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if args.codebook:
        cfg = discrete(cfg, args.codebook, args.src_token_type)
    elif args.feats_json:
        cfg = continuous(cfg, args.feats_json)
    else:
        p.error("one of --codebook or --feats_json is required")
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
