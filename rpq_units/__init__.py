"""rpq_units: discrete speech units from self-supervised features.

K-means, product quantization (PQ) and random product quantization (RPQ, arXiv 2504.04721),
plus further vector quantizers, behind one API::

    from rpq_units import make_quantizer, load_quantizer, save_codebook
"""

from rpq_units.pipeline.codebooks import load_quantizer, save_codebook
from rpq_units.quant.base import Quantizer, QuantizerError, make_quantizer

__version__ = "0.1.0"
__all__ = [
    "Quantizer",
    "QuantizerError",
    "load_quantizer",
    "make_quantizer",
    "save_codebook",
    "__version__",
]
