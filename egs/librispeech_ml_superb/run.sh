#!/usr/bin/env bash
# The paper's combined setting (the ESPnet discrete speech challenge): one discrete ASR model
# trained on LibriSpeech train-clean-100 + ML-SUPERB 1h from WavLM Large layer 21 units
# (K-means, PQ, RPQ); WER on LibriSpeech dev/test clean/other and CER (overall, per language,
# few-shot) on ML-SUPERB test_10min, in one RESULTS.md. Set MLSUPERB in db.sh; LibriSpeech is
# downloaded when missing (or --data_opts "--librispeech_dir /path/holding/LibriSpeech").
# Meant for a GPU:
#     ./run.sh
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

train_set=train_ls100_mlsuperb1h
valid_set=dev_ls_mlsuperb
mlsuperb_test=mlsuperb_test_10min
test_sets="ls_dev_clean ls_dev_other ls_test_clean ls_test_other ${mlsuperb_test}"

./units_asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --upstream wavlm_large \
    --layer 21 \
    --feats_portion 0.3 \
    --max_frames 3000000 \
    --discretizers "kmeans pq rpq" \
    --units_conf_dir conf/units \
    --token_type bpe \
    --nbpe 6500 \
    --score_unit word \
    --char_test_sets "${mlsuperb_test}" \
    --local_score_opts "--test_sets ${mlsuperb_test}" \
    --asr_config conf/asr/train_discrete_asr_ebranchformer.yaml \
    --inference_config conf/asr/decode_discrete_asr.yaml \
    --continuous_config conf/asr/train_continuous_ebranchformer.yaml \
    --lm_config conf/asr/train_lm_transformer.yaml \
    --ngpu 1 \
    --device cuda \
    --inference_nj 16 \
    --nj 4 \
    "$@"
