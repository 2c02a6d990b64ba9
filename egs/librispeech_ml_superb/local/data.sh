#!/usr/bin/env bash
# The paper's combined setting (the ESPnet discrete speech challenge): LibriSpeech
# train-clean-100 + ML-SUPERB 1h for training; LibriSpeech dev/test and ML-SUPERB test_10min for
# evaluation. Ids are prefixed per corpus (ls_, mlsuperb_) so the sets combine without clashes.
# LibriSpeech is downloaded when missing (../librispeech/local/data.sh); ML-SUPERB is not
# (its path comes from db.sh).
set -euo pipefail

. ./db.sh
librispeech_dir=downloads  # where LibriSpeech/ is, or is downloaded to
mlsuperb=${MLSUPERB}       # ML-SUPERB root (default: MLSUPERB from db.sh)
datadir=data               # Kaldi data dirs
ls_train=train-clean-100   # LibriSpeech training set
ls_dev=dev-clean           # LibriSpeech set joined to the ML-SUPERB dev set for validation
ls_test_sets="dev-clean dev-other test-clean test-other"  # LibriSpeech evaluation sets
train_set=train_ls100_mlsuperb1h  # combined training set
valid_set=dev_ls_mlsuperb         # combined validation set (dev-clean + ML-SUPERB dev)
help_message="Usage: $0 [options]"
. utils/parse_options.sh

../ml_superb/local/data.sh --mlsuperb "${mlsuperb}" --datadir "${datadir}" --duration 1h \
    --id_prefix mlsuperb_
ls_sets=$(echo "${ls_train} ${ls_dev} ${ls_test_sets}" | tr ' ' '\n' | sort -u | tr '\n' ' ')
# shellcheck disable=SC2086  # ls_sets is a word list
../librispeech/local/data.sh --download_dir "${librispeech_dir}" --datadir "${datadir}/librispeech" \
    --sets "${ls_sets% }"
for part in ${ls_sets}; do
    s=${part//-/_}
    local/prefix_data_dir.sh ls_ "${datadir}/librispeech/${s}" "${datadir}/ls_${s}"
done
utils/combine_data_dirs.sh "${datadir}/${train_set}" "${datadir}/ls_${ls_train//-/_}" \
    "${datadir}/mlsuperb_train_1h"
utils/combine_data_dirs.sh "${datadir}/${valid_set}" "${datadir}/ls_${ls_dev//-/_}" \
    "${datadir}/mlsuperb_dev_10min"
