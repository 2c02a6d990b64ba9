#!/usr/bin/env bash
# LibriSpeech-100 with WavLM Large layer 21 units (the paper's setting): K-means, PQ and RPQ
# with K=2000, E-Branchformer discrete ASR, WER on dev/test clean/other. Meant for a GPU:
#     ./run.sh --ngpu 1 --device cuda
# Point --data_opts "--download_dir /path/with/LibriSpeech/.." at an existing copy to skip the
# download. Add --run_continuous true for the frozen-WavLM reference.
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

train_set=train_clean_100
valid_set=dev_clean
test_sets="dev_clean dev_other test_clean test_other"

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
    --nbpe 5000 \
    --score_unit word \
    --asr_config conf/asr/train_discrete_asr_ebranchformer.yaml \
    --inference_config conf/asr/decode_discrete_asr.yaml \
    --continuous_config conf/asr/train_continuous_ebranchformer.yaml \
    --lm_config conf/asr/train_lm_transformer.yaml \
    --ngpu 1 \
    --device cuda \
    --gpu_inference false \
    --inference_nj 16 \
    --nj 4 \
    "$@"
