#!/usr/bin/env bash
# ML-SUPERB multilingual ASR from discrete units (the paper's ML-SUPERB setting): WavLM Large
# layer 21 units (K-means, PQ, RPQ), E-Branchformer discrete ASR with character targets, CER
# overall, per language and for the 20 few-shot languages. The corpus is not downloaded: set
# MLSUPERB in db.sh. Meant for a GPU:
#     ./run.sh
# Edit duration/lid below (or pass --data_opts) for the 10-minute set or joint ASR + LID.
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

duration=1h   # 10min or 1h of training data per language and source
lid=false     # true: [lang] prefix on transcripts, LID accuracy in the results

train_set=train_${duration}
valid_set=dev_10min
test_sets=test_10min
nlsyms=""
"${lid}" && nlsyms=data/nlsyms.txt

./units_asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --data_opts "--duration ${duration} --lid ${lid}" \
    --upstream wavlm_large \
    --layer 21 \
    --feats_portion 0.3 \
    --max_frames 3000000 \
    --discretizers "kmeans pq rpq" \
    --units_conf_dir conf/units \
    --token_type char \
    --nlsyms_txt "${nlsyms}" \
    --score_unit char \
    --local_score_opts "--test_sets ${test_sets}" \
    --asr_config conf/asr/train_discrete_asr_ebranchformer.yaml \
    --inference_config conf/asr/decode_discrete_asr.yaml \
    --continuous_config conf/asr/train_continuous_ebranchformer.yaml \
    --lm_config conf/asr/train_lm_transformer.yaml \
    --ngpu 1 \
    --device cuda \
    --inference_nj 16 \
    --nj 4 \
    "$@"
