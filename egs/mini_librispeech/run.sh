#!/usr/bin/env bash
# Offline demo: synthetic speech (espeak-ng voices) in the LibriSpeech layout -> 80-dim log-mel
# frames every 40 ms (s3prl's baseline upstream, conf/upstream/mel_40ms.yaml) -> K-means / PQ /
# RPQ units -> small ESPnet discrete ASR on CPU (12.5 Hz encoder, sentencepiece 250 targets; the
# three models train at once, one core each) -> WER on a test set of the training voices and one
# of held-out voices. About 21 minutes on 2 idle CPU cores, install included (README.md, Results).
# Any engine option can be added on the command line, e.g.
#     ./run.sh --stage 8 --stop_stage 12 --use_lm true
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

train_set=train_clean
valid_set=dev_clean
test_sets="test_clean test_heldout"

./units_asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --upstream baseline_local \
    --upstream_ckpt conf/upstream/mel_40ms.yaml \
    --feats_portion 0.15 \
    --discretizers "kmeans pq rpq" \
    --units_conf_dir conf/units \
    --token_type bpe \
    --nbpe 250 \
    --score_unit word \
    --train_jobs 3 \
    --asr_config conf/asr/train_discrete_asr.yaml \
    --inference_config conf/asr/decode.yaml \
    --inference_args "--ctc_weight 0.5" \
    --lm_config conf/asr/train_lm.yaml \
    --continuous_config conf/asr/train_continuous.yaml \
    "$@"
