"""Command line: ``rpq-units <subcommand>`` (also ``python -m rpq_units <subcommand>``).

Subcommands (each a typed function: the unit steps in :mod:`rpq_units.pipeline.steps`, the
evaluation ones in :mod:`rpq_units.evaluation`; this module only parses and dispatches)::

    dump_feats  features of a seeded portion of a data dir -> feats.<rank>.{npy,len,ids} + feats.json
    fit         fit a quantizer on feature shards -> codebook.pt, codebook.yaml, codebook.metrics.json
    encode      units of a data dir (features on the fly) -> sorted unit text [+ ark/scp]
    analyze     usage, perplexity, mse, bitrate, rho, heatmap -> analysis.{json,txt}, PNG
    token_list  the ESPnet source token list for a codebook
    src_text    the source text a model reads: repeated frames removed, units as characters (BPE)
    merge       merge per-shard unit files into one sorted file
    train_vocoder  HiFi-GAN from the continuous features of a data dir -> vocoder.pt
    resynth     units -> decode -> features -> waveform per discretizer, scored -> wav/, metrics.json
    demo_page   static HTML page (audio players, heatmaps, tables) from a resynth dir
    transcribe  audio -> text with a trained recipe's model (features, units, ESPnet decoding)

Long options take underscores or dashes (``--data_dir`` = ``--data-dir``). ``--rank`` is
0-based (shell ``JOB`` indices are 1-based: pass ``JOB-1``).

Bad utterances (unreadable or empty audio, a failing ``cmd |``, a segment past the end,
audio too short for one frame, non-finite features) are skipped with a warning naming the
utterance, and counted in the summary at the end; ``--strict`` stops at the first one instead
(exit status 1, no output written). A run where every utterance fails is an error.
Errors in the user's input (the project's error classes, ``rpq_units.errors.UserError``; a
missing or unreadable named file; a full or read-only disk) print ``error: <one line>`` on
stderr and exit 1; usage errors exit 2. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from rpq_units.errors import exit_status
from rpq_units.pipeline.steps import QUANTIZE_FRAMES, dump_feats, encode, fit, merge, token_list
from rpq_units.pipeline.transcribe import INFERENCE_MODEL
from rpq_units.pipeline.unit_text import src_text
from rpq_units.quant.base import METHODS


def train_vocoder(**kwargs: Any) -> dict[str, Any]:
    """See :func:`rpq_units.evaluation.resynth.train_vocoder_from_data`."""
    from rpq_units.evaluation.resynth import train_vocoder_from_data

    return train_vocoder_from_data(**kwargs)


def resynth(**kwargs: Any) -> dict[str, Any]:
    """See :func:`rpq_units.evaluation.resynth.resynth`; prints the table."""
    from rpq_units.evaluation.resynth import format_table
    from rpq_units.evaluation.resynth import resynth as run

    report = run(**kwargs)
    sys.stdout.write(format_table(report) + "\n")
    return report


def demo_page(**kwargs: Any) -> list[str]:
    """See :func:`rpq_units.evaluation.demo_page.write_page`."""
    from rpq_units.evaluation.demo_page import write_page

    return write_page(**kwargs)


def analyze(**kwargs: Any) -> dict[str, Any]:
    """See :func:`rpq_units.evaluation.analyze.analyze`."""
    from rpq_units.evaluation.analyze import analyze as run
    from rpq_units.evaluation.analyze import format_report

    report = run(**kwargs)
    sys.stdout.write(format_report(report))
    return report


def transcribe(**kwargs: Any) -> dict[str, str]:
    """See :func:`rpq_units.pipeline.transcribe.transcribe`; without ``--out`` the lines go to
    stdout."""
    from rpq_units.pipeline.transcribe import transcribe as run

    hyps = run(**kwargs)
    if kwargs.get("out") is None:
        sys.stdout.write("".join(f"{u} {h}\n" for u, h in hyps.items()))
    return hyps


# ---- argument parsing ----------------------------------------------------------------------


def _opt(p: argparse.ArgumentParser, name: str, **kw: Any) -> None:
    """Add ``--foo_bar`` with the alias ``--foo-bar``."""
    flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    p.add_argument(*flags, dest=name, **kw)


def _int_or_none(s: str) -> int | None:
    return None if s.lower() in ("none", "null", "") else int(s)


def _layer(s: str) -> int | list[int]:
    """``--layer``: an index, or several joined by commas (``1,3,7``: side by side)."""
    from rpq_units.pipeline.features import FeatureError, parse_layer

    try:
        return parse_layer(s)
    except FeatureError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s}: must be a positive integer")
    return v


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help with "(required)" for a required one, "(default: ...)" for one with a
    default, and nothing more where it has none (``None``: the help says what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required and action.option_strings:
            return f"{action.help or ''} (required)"
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _device_problem(device: str) -> str | None:
    """Why ``--device`` cannot be used here (with the fix), or None when it can."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        return "not a device of rpq-units: use cpu, cuda or cuda:<index>"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "PyTorch sees no CUDA GPU on this machine: use --device cpu"
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"this machine has {count} CUDA GPU(s): use cuda:0 to cuda:{count - 1}"
    return None


#: the shortest window of ``--chunk_s``: shorter ones leave the upstream too little context
#: (the units change) and cost a forward pass per window
MIN_CHUNK_S = 1.0


def _value_problem(args: dict[str, Any]) -> str | None:
    """``"--opt value: what is wrong"`` for the first option value that makes no sense, or None.
    Every numeric option of every subcommand is checked here, before any work starts."""
    import math

    def bad(name: str, why: str) -> str:
        return f"--{name} {args[name]}: {why}"

    def given(name: str) -> bool:
        return args.get(name) is not None

    for name in ("batch_size", "nshard", "num_codebooks", "codebook_size", "max_iter", "train_steps",
                 "n_iter", "stats_utts"):
        if given(name) and args[name] < 1:
            return bad(name, "must be a positive integer")
    for name in ("max_utts", "num_utts"):
        if given(name) and args[name] < 0:
            return bad(name, "must be 0 or more")
    if given("max_frames") and args["max_frames"] < 1:
        return bad("max_frames", "must be a positive integer (or none: all frames)")
    for name in ("portion", "dims_ratio"):
        if given(name) and not (0 < args[name] <= 1):
            return bad(name, "must be in (0, 1]")
    if given("chunk_s") and not (math.isfinite(args["chunk_s"]) and args["chunk_s"] >= MIN_CHUNK_S):
        return bad("chunk_s", f"must be at least {MIN_CHUNK_S:g} s (windows of long utterances; "
                              "default 30)")
    if given("tol") and not (math.isfinite(args["tol"]) and args["tol"] >= 0):
        return bad("tol", "must be 0 or more")
    if given("memory_budget") and not (math.isfinite(args["memory_budget"])
                                       and args["memory_budget"] > 0):
        return bad("memory_budget", "must be a positive number of GiB")
    if given("rank") and given("nshard") and not 0 <= args["rank"] < args["nshard"]:
        return bad("rank", f"must be in 0..{args['nshard'] - 1} (0-based, --nshard {args['nshard']})")
    return None


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    parser = argparse.ArgumentParser(
        prog="rpq-units",
        description="Discrete speech units: K-means, PQ and RPQ on s3prl features.",
        formatter_class=fmt,
    )
    _opt(
        parser,
        "log_level",
        default=os.environ.get("LOGLEVEL", "INFO").upper(),
        choices=levels,
        help="logging level (env LOGLEVEL)",
    )
    # also accepted after the subcommand; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    _opt(common, "log_level", default=argparse.SUPPRESS, choices=levels, help="logging level")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        """The parser of subcommand ``name`` (which takes --log_level too)."""
        return sub.add_parser(name, help=summary, formatter_class=fmt, parents=[common])

    def feature_opts(p: argparse.ArgumentParser, required: bool) -> None:
        # encode (not required): what is not given comes from the codebook
        own = "" if required else " (default: the codebook's)"
        _opt(
            p,
            "upstream",
            required=required,
            default=None,
            help="s3prl upstream (wavlm_large, hubert_large_ll60k, fbank, wavlm_local, ...), "
            "rpq_ssl (an encoder file from python -m rpq_units.ssl.export) or whisper (Whisper's "
            "encoder; weakly supervised)" + own,
        )
        _opt(p, "upstream_ckpt", default=None,
             help="checkpoint for *_local upstreams and rpq_ssl; for whisper a CTranslate2, "
             "Hugging Face or openai checkpoint (default: the bundled tiny.en)" + own)
        _opt(
            p,
            "layer",
            type=_layer,
            default=None if not required else -1,
            help="hidden-state index (-1 = last), or several joined by commas (1,3,7: those "
            "layers side by side, each fit its own discretizer)"
            + ("" if required else " (default: the codebook's for its upstream, else -1)"),
        )
        _opt(p, "device", default="cpu", help="torch device")
        _opt(p, "batch_size", type=int, default=1, help="utterances per forward pass (1 = exact)")
        _opt(p, "chunk_s", type=float, default=30.0, help="window length for long utterances")
        _opt(p, "nshard", type=int, default=1, help="number of shards")
        _opt(p, "rank", type=int, default=0, help="this shard (0-based)")
        _opt(p, "strict", action="store_true", help="stop at the first bad utterance")
        _opt(p, "autocast", default=None, choices=["bf16", "fp16"],
             help="upstream forward in this precision (torch.autocast); default fp32")

    p = command("dump_feats", "features of a portion of a data dir")
    _opt(p, "data_dir", required=True, help="Kaldi data dir")
    _opt(p, "out_dir", required=True, help="feature dir")
    feature_opts(p, required=True)
    _opt(p, "portion", type=float, required=True,
         help="fraction of the utterances, sampled with --seed (1: all)")
    _opt(p, "seed", type=int, default=0, help="seed of the portion")
    _opt(
        p,
        "format",
        default="npy",
        choices=["npy", "ark"],
        help="npy shards (for fit) or a Kaldi ark + scp (ESPnet kaldi_ark input)",
    )
    _opt(p, "from_feats_dir", default=None,
         help="npy dump_feats output of this data dir: its utterances are copied from it, the "
              "others run through the upstream (used only if made with the same upstream, "
              "checkpoint, layer, autocast and batch size)")

    p = command("fit", "fit a quantizer on feature shards")
    _opt(p, "feats_dir", required=True, help="feature dir from dump_feats")
    _opt(p, "out", required=True, help="codebook path (.pt)")
    _opt(p, "config", default=None, help="YAML config (conf/units/*.yaml)")
    _opt(p, "method", default=None, help=f"one of {', '.join(sorted(METHODS))}")
    _opt(p, "num_codebooks", type=int, default=None, help="M")
    _opt(p, "codebook_size", type=int, default=None, help="K")
    _opt(p, "dims_ratio", type=float, default=None, help="RPQ: fraction of dims per sub-vector")
    _opt(p, "seed", type=int, default=None, help="seed")
    _opt(p, "max_iter", type=int, default=None, help="max Lloyd iterations")
    _opt(p, "tol", type=float, default=None, help="relative objective change to stop")
    _opt(p, "max_frames", type=_int_or_none, default=None, help="fit on at most this many frames")
    _opt(p, "device", default="cpu", help="torch device")
    _opt(p, "memory_budget", type=float, default=None,
         help="GiB of device memory for the training frames; above it K-means/PQ/RPQ stream "
              "them from host memory in chunks (same result)")

    p = command("encode", "units of a data dir")
    _opt(p, "data_dir", required=True, help="Kaldi data dir")
    _opt(p, "codebook", required=True, help="codebook from fit")
    _opt(p, "out", required=True, help="unit text file")
    _opt(p, "ark", default=None, help="also write a kaldiio ark (+ .scp) of (T, M) codes")
    _opt(p, "feats_dir", default=None,
         help="dump_feats output of this data dir: its utterances are encoded from those "
         "features (same upstream, layer, autocast and batch size), the rest on the fly")
    _opt(p, "quantize_frames", type=_positive_int, default=QUANTIZE_FRAMES,
         help="utterances are quantized together in one search until their frames reach this "
         "many (bounds the memory; 1: one utterance at a time); the units are the same for any value")
    feature_opts(p, required=False)

    p = command("analyze", "codebook statistics on feature shards")
    _opt(p, "codebook", required=True, help="codebook from fit")
    _opt(p, "feats_dir", required=True, help="feature dir from dump_feats")
    _opt(p, "out_dir", required=True, help="output dir")
    _opt(
        p, "max_frames", type=_int_or_none, default=200_000, help="analyze at most this many frames"
    )
    _opt(p, "seed", type=int, default=0, help="seed of the frame subset")
    _opt(p, "device", default="cpu", help="torch device")

    p = command("token_list", "source token list")
    _opt(p, "out", required=True, help="token list path")
    _opt(p, "codebook", default=None, help="codebook from fit")
    _opt(p, "num_codebooks", type=int, default=None, help="M (without --codebook)")
    _opt(p, "codebook_size", type=int, default=None, help="K (without --codebook)")

    p = command("src_text", "unit file -> model source text")
    _opt(p, "units", required=True, help="unit file (encode/merge output)")
    _opt(p, "out", required=True, help="source text path")
    _opt(p, "case", default="ts", choices=["ts", "rm"],
         help="ts: units as they are; rm: frames equal to the one before removed (ESPnet asr2's src_case)")
    _opt(p, "chars", action="store_true",
         help="spell each unit as one CJK character, no spaces (sentencepiece BPE input)")
    _opt(p, "codebook", default=None, help="codebook from fit (gives M)")
    _opt(p, "num_codebooks", type=int, default=None, help="M (without --codebook)")

    p = command("merge", "merge unit files")
    _opt(p, "out", required=True, help="merged unit file")
    p.add_argument("inputs", nargs="+", help="unit files")

    p = command("train_vocoder", "HiFi-GAN on continuous features")
    _opt(p, "data_dir", required=True, help="Kaldi data dir (training set)")
    _opt(p, "config", required=True, help="vocoder YAML (conf/vocoder/*.yaml)")
    _opt(p, "out", required=True, help="vocoder checkpoint (.pt)")
    _opt(p, "upstream", required=True, help="s3prl upstream (as for the codebooks)")
    _opt(p, "upstream_ckpt", default=None, help="checkpoint/config for *_local upstreams")
    _opt(p, "layer", type=_layer, default=-1,
         help="hidden-state index (-1 = last), or several joined by commas (as the codebooks')")
    _opt(p, "max_utts", type=int, default=0, help="train on the first N utterances (0: all)")
    p.add_argument("--train_steps", "--train-steps", "--steps", dest="train_steps", type=int,
                   default=None, help="training steps in all, resumed runs included (default: "
                   "the config's train.steps)")
    _opt(p, "device", default="cpu", help="torch device")
    _opt(p, "chunk_s", type=float, default=30.0, help="window length for long utterances")
    _opt(p, "strict", action="store_true", help="stop at the first bad utterance")
    _opt(p, "feats_dir", default=None,
         help="npy dump_feats output of this data dir: its utterances' features are read from "
              "it (used only if made with the same upstream, checkpoint, layer and precision)")

    p = command("resynth", "resynthesize a data dir from units, scored")
    _opt(p, "data_dir", required=True, help="Kaldi data dir (a test set)")
    _opt(p, "names", nargs="+", required=True, help="discretizer names (kmeans pq rpq ...)")
    _opt(p, "codebooks", nargs="+", required=True, help="codebook per name")
    _opt(p, "units", nargs="+", required=True, help="unit file of data_dir per name")
    _opt(p, "out_dir", required=True, help="output dir (wav/, metrics.json, resynth.md)")
    _opt(p, "vocoder", default="auto",
         help="griffinlim (s3prl log-mel upstreams), a vocoder checkpoint, or auto (griffinlim)")
    _opt(p, "stats_data_dir", default=None,
         help="training set: log-mel level/scale to undo CMVN (Griffin-Lim)")
    _opt(p, "stats_utts", type=int, default=50, help="utterances of stats_data_dir to use")
    _opt(p, "max_utts", type=int, default=0, help="first N utterances of data_dir (0: all)")
    _opt(p, "n_iter", type=int, default=64, help="Griffin-Lim iterations")
    _opt(p, "asr_dir", default=None, help="ESPnet ASR model dir trained on original audio")
    _opt(p, "asr_decode_config", default=None, help="beam search YAML for that model")
    _opt(p, "asr_decode_args", default="",
         help='asr_inference options over the YAML (pass as --asr_decode_args="--ctc_weight 0.5")')
    _opt(p, "score_unit", default="word", choices=["word", "char"], help="WER or CER")
    _opt(p, "judge", default="espnet", choices=["espnet", "whisper"],
         help="intelligibility judge: the ESPnet model of --asr_dir, or a Whisper model")
    _opt(p, "judge_model", default=None,
         help="CTranslate2 Whisper dir for --judge whisper (default: the bundled tiny.en)")
    _opt(p, "device", default="cpu", help="torch device")
    _opt(p, "seed", type=int, default=0, help="Griffin-Lim initial phase seed")

    p = command("demo_page", "static HTML demo page")
    _opt(p, "resynth_dir", required=True, help="output dir of resynth")
    _opt(p, "page_dir", required=True, help="page dir (index.html, audio/, figs/)")
    _opt(p, "num_utts", type=int, default=5, help="utterances with audio players")
    _opt(p, "results_md", default=None, help="RESULTS.md with the WER table")
    _opt(p, "heatmaps", nargs="*", default=[], help="PNG heatmaps (dim_correlation.png)")

    p = command("transcribe", "audio -> text with a trained recipe's model")
    p.add_argument("audio", nargs="*", help="audio files (utterance id: the name without extension)")
    _opt(p, "model_dir", required=True,
         help="trained model dir of a recipe, exp/asr_<feat_tag>_<discretizer>[<src settings>]")
    _opt(p, "wav_scp", default=None, help="Kaldi wav.scp of the audio (instead of files)")
    _opt(p, "data_dir", default=None, help="Kaldi data dir of the audio (instead of files)")
    _opt(p, "out", default=None, help="hypotheses file, 'uttid text' lines (default: stdout)")
    _opt(p, "inference_config", default=None,
         help="mt_inference --config (beam search YAML, the recipe's --inference_config); "
         "without it ESPnet's defaults")
    _opt(p, "inference_args", default="",
         help='more mt_inference options, the recipe\'s --inference_args '
         '(pass as --inference_args="--ctc_weight 0.5")')
    _opt(p, "inference_model", default=INFERENCE_MODEL, help="model file in --model_dir")
    _opt(p, "device", default="cpu", help="torch device (upstream, units and decoding)")
    _opt(p, "batch_size", type=int, default=None,
         help="utterances per upstream forward pass (default: the recipe's, from the model's stamp)")
    _opt(p, "autocast", default=None, choices=["none", "bf16", "fp16"],
         help="upstream forward precision (default: the recipe's, from the model's stamp)")
    _opt(p, "chunk_s", type=float, default=30.0, help="window length for long utterances")
    _opt(p, "upstream_ckpt", default=None,
         help="where the codebook's upstream checkpoint is now (same file; default: the codebook's)")
    _opt(p, "strict", action="store_true", help="stop at the first bad utterance")
    return parser


_COMMANDS = {
    "dump_feats": dump_feats,
    "fit": fit,
    "encode": encode,
    "analyze": analyze,
    "token_list": token_list,
    "src_text": src_text,
    "merge": merge,
    "train_vocoder": train_vocoder,
    "resynth": resynth,
    "demo_page": demo_page,
    "transcribe": transcribe,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (strings or paths; default ``sys.argv[1:]``) and run the subcommand;
    returns the exit status."""
    if argv is not None:
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in argv]
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    # checked once here: a bad value would otherwise fail deep in torch, with a traceback, or
    # run with a result nobody asked for
    problem = _value_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    problem = _device_problem(args["device"]) if args.get("device") is not None else None
    if problem:
        print(f"error: --device {args['device']}: {problem}", file=sys.stderr)
        return 2
    level = args.pop("log_level")
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("rpq_units").setLevel(getattr(logging, level))
    if level != "DEBUG":  # s3prl logs whole model configs at INFO
        logging.getLogger("s3prl").setLevel(logging.WARNING)

    def run() -> None:
        _COMMANDS[command](**args)

    try:  # the project's errors for bad input/options, a missing named file, a full disk: one line
        return exit_status(run, command)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = [
    "analyze",
    "build_parser",
    "demo_page",
    "dump_feats",
    "encode",
    "fit",
    "main",
    "merge",
    "resynth",
    "src_text",
    "token_list",
    "train_vocoder",
    "transcribe",
]
