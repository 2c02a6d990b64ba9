"""Add BEST-RQ / BiRQ to ESPnet's SSL task choices (``espnet2/tasks/ssl.py``).

The task's ``ClassChoices`` are plain dicts read when its argument parser is built, so adding
entries before ``SSLTask.main`` (or ``build_model_from_file``) runs keeps ESPnet's trainer,
checkpoints, resume and launcher: ``model: bestrq``, ``loss: [{name: bestrq | birq}]``,
``util: [{name: span_mask}]``. BEST-RQ: Chiu et al., ICML 2022; BiRQ: arXiv 2509.15430.
"""

from __future__ import annotations

from rpq_units.ssl.loss import BestRQLoss, BiRQLoss
from rpq_units.ssl.masking import SpanMasking
from rpq_units.ssl.model import BestRQModel


def register() -> None:
    """Idempotent: add ``bestrq`` (model, loss), ``birq`` (loss) and ``span_mask`` (util)."""
    from espnet2.tasks import ssl

    ssl.model_choices.classes["bestrq"] = BestRQModel
    ssl.loss_choices.classes["bestrq"] = BestRQLoss
    ssl.loss_choices.classes["birq"] = BiRQLoss
    ssl.util_choices.classes["span_mask"] = SpanMasking
