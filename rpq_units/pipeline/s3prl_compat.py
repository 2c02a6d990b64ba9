"""Let s3prl 0.4.18 import beside torchaudio >= 2.9.

torchaudio 2.9 removed ``torchaudio.set_audio_backend`` and the ``torchaudio.sox_effects``
module; s3prl 0.4.18 calls the first at import time of some upstreams (``s3prl.hub`` imports
them all) and imports the second, so ``import s3prl.hub`` fails. Importing this module first
installs stand-ins:

* ``torchaudio.set_audio_backend(name)``: a no-op (torchaudio >= 2.9 has a single I/O path;
  s3prl only selects a backend, its feature extractors never depend on it).
* ``torchaudio.sox_effects`` with ``apply_effects_tensor`` / ``apply_effects_file`` and
  ``torchaudio.info``: raise :class:`RuntimeError` naming the removed function if called. No
  upstream used by rpq_units calls them (audio is loaded with soundfile by :mod:`rpq_units.pipeline.data`).

Nothing is replaced when torchaudio still provides a name. Import order::

    import rpq_units.pipeline.s3prl_compat  # noqa: F401  (before s3prl)
    import s3prl.hub
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

try:
    import torchaudio
except ImportError:  # s3prl's WavLM/HuBERT upstreams do not need it: nothing to patch
    torchaudio = None

logger = logging.getLogger(__name__)

_REMOVED = "was removed in torchaudio {v}; s3prl code that needs it cannot run here ({name})"


def _removed(name: str):
    def fn(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(_REMOVED.format(v=torchaudio.__version__, name=name))

    fn.__name__ = name.rsplit(".", 1)[-1]
    fn.__qualname__ = fn.__name__
    fn.__doc__ = f"Stand-in for ``{name}``, which torchaudio {torchaudio.__version__} lacks."
    return fn


def _set_audio_backend(backend: str | None) -> None:
    """Stand-in for the removed ``torchaudio.set_audio_backend``: accepts and ignores ``backend``."""
    logger.debug("torchaudio.set_audio_backend(%r) ignored (removed in torchaudio >= 2.9)", backend)


def install() -> list[str]:
    """Install the stand-ins that torchaudio lacks; returns the names installed (idempotent).
    Without torchaudio nothing is installed (upstreams that import it then fail by name)."""
    added: list[str] = []
    if torchaudio is None:
        return added
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend
        added.append("torchaudio.set_audio_backend")
    if not hasattr(torchaudio, "get_audio_backend"):
        torchaudio.get_audio_backend = lambda: None
        added.append("torchaudio.get_audio_backend")
    if not hasattr(torchaudio, "info"):
        torchaudio.info = _removed("torchaudio.info")
        added.append("torchaudio.info")
    if "torchaudio.sox_effects" not in sys.modules and not hasattr(torchaudio, "sox_effects"):
        mod = types.ModuleType(
            "torchaudio.sox_effects", "Stand-in: torchaudio.sox_effects was removed in 2.9."
        )
        for fn in (
            "apply_effects_tensor",
            "apply_effects_file",
            "effect_names",
            "init_sox_effects",
        ):
            setattr(mod, fn, _removed(f"torchaudio.sox_effects.{fn}"))
        sys.modules["torchaudio.sox_effects"] = mod
        torchaudio.sox_effects = mod
        added.append("torchaudio.sox_effects")
    if added:
        logger.debug("s3prl compatibility stand-ins installed: %s", ", ".join(added))
    return added


INSTALLED = install()
