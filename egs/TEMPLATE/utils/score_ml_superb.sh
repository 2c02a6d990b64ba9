#!/usr/bin/env bash
# The ML-SUPERB recipes' local/score.sh (a link here): called by the stage engine after its
# standard scoring (stage 10) with the experiment dir:
# rescore the ML-SUPERB test sets by CER ([lang] prefix removed), per language, few-shot, LID.
set -euo pipefail

datadir=data     # Kaldi data dirs (for <set>/utt2lang)
test_sets=""     # the ML-SUPERB test sets among the engine's test sets
help_message="Usage: $0 --test_sets \"<set> ...\" [--datadir data] <exp-dir>"
. utils/parse_options.sh
if [ $# -ne 1 ] || [ -z "${test_sets}" ]; then
    echo "${help_message}" >&2
    exit 2
fi
root=$(cd ../.. && pwd)
python "${root}/local/score_ml_superb.py" score --exp_dir "$1" --data_dir "${datadir}" \
    --test_sets "${test_sets}"
