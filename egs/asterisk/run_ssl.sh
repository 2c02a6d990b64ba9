#!/usr/bin/env bash
# Self-supervised units from real recorded speech: BEST-RQ and BiRQ pre-trained on the Asterisk
# prompts (ssl.sh, conf/ssl/<method>_asterisk.yaml), then this recipe's unit stages (run.sh) on
# each encoder's layer: PQ / RPQ units and the continuous reference, one feature tag per method
# (<method>_l<layer>), scored on test_en and test_heldout_en like the Whisper rows. Each method's
# stage 12 tables its rows with those of the methods before it and of --results_tags.
#     ./run_ssl.sh [--methods "bestrq birq"] [--layer 3] [--ssl_opts "..."] [-- <run.sh options>]
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

methods="bestrq birq"   # pre-training methods: conf/ssl/<method>_asterisk.yaml
layer=3                 # encoder layer the units and the continuous reference are made from
expdir=exp              # experiments (both engines)
ssl_opts=""             # more ssl.sh options (e.g. --stage 3 --ssl_args "--max_epoch 1")
results_tags=""         # feature tags of earlier runs in the same exp/ to table beside (e.g. whisper_tiny_en_l4)
help_message="Usage: $0 [options] [-- <run.sh / units_asr.sh options>]"
. utils/parse_options.sh

for m in ${methods}; do
    # shellcheck disable=SC2086  # ssl_opts is a word list
    ./ssl.sh --train_set train_en --valid_set dev_en --ssl_config "conf/ssl/${m}_asterisk.yaml" \
        --ssl_tag "${m}" --expdir "${expdir}" ${ssl_opts}
    ./run.sh --feat_sources "ssl_${m}_l${layer}" --expdir "${expdir}" --discretizers "pq rpq" \
        --results_tags "${results_tags}" "$@"
    # the next method's table shows this one's rows once its stage 12 tabled them
    [ ! -f "${expdir}/results_rows/${m}_l${layer}.tsv" ] || results_tags="${results_tags} ${m}_l${layer}"
done
