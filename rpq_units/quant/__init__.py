"""The quantizer math: tensors in, tensors out; no file or corpus I/O.

- :mod:`~rpq_units.quant.search`: the one nearest-codeword search (exact fp32, certified low
  precision, CPU and CUDA, top-1/2/k) and codeword sums; :mod:`~rpq_units.quant.search_triton`
  its fused CUDA kernels.
- :mod:`~rpq_units.quant.lloyd`: seeding and the one Lloyd loop (plain or bounded passes, one
  empty-cluster rule, per-iteration :class:`~rpq_units.quant.lloyd.LloydStats`).
- Structures (:mod:`~rpq_units.quant.base` registry): ``kmeans`` / ``pq`` / ``rpq``
  (:mod:`~rpq_units.quant.pq`), ``rvq`` (:mod:`~rpq_units.quant.rvq`), ``avq``
  (:mod:`~rpq_units.quant.avq`), ``random_projection``; trainers: Lloyd, progressive,
  least squares, gradient NSVQ / STE (:mod:`~rpq_units.quant.nsvq`), frozen.

Layers depend one way: ``errors`` <- ``files`` <- ``quant`` <- ``ssl`` <- ``pipeline`` <-
``evaluation`` <- ``cli`` (``tests/test_layers.py`` checks it); the quantizers import nothing
of ``files``: they read and write no files.
"""
