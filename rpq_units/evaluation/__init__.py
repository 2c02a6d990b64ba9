"""What the units are worth: WER/CER scoring and the results table
(:mod:`~rpq_units.evaluation.scoring`), ML-SUPERB text normalisation and per-language CER
(:mod:`~rpq_units.evaluation.lang_scoring`), codebook analysis (:mod:`~rpq_units.evaluation.analyze`:
usage, MSE, rho), and resynthesis (:mod:`~rpq_units.evaluation.spectral`,
:mod:`~rpq_units.evaluation.vocoder`, :mod:`~rpq_units.evaluation.speech_metrics`,
:mod:`~rpq_units.evaluation.resynth`, :mod:`~rpq_units.evaluation.demo_page`).
Reads the pipeline's files; nothing below it imports it.
"""
