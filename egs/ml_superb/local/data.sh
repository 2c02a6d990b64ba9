#!/usr/bin/env bash
# ML-SUPERB: Kaldi data dirs (train_<duration>, dev_10min, test_10min) from an unpacked corpus.
# There is no automatic download; a missing corpus stops here with instructions.
set -euo pipefail

. ./db.sh
mlsuperb=${MLSUPERB}   # corpus root, holding <source>/<lang>/ (default: MLSUPERB from db.sh)
datadir=data           # Kaldi data dirs
duration=1h            # training data per language and source: 10min or 1h
lid=false              # prefix transcripts with [lang] (joint ASR + language identification)
single_lang=""         # one language only (monolingual), e.g. eng
id_prefix=""           # prefix for utterance and speaker ids (e.g. mlsuperb_ when combining corpora)
train_set=""           # default: <id_prefix>train_<duration>
dev_set=""             # default: <id_prefix>dev_10min
test_set=""            # default: <id_prefix>test_10min
seed=0                 # choice of the few-shot languages' 5 training utterances
help_message="Usage: $0 [options]"
. utils/parse_options.sh

if [ -z "${mlsuperb}" ] || [ ! -d "${mlsuperb}" ]; then
    cat >&2 <<MSG
$0: ML-SUPERB corpus not found (MLSUPERB='${mlsuperb}').
  The corpus is not downloaded automatically. Get it from the ML-SUPERB benchmark
  (https://multilingual.superbbenchmark.org), unpack it, and either set MLSUPERB in db.sh,
  export MLSUPERB=/path/to/ml_superb, or pass --data_opts "--mlsuperb /path/to/ml_superb".
  That directory holds <source>/<lang>/{wav/, transcript_10min_train.txt, transcript_1h_train.txt,
  transcript_10min_dev.txt, transcript_10min_test.txt}.
MSG
    exit 1
fi
train_set=${train_set:-${id_prefix}train_${duration}}
dev_set=${dev_set:-${id_prefix}dev_10min}
test_set=${test_set:-${id_prefix}test_10min}

root=$(cd ../.. && pwd)
opts=(--root "${mlsuperb}" --out_dir "${datadir}" --duration "${duration}" --lid "${lid}"
      --single_lang "${single_lang}" --id_prefix "${id_prefix}" --seed "${seed}"
      --train_set "${train_set}" --dev_set "${dev_set}" --test_set "${test_set}")
stamp=${datadir}/${train_set}/.done
if [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${opts[*]}" ]; then
    echo "$0: ${datadir}/{${train_set},${dev_set},${test_set}} already prepared" >&2
    exit 0
fi
rm -f "${stamp}"
python "${root}/local/data_prep_ml_superb.py" "${opts[@]}"
echo "${opts[*]}" > "${stamp}"
