"""Self-supervised pre-training of speech encoders with random-projection labels.

BEST-RQ (Chiu et al., ICML 2022) and BiRQ (arXiv 2509.15430) as a plugin of ESPnet's SSL task
(``espnet2/tasks/ssl.py``): :mod:`.masking` (span masking with noise), :mod:`.labels` (anchor
labels through :class:`rpq_units.quant.random_projection.RandomProjectionQuantizer`), :mod:`.loss`
(BEST-RQ and BiRQ objectives), :mod:`.model` (the SSL model), :mod:`.registry` (adds them to
ESPnet's choices), :mod:`.train` (``python -m rpq_units.ssl.train``), :mod:`.encoder` and
:mod:`.export` (a pre-trained encoder as a feature extractor).
"""
