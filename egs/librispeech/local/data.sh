#!/usr/bin/env bash
# LibriSpeech: download the sets from openslr (skipped when present), then prepare Kaldi data
# dirs named after the sets with "_" for "-" (train_clean_100, dev_clean, ...).
set -euo pipefail

download_dir=downloads  # where LibriSpeech/ is (or will be) unpacked; a path to an existing copy works
datadir=data            # Kaldi data dirs
sets="train-clean-100 dev-clean dev-other test-clean test-other"  # LibriSpeech sets to prepare
check_audio=header      # audio check at data prep: header, full or none
help_message="Usage: $0 [options]"
. utils/parse_options.sh

root=$(cd ../.. && pwd)
# shellcheck disable=SC2086  # sets is a word list
"${root}/local/download_librispeech.sh" "${download_dir}" ${sets}
for part in ${sets}; do
    dst=${datadir}/${part//-/_}
    if [ -f "${dst}/.done" ]; then
        continue
    fi
    "${root}/local/data_prep_librispeech.sh" --check_audio "${check_audio}" \
        "${download_dir}/LibriSpeech/${part}" "${dst}"
    date > "${dst}/.done"
done
