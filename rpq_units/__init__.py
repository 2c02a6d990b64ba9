"""rpq_units: discrete speech units from self-supervised features.

K-means, product quantization (PQ) and random product quantization (RPQ, arXiv 2504.04721),
plus further vector quantizers, behind one API::

    from rpq_units import make_quantizer, load_quantizer, save_codebook

The names are loaded on first use, so that a script that needs only a torch-free part (the
scoring of stages 10 and 12: ``rpq_units.evaluation.scoring``) starts without importing torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = [
    "Quantizer",
    "QuantizerError",
    "load_quantizer",
    "make_quantizer",
    "save_codebook",
    "__version__",
]


def __getattr__(name: str):
    if name in ("load_quantizer", "save_codebook"):
        from rpq_units.pipeline import codebooks

        return getattr(codebooks, name)
    if name in ("Quantizer", "QuantizerError", "make_quantizer"):
        from rpq_units.quant import base

        return getattr(base, name)
    raise AttributeError(f"module 'rpq_units' has no attribute {name!r}")
