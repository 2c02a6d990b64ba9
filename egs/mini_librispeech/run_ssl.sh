#!/usr/bin/env bash
# Offline demo of self-supervised units: BEST-RQ and BiRQ pre-trained on the demo corpus
# (ssl.sh, conf/ssl/<method>_demo.yaml), then the demo's unit recipe (run.sh) on each encoder's
# layer: K-means / PQ / RPQ units and the continuous reference, one feature tag per method. Each
# method's stage 12 tables its rows with those of the methods before it (units_asr.sh
# --results_tags) and of --results_tags (e.g. mel_40ms_llast, once ./run.sh ran in the same exp/).
#     ./run_ssl.sh [--methods "bestrq birq"] [--layer 3] [--ssl_opts "..."] [-- <run.sh options>]
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

methods="bestrq birq"   # pre-training methods: conf/ssl/<method>_demo.yaml
layer=3                 # encoder layer the units and the continuous reference are made from
datadir=data            # Kaldi data dirs (both engines)
expdir=exp              # experiments (both engines)
data_opts=""            # options for local/data.sh (both engines)
ssl_opts=""             # more ssl.sh options (e.g. --stage 3 --ssl_args "--max_epoch 1")
results_tags=""         # feature tags of earlier runs in the same exp/ to table beside (e.g. mel_40ms_llast)
help_message="Usage: $0 [options] [-- <run.sh / units_asr.sh options>]"
. utils/parse_options.sh

for m in ${methods}; do
    # shellcheck disable=SC2086  # ssl_opts is a word list
    ./ssl.sh --train_set train_clean --valid_set dev_clean --ssl_config "conf/ssl/${m}_demo.yaml" \
        --ssl_tag "${m}" --datadir "${datadir}" --expdir "${expdir}" --data_opts "${data_opts}" ${ssl_opts}
    ./run.sh --upstream rpq_ssl --upstream_ckpt "${expdir}/ssl_${m}/encoder.pt" --layer "${layer}" \
        --feat_tag "${m}_l${layer}" --run_continuous true --results_tags "${results_tags}" \
        --datadir "${datadir}" --expdir "${expdir}" --data_opts "${data_opts}" "$@"
    # the next method's table shows this one's rows once its stage 12 tabled them
    [ ! -f "${expdir}/results_rows/${m}_l${layer}.tsv" ] || results_tags="${results_tags} ${m}_l${layer}"
done
