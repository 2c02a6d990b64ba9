#!/usr/bin/env bash
# Demo corpus: synthetic multilingual speech (espeak-ng voices, 9 languages in 6 scripts, 3
# sources) written in the ML-SUPERB layout, then prepared by the real ML-SUPERB data
# preparation (../ml_superb/local/data.sh): train_1h, dev_10min, test_10min.
set -euo pipefail

corpus_dir=corpus/ml_superb  # where the generated corpus goes
datadir=data                 # Kaldi data dirs
langs="eng deu fra spa rus ell hin jpn vie"  # languages (vie: an ML-SUPERB few-shot language)
sources=3                    # sources (speaker pools)
sources_per_lang=2           # sources recording each language
n_1h=60                      # 1h-set training utterances per source and language
n_10min=20                   # 10min-set training utterances (first of the 1h list)
n_dev=6                      # dev utterances per source and language
n_test=10                    # test utterances per source and language
lid=false                    # [lang] prefix on transcripts
seed=0                       # generator seed
nj=2                         # parallel synthesis processes
help_message="Usage: $0 [options]"
. utils/parse_options.sh

root=$(cd ../.. && pwd)
python "${root}/local/generate_ml_superb_like.py" --out_dir "${corpus_dir}" --langs "${langs}" \
    --sources "${sources}" --sources_per_lang "${sources_per_lang}" --n_1h "${n_1h}" \
    --n_10min "${n_10min}" --n_dev "${n_dev}" --n_test "${n_test}" --seed "${seed}" --nj "${nj}"
../ml_superb/local/data.sh --mlsuperb "${corpus_dir}" --datadir "${datadir}" --duration 1h \
    --lid "${lid}"
