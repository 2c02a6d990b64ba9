#!/usr/bin/env bash
# BEST-RQ and BiRQ pre-trained on LibriSpeech-960 (conf/ssl/<method>_librispeech960.yaml, GPUs;
# --num_nodes N through ESPnet's launcher and cmd.sh's Slurm backend), then the LibriSpeech-100
# unit recipe (run.sh) on each encoder's layer: K-means / PQ / RPQ units and the continuous
# reference, one feature tag per method, tabled with the methods before it and --results_tags
# (e.g. wavlm_large_l21 once ./run.sh ran in the same exp/) by units_asr.sh --results_tags.
#     ./run_ssl.sh [--methods "bestrq birq"] [--layer 7] [--ngpu 4] [--num_nodes 1] [-- <run.sh options>]
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

methods="bestrq birq"   # pre-training methods: conf/ssl/<method>_librispeech960.yaml
layer=7                 # encoder layer for units and the continuous reference (BiRQ's k: 0.7 depth)
ngpu=4                  # GPUs per node for pre-training
num_nodes=1             # nodes for pre-training
expdir=exp              # experiments (both engines)
data_opts=""            # options for local/data_960.sh (e.g. --download_dir /data)
ssl_opts=""             # more ssl.sh options
results_tags=""         # feature tags of earlier runs in the same exp/ to table beside (e.g. wavlm_large_l21)
help_message="Usage: $0 [options] [-- <run.sh / units_asr.sh options>]"
. utils/parse_options.sh

for m in ${methods}; do
    # shellcheck disable=SC2086  # ssl_opts is a word list
    ./ssl.sh --train_set train_960 --valid_set dev_clean --data_sh local/data_960.sh \
        --data_opts "${data_opts}" --ssl_config "conf/ssl/${m}_librispeech960.yaml" --ssl_tag "${m}_ls960" \
        --ngpu "${ngpu}" --num_nodes "${num_nodes}" --expdir "${expdir}" ${ssl_opts}
    ./run.sh --upstream rpq_ssl --upstream_ckpt "${expdir}/ssl_${m}_ls960/encoder.pt" --layer "${layer}" \
        --feat_tag "${m}_ls960_l${layer}" --run_continuous true --results_tags "${results_tags}" \
        --expdir "${expdir}" "$@"
    # the next method's table shows this one's rows once its stage 12 tabled them
    [ ! -f "${expdir}/results_rows/${m}_ls960_l${layer}.tsv" ] || results_tags="${results_tags} ${m}_ls960_l${layer}"
done
