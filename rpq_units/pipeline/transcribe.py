"""Audio to text with a trained recipe's model: features -> units -> source text -> ESPnet decoding.

A model dir ``exp/asr_<feat_tag>_<discretizer>[<src settings>]`` made by ``units_asr.sh``
stages 7-8 reads units of one codebook as source text; :func:`transcribe` runs the whole chain
on audio the recipe never saw::

    from rpq_units.pipeline.transcribe import transcribe
    hyps = transcribe(model_dir="exp/asr_mel_40ms_llast_rpq", audio=["a.wav", "b.flac"],
                      inference_config="conf/asr/decode.yaml", inference_args="--ctc_weight 0.5")
    # {"a": "HELLO WORLD", "b": "..."}

1. The model dir's ``units.yaml`` (written by stage 7) names the units dir and the source text
   settings (``src_case`` ts|rm, ``src_token_type`` word|bpe); a model dir without it (older
   runs) reads ``<expdir>/units_<tag>`` as words, repeats kept.
2. Units: :func:`rpq_units.pipeline.steps.encode` with ``<units_dir>/codebook.pt`` (features of
   the upstream, checkpoint and layer the codebook was fit on, the same code and the same
   provenance checks as ``rpq-units encode``; bad utterances are skipped with a warning, or
   stop the run with ``strict``). Before any audio is read the codebook is checked against the
   model's training stamp (``.done_train``): a codebook of another upstream, checkpoint or layer
   than the units the model was trained on stops with one line.
3. Source text: :func:`rpq_units.pipeline.unit_text.source_line`, as stage 5 writes it.
4. Decoding: ESPnet's :class:`espnet2.bin.mt_inference.Text2Text` with the options of
   ``espnet2.bin.mt_inference`` (``inference_config`` as its ``--config``, ``inference_args``
   as more of its options, e.g. ``--beam_size 10 --ctc_weight 0.5``, an LM with
   ``--lm_train_config``/``--lm_file``), the source text tokenized by ESPnet's own preprocessor
   (the model's ``src_bpemodel`` for BPE): the recipe's stage 9 decodes the same way, so the
   hypotheses equal its ``decode_<set>_nolm/hyp`` given the same options
   (tests/recipes/test_recipe_src_text.py).

Batching: features run ``batch_size`` utterances per forward pass (default: the recipe's
``--feats_batch_size``, recorded in the model's stamp, so the units are the recipe's), units are
searched many utterances at a time; ESPnet's beam search decodes one utterance at a time
(``mt_inference`` has no batch decoding).

Paths in the model's ``config.yaml`` and ``units.yaml`` that the recipe wrote relative to its
own directory (``exp/...``, ``dump/...``) are resolved from that directory (found from the
config's ``output_dir``), so ``transcribe`` runs from anywhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rpq_units.errors import OptionError, UserError, one_line
from rpq_units.files import write_text_atomic
from rpq_units.pipeline.data import load_data_dir, read_table

logger = logging.getLogger("rpq_units")

#: the model file the engine decodes with (its --inference_model)
INFERENCE_MODEL = "valid.acc.ave.pth"
#: the training stamp stage 8 writes when a model is trained (utils/stamp.sh)
TRAIN_STAMP = ".done_train"


class ModelDirError(UserError):
    """A model dir that is missing, unfinished, or whose codebook is not the model's."""


@dataclass(frozen=True)
class ModelDir:
    """What a trained model dir says about the units it reads.

    ``train_config``: its ``config.yaml`` (ESPnet's training arguments); ``run_dir``: the
    directory the recipe ran in, where the relative paths it wrote start (None: not known,
    relative paths are taken from the current directory); ``stamp``: its training stamp."""

    path: Path
    config: Path
    model_file: Path
    train_config: dict[str, Any]
    units_dir: Path
    src_case: str
    src_token_type: str
    run_dir: Path | None
    stamp: dict[str, str]

    @property
    def codebook(self) -> Path:
        return self.units_dir / "codebook.pt"

    def resolve(self, p: str) -> str:
        """A path the recipe wrote: as it is when absolute, else from the recipe's directory."""
        if os.path.isabs(p) or self.run_dir is None:
            return p
        return str(self.run_dir / p)


def _run_dir(model_dir: Path, output_dir: Any) -> Path | None:
    """The directory ``output_dir`` (the model dir as the recipe named it in ``config.yaml``)
    was relative to, or None when that cannot be told (absolute, ``..``, or another name)."""
    if not isinstance(output_dir, str) or not output_dir or os.path.isabs(output_dir):
        return None
    parts = Path(os.path.normpath(output_dir)).parts
    here = Path(os.path.abspath(model_dir))  # symlinks kept: exp/ may be a link elsewhere
    if ".." in parts or here.parts[-len(parts):] != parts:
        return None
    return here.parents[len(parts) - 1]


def _read_stamp(path: Path) -> dict[str, str]:
    """The ``key=value`` lines of a stamp ({} when there is none)."""
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {kv[0]: kv[1] for kv in pairs if len(kv) == 2}


def read_model_dir(model_dir: str | os.PathLike, inference_model: str = INFERENCE_MODEL) -> ModelDir:
    """The model dir's files and the units it reads (``units.yaml``, else the engine's names)."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelDirError(f"{d}: no such model directory (made by units_asr.sh stages 7-8)")
    config, model_file = d / "config.yaml", d / inference_model
    for f in (config, model_file):
        if not f.is_file():
            raise ModelDirError(f"{f}: no such file (is the model trained? units_asr.sh stage 8)")
    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ModelDirError(f"{config}: not valid YAML ({one_line(e)})") from e
    if not isinstance(cfg, dict):
        raise ModelDirError(f"{config}: not an ESPnet training config")
    run_dir = _run_dir(d, cfg.get("output_dir"))
    units_yaml = d / "units.yaml"
    if units_yaml.is_file():
        try:
            u = yaml.safe_load(units_yaml.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ModelDirError(f"{units_yaml}: not valid YAML ({one_line(e)})") from e
        if not isinstance(u, dict) or "units_dir" not in u:
            raise ModelDirError(f"{units_yaml}: no units_dir")
        units_dir = str(u["units_dir"])
        units_dir = units_dir if os.path.isabs(units_dir) or run_dir is None else str(run_dir / units_dir)
        case, token_type = str(u.get("src_case", "ts")), str(u.get("src_token_type", "word"))
    else:  # older runs: asr_<tag> reads units_<tag> beside it, as words
        here = Path(os.path.abspath(d))
        if not here.name.startswith("asr_"):
            raise ModelDirError(f"{units_yaml}: no such file, and {d} is not named asr_<tag>")
        units_dir = str(here.parent / ("units_" + here.name[len("asr_"):]))
        case, token_type = "ts", "word"
    if case not in ("ts", "rm") or token_type not in ("word", "bpe"):
        raise ModelDirError(f"{units_yaml}: src_case {case!r} / src_token_type {token_type!r} "
                            "not known (ts|rm, word|bpe)")
    md = ModelDir(path=d, config=config, model_file=model_file, train_config=cfg,
                  units_dir=Path(units_dir),
                  src_case=case, src_token_type=token_type, run_dir=run_dir,
                  stamp=_read_stamp(d / TRAIN_STAMP))
    if not md.codebook.is_file():
        raise ModelDirError(f"{md.codebook}: no such codebook (the units dir of {d})")
    return md


def _trained_layer(layer: int | list[int], meta: dict[str, Any]) -> int | list[int] | None:
    """The layer index (or indices) of the stamp's ``layer`` (-1: the last, counted from the
    codebook's features' ``num_layers`` when its feats.json is still there; else None: not
    known)."""
    from rpq_units.pipeline.features import resolve_layer

    if min(layer if isinstance(layer, list) else [layer]) >= 0:
        return layer
    feats_json = Path(str(meta.get("feats_dir"))) / "feats.json"
    try:
        n = json.loads(feats_json.read_text(encoding="utf-8")).get("num_layers")
    except (OSError, AttributeError, ValueError):
        return None
    return resolve_layer(layer, n) if isinstance(n, int) and n > 0 else None


def check_codebook_of_model(md: ModelDir, meta: dict[str, Any]) -> None:
    """Stop unless the codebook's provenance (``meta``: upstream, checkpoint hash, layer) is
    that of the units the model was trained on (its training stamp; not checked without one)."""
    from rpq_units.pipeline.features import WHISPER, parse_layer

    st = md.stamp
    if not st:
        logger.warning("transcribe: %s has no %s: the codebook's upstream and layer are not "
                       "checked against the model's", md.path, TRAIN_STAMP)
        return
    have = f"upstream {meta.get('upstream')} layer {meta.get('layer')}"
    differ = []
    if "upstream" in st and st["upstream"] != meta.get("upstream"):
        differ.append(f"upstream {st['upstream']}")
    if re.fullmatch(r"-?\d+(,-?\d+)*", st.get("layer", "")):
        want = _trained_layer(parse_layer(st["layer"]), meta)
        if want is not None and want != meta.get("layer"):
            differ.append(f"layer {st['layer']}")
    sig, sha = st.get("upstream_ckpt", ""), meta.get("upstream_sha256")
    # a file's hash (16 hex digits) in both; a Whisper checkpoint dir's stamp hashes the dir
    if re.fullmatch(r"[0-9a-f]{16}", sig) and sha and meta.get("upstream") != WHISPER \
            and not sha.startswith(sig):
        differ.append(f"a checkpoint with sha256 {sig}...")
    if differ:
        raise ModelDirError(
            f"codebook {md.codebook} was fit on features of {have}, but {md.path} was trained on "
            f"units of {', '.join(differ)} (its {TRAIN_STAMP}): the units dir changed after "
            "training; train the model again (stages 7-8) or use its own codebook")


def check_source_vocabulary(md: ModelDir, num_codebooks: int, codebook_size: int) -> None:
    """Stop unless a model that reads units as words has the codebook's token list."""
    from rpq_units.pipeline.units import token_list

    if md.src_token_type != "word":
        return
    have = md.train_config.get("src_token_list")
    if isinstance(have, str):  # a path (ESPnet writes the list itself once trained)
        with open(md.resolve(have), encoding="utf-8") as f:
            have = [line.rstrip() for line in f]
    have = list(have or [])
    if have != token_list(num_codebooks, codebook_size):
        raise ModelDirError(
            f"{md.config} reads {len(have)} source tokens, but codebook {md.codebook} "
            f"({num_codebooks}x{codebook_size}) gives {num_codebooks * codebook_size + 3}: "
            "not the units the model was trained on")


# ---- ESPnet's decoding ---------------------------------------------------------------------


def espnet_options(inference_config: str | None, inference_args: str) -> Any:
    """``espnet2.bin.mt_inference``'s options from its ``--config`` file and more of its
    arguments, parsed by its own parser (what stage 9 passes it)."""
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet prints at import; stdout is the output
        from espnet2.bin.mt_inference import get_parser

    argv = ["--config", inference_config] if inference_config else []
    argv += [*shlex.split(inference_args), "--output_dir=unused",  # required there, unused here
             "--data_path_and_name_and_type=unused,src_text,text"]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return get_parser().parse_args(argv)
    except SystemExit as e:  # argparse's error (printed to err)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        why = lines[-1].split("error: ", 1)[-1] if lines else f"exit {e.code}"
        given = f"--inference_args {inference_args!r}" + (
            f" over --inference_config {inference_config}" if inference_config else "")
        raise OptionError(f"{given}: not options of espnet2.bin.mt_inference ({why})") from None


@contextlib.contextmanager
def espnet_quiet() -> Any:
    """ESPnet logs every beam search step and its model at INFO on the root logger: those are
    shown only when this package's logger is at DEBUG."""
    root = logging.getLogger()
    level = root.level
    if not logger.isEnabledFor(logging.DEBUG):
        root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


class UnitTextDecoder:
    """Source text -> hypothesis with ESPnet's ``Text2Text`` (its beam search and scorers) and
    the model's own source preprocessing (``MTTask``'s, as ``mt_inference`` applies it), on
    ``device``."""

    def __init__(self, md: ModelDir, options: Any, device: str) -> None:
        import inspect

        from espnet2.bin.mt_inference import Text2Text
        from espnet2.tasks.mt import MTTask
        from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

        # files the training named relative to the recipe's directory
        paths = {k: md.resolve(v) for k in ("bpemodel", "src_bpemodel", "non_linguistic_symbols")
                 if isinstance(v := md.train_config.get(k), str)}
        for k in ("bpemodel", "src_bpemodel"):
            if k in paths and not Path(paths[k]).is_file():
                raise ModelDirError(f"{paths[k]}: no such file ({k} of {md.config})")
        set_all_random_seed(options.seed)  # as mt_inference does
        accepted = inspect.signature(Text2Text.__init__).parameters
        kwargs = {k: v for k, v in vars(options).items() if k in accepted and k not in
                  ("mt_train_config", "mt_model_file", "device", "batch_size")}
        if kwargs.get("bpemodel") is None:
            kwargs["bpemodel"] = paths.get("bpemodel")
        with espnet_quiet(), contextlib.redirect_stdout(sys.stderr):
            self.t2t = Text2Text(mt_train_config=md.config, mt_model_file=md.model_file,
                                 device=device, **kwargs)
        args = self.t2t.mt_train_args
        for k, v in paths.items():
            setattr(args, k, v)
        self.preprocess = MTTask.build_preprocess_fn(args, False)

    def __call__(self, uttid: str, src: str) -> str:
        from espnet.nets.pytorch_backend.transformer.subsampling import TooShortUttError

        data = self.preprocess(uttid, {"src_text": src}) if self.preprocess else {"src_text": src}
        try:
            with espnet_quiet():
                text, tokens, _, _ = self.t2t(src_text=data["src_text"])[0]
        except TooShortUttError as e:  # mt_inference's answer: one space
            logger.warning("transcribe: utterance %s: %s", uttid, e)
            return " "
        return text if text is not None else " ".join(tokens)


# ---- the chain -----------------------------------------------------------------------------


def input_table(audio: list[str], wav_scp: str | None, data_dir: str | None) -> dict[str, str] | None:
    """The ``wav.scp`` table of the input (utterance id of an audio file: its name without the
    extension), or None for a ``data_dir``, which is read as it is."""
    given = [n for n, v in (("audio files", audio), ("--wav_scp", wav_scp), ("--data_dir", data_dir)) if v]
    if len(given) != 1:
        raise OptionError("give audio files, --wav_scp or --data_dir (one of them)"
                          + (f", not {' and '.join(given)}" if given else ""))
    if data_dir:
        load_data_dir(data_dir)  # its errors before any model is loaded
        return None
    if wav_scp:
        return read_table(wav_scp)  # errors name the user's file
    table: dict[str, str] = {}
    for a in audio:
        uttid = Path(a).stem
        if not uttid or any(c.isspace() for c in uttid):
            raise OptionError(f"{a}: its name without the extension is no utterance id")
        if uttid in table:
            raise OptionError(f"{a} and {table[uttid]}: two files named {uttid}")
        table[uttid] = str(Path(a).resolve())
    return table


def _write_wav_scp(d: Path, table: dict[str, str]) -> str:
    """A data dir ``d`` of a ``wav.scp`` table, sorted by id."""
    d.mkdir()
    lines = sorted((f"{k} {v}\n" for k, v in table.items()), key=lambda s: s.encode("utf-8"))
    (d / "wav.scp").write_text("".join(lines), encoding="utf-8")
    return str(d)


def _feature_settings(md: ModelDir, batch_size: int | None, autocast: str | None) -> tuple[int, str | None]:
    """Batch size and precision of the upstream's forward: the given ones, else those the
    recipe made the model's units with (``feats_batch_size``/``feats_autocast`` in its stamp)."""
    if batch_size is None:
        batch_size = int(md.stamp.get("feats_batch_size", 1))
    if autocast is None:
        autocast = md.stamp.get("feats_autocast", "none")
    return batch_size, None if autocast == "none" else autocast


def transcribe(
    *,
    model_dir: str,
    audio: list[str] | tuple[str, ...] = (),
    wav_scp: str | None = None,
    data_dir: str | None = None,
    out: str | None = None,
    inference_config: str | None = None,
    inference_args: str = "",
    inference_model: str = INFERENCE_MODEL,
    device: str = "cpu",
    batch_size: int | None = None,
    chunk_s: float = 30.0,
    autocast: str | None = None,
    upstream_ckpt: str | None = None,
    strict: bool = False,
) -> dict[str, str]:
    """Hypotheses ``{uttid: text}`` (sorted by id) of audio ``audio`` (files), a ``wav_scp`` or
    a ``data_dir`` (one of them) with the trained model of ``model_dir``; with ``out``, also
    written there as ``uttid text`` lines (atomic). See the module's docstring for the chain.

    ``inference_config``/``inference_args``: ``espnet2.bin.mt_inference``'s ``--config`` and
    more of its options (the recipe's ``--inference_config``/``--inference_args``: the same
    ones give the recipe's hypotheses). ``batch_size``/``autocast`` (``"none"``: fp32): the
    upstream's forward, by default as the recipe made the units. ``upstream_ckpt``: where the
    codebook's checkpoint is now (the same file: its sha256 is checked)."""
    from tqdm import tqdm

    from rpq_units.pipeline.codebooks import load_quantizer
    from rpq_units.pipeline.steps import encode
    from rpq_units.pipeline.unit_text import source_line
    from rpq_units.pipeline.units import read_units

    table = input_table(list(audio), wav_scp, data_dir)
    md = read_model_dir(model_dir, inference_model)
    q = load_quantizer(md.codebook)
    check_codebook_of_model(md, q.meta)
    check_source_vocabulary(md, q.num_codebooks, q.codebook_size)
    if inference_config is not None and not Path(inference_config).is_file():
        raise OptionError(f"{inference_config}: no such inference config")
    options = espnet_options(inference_config, inference_args)
    batch_size, autocast = _feature_settings(md, batch_size, autocast)
    logger.info("transcribe: %s reads units of %s (src_case %s, src_token_type %s)", md.path,
                md.codebook, md.src_case, md.src_token_type)
    decoder = UnitTextDecoder(md, options, device)  # before the audio: its errors come first
    with tempfile.TemporaryDirectory(prefix="rpq_transcribe.") as tmp:
        data = data_dir if table is None else _write_wav_scp(Path(tmp) / "data", table)
        units_file = Path(tmp) / "units"
        encode(data_dir=data, codebook=str(md.codebook), out=str(units_file), device=device,
               upstream_ckpt=upstream_ckpt, batch_size=batch_size, chunk_s=chunk_s,
               strict=strict, autocast=autocast)
        units = read_units(units_file)
    hyps = {}
    chars = md.src_token_type == "bpe"
    for uttid in tqdm(sorted(units, key=lambda u: u.encode("utf-8")), desc="decode", unit="utt",
                      mininterval=2.0, dynamic_ncols=True):
        hyps[uttid] = decoder(uttid, source_line(units[uttid], q.num_codebooks, md.src_case, chars))
    if out is not None:
        write_text_atomic(out, "".join(f"{u} {h}\n" for u, h in hyps.items()))
    logger.info("transcribe: %d utterances decoded%s", len(hyps), f" -> {out}" if out else "")
    return hyps
