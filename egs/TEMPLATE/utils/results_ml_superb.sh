#!/usr/bin/env bash
# The ML-SUPERB recipes' local/results.sh (a link here): called by the stage engine after it
# writes RESULTS.md (stage 12): prints the per-language CER
# tables of the ML-SUPERB test sets (the models of the current settings, as the engine's
# results_rows.tsv lists them), which the engine appends to RESULTS.md.
set -euo pipefail

test_sets=""     # the ML-SUPERB test sets among the engine's test sets
help_message="Usage: $0 --test_sets \"<set> ...\" <exp-dir>"
. utils/parse_options.sh
if [ $# -ne 1 ] || [ -z "${test_sets}" ]; then
    echo "${help_message}" >&2
    exit 2
fi
root=$(cd ../.. && pwd)
rows=()  # the engine's list of the decodes made with the current settings
[ -f "$1/results_rows.tsv" ] && rows=(--rows "$1/results_rows.tsv")
python "${root}/local/score_ml_superb.py" table --exp_dir "$1" --test_sets "${test_sets}" "${rows[@]}"
