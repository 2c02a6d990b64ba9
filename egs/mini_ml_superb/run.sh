#!/usr/bin/env bash
# Offline multilingual demo: synthetic speech in 9 languages (espeak-ng) in the ML-SUPERB layout
# -> 80-dim log-mel frames every 20 ms (s3prl's baseline upstream, conf/upstream/mel_20ms.yaml)
# -> K-means / PQ / RPQ units -> small ESPnet discrete ASR on CPU, trained as the LibriSpeech
# demo's (SpecAugment, 30 epochs, the three models at once, one core each; character targets,
# 25 Hz encoder) -> CER per discretizer, per language and for the few-shot language. Any engine
# option can be added on the command line, e.g. ./run.sh --stage 9 --stop_stage 12
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

lid=false   # true: [lang] prefix on transcripts, LID accuracy in the results

train_set=train_1h
valid_set=dev_10min
test_sets=test_10min
nlsyms=""
"${lid}" && nlsyms=data/nlsyms.txt

./units_asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --data_opts "--lid ${lid}" \
    --upstream baseline_local \
    --upstream_ckpt conf/upstream/mel_20ms.yaml \
    --feats_portion 0.3 \
    --discretizers "kmeans pq rpq" \
    --units_conf_dir conf/units \
    --token_type char \
    --nlsyms_txt "${nlsyms}" \
    --score_unit char \
    --local_score_opts "--test_sets ${test_sets}" \
    --train_jobs 3 \
    --asr_config conf/asr/train_discrete_asr.yaml \
    --inference_config conf/asr/decode.yaml \
    --lm_config conf/asr/train_lm.yaml \
    --continuous_config conf/asr/train_continuous.yaml \
    "$@"
