#!/usr/bin/env bash
# Demo corpus: generate synthetic speech in the LibriSpeech layout, then prepare it with the
# real LibriSpeech data preparation. Sets: train_clean, dev_clean, test_clean (training voices)
# and test_heldout (voices never seen in training).
set -euo pipefail

corpus_dir=corpus      # where the generated LibriSpeech/ tree goes
datadir=data           # Kaldi data dirs
seed=0                 # generator seed (sentences, voices)
num_train=1500         # training utterances
num_dev=100            # validation utterances
num_test=150           # test utterances, training voices
num_heldout=150        # test utterances, held-out voices
num_train_speakers=12  # training voices
num_heldout_speakers=3 # held-out voices
engines=espeak-ng      # synthesis engines: espeak-ng[,festival]
nj=2                   # parallel synthesis processes
help_message="Usage: $0 [options]"
. utils/parse_options.sh

root=$(cd ../.. && pwd)
python3 "${root}/local/generate_librispeech_like.py" --out_dir "${corpus_dir}/LibriSpeech" \
    --seed "${seed}" --num_train "${num_train}" --num_dev "${num_dev}" --num_test "${num_test}" \
    --num_heldout "${num_heldout}" --num_train_speakers "${num_train_speakers}" \
    --num_heldout_speakers "${num_heldout_speakers}" --engines "${engines}" --nj "${nj}"
for part in train-clean dev-clean test-clean test-heldout; do
    dst=${datadir}/${part//-/_}
    if [ -f "${dst}/.done" ]; then
        continue
    fi
    "${root}/local/data_prep_librispeech.sh" "${corpus_dir}/LibriSpeech/${part}" "${dst}"
    date > "${dst}/.done"
done
