#!/usr/bin/env bash
# LibriSpeech-960 for pre-training: every set prepared by local/data.sh, then the three training
# sets combined into train_960 (LibriSpeech ids are unique across sets).
set -euo pipefail

download_dir=downloads  # where LibriSpeech/ is (or will be) unpacked; a path to an existing copy works
datadir=data            # Kaldi data dirs
help_message="Usage: $0 [options]"
. utils/parse_options.sh

train="train-clean-100 train-clean-360 train-other-500"
local/data.sh --download_dir "${download_dir}" --datadir "${datadir}" \
    --sets "${train} dev-clean dev-other test-clean test-other"
if [ ! -f "${datadir}/train_960/.done" ]; then
    utils/combine_data_dirs.sh "${datadir}/train_960" "${datadir}/train_clean_100" \
        "${datadir}/train_clean_360" "${datadir}/train_other_500"
    date > "${datadir}/train_960/.done"
fi
