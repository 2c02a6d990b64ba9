"""The unit pipeline: corpus tables (:mod:`~rpq_units.pipeline.data`), upstream features
(:mod:`~rpq_units.pipeline.features`, s3prl or the project's own encoder), feature shards
(:mod:`~rpq_units.pipeline.shards`), unit files and token lists (:mod:`~rpq_units.pipeline.units`),
codebook files (:mod:`~rpq_units.pipeline.codebooks`), and the steps that join them as typed
functions (:mod:`~rpq_units.pipeline.steps`: dump_feats, fit, encode, token_list, merge).
Uses :mod:`rpq_units.quant` and :mod:`rpq_units.ssl`; never the evaluation layer.
"""
