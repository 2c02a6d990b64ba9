#!/usr/bin/env bash
# Self-supervised pre-training (BEST-RQ, BiRQ) on ESPnet's SSL task: corpus -> encoder file for
# units_asr.sh --upstream rpq_ssl --upstream_ckpt exp/ssl_<tag>/encoder.pt --layer L.
#
# The second stage engine beside units_asr.sh, run from a recipe dir the same way.
# Stages (bounded by --stage/--stop_stage; each one skips work finished by an earlier run):
#   1  data preparation: local/data.sh (download or generate, then Kaldi data dirs)
#   2  ESPnet SSL collect stats (shape files of the training and validation audio)
#   3  pre-training: python -m rpq_units.ssl.train (ESPnet's SSL trainer and launcher, resumable)
#   4  export: python -m rpq_units.ssl.export -> exp/ssl_<tag>/encoder.pt
#   5  plots: masked-prediction accuracy and label perplexity per epoch -> exp/ssl_<tag>/curves.png
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
trap 'log "failed (exit $?) at line ${LINENO}: ${BASH_COMMAND}"' ERR

stage=1                 # first stage to run
stop_stage=5            # last stage to run
ngpu=0                  # GPUs per node for pre-training (0: CPU)
num_nodes=1             # nodes for pre-training (> 1: ESPnet's launcher, cmd.sh's Slurm backend)
datadir=data            # Kaldi data dirs
expdir=exp              # experiments
data_sh=local/data.sh   # the recipe's data preparation script (stage 1)
data_opts=""            # options for data_sh
train_set=""            # training set name (under datadir)
valid_set=""            # validation set name
ssl_config=""           # pre-training config (conf/ssl/<method>_<size>.yaml)
ssl_args=""             # more ssl_train arguments (e.g. "--max_epoch 1")
ssl_tag=""              # experiment name: exp/ssl_<tag> (default: the config's file name)
export_model=valid.loss.best.pth  # model file of the experiment to export

help_message="Usage: $0 --train_set <set> --valid_set <set> --ssl_config <yaml> [options]"
_run_args=$(printf '%q ' "$0" "$@")
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
SECONDS=0

if [ $# -ne 0 ]; then
    echo "$0: unexpected arguments: $* (see --help)" >&2
    exit 2
fi
for v in train_set valid_set ssl_config; do
    if [ -z "${!v}" ]; then
        echo "$0: --${v} is required (see --help)" >&2
        exit 2
    fi
done
case "${num_nodes}" in ''|*[!0-9]*|0) echo "$0: --num_nodes must be a positive integer" >&2; exit 2 ;; esac
[ -f "${ssl_config}" ] || { echo "$0: no such config: ${ssl_config}" >&2; exit 1; }
if [ -z "${ssl_tag}" ]; then
    ssl_tag=$(basename "${ssl_config}"); ssl_tag=${ssl_tag%.*}
fi
sdir=${expdir}/ssl_${ssl_tag}
stats=${sdir}/stats
mkdir -p "${sdir}"
echo "${_run_args% }" >> "${sdir}/commands.txt"

stage_begin() { _stage_no=$1; _stage_start=${SECONDS}; log "Stage $1: $2"; }
stage_end() { log "Stage ${_stage_no} done in $(( SECONDS - _stage_start )) s"; }
done_or() { [ -f "$1" ]; }
mark_done() { mkdir -p "$(dirname "$1")"; date > "$1"; }

data_args=(--train_data_path_and_name_and_type "${datadir}/${train_set}/wav.scp,speech,sound"
           --valid_data_path_and_name_and_type "${datadir}/${valid_set}/wav.scp,speech,sound")

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    stage_begin 1 "data preparation: ${data_sh} ${data_opts}"
    # shellcheck disable=SC2086  # data_opts is a word list
    ${data_sh} ${data_opts}
    for s in ${train_set} ${valid_set}; do
        utils/validate_data_dir.sh "${datadir}/${s}"
    done
    stage_end
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    stage_begin 2 "ESPnet SSL collect stats -> ${stats}"
    if done_or "${stats}/.done"; then
        log "statistics already collected in ${stats}"
    else
        rm -rf "${stats}"; mkdir -p "${stats}"
        # shellcheck disable=SC2086  # ssl_args is a word list
        ${train_cmd} "${stats}/collect_stats.log" python -m rpq_units.ssl.train \
            --collect_stats true --config "${ssl_config}" "${data_args[@]}" \
            --train_shape_file "${datadir}/${train_set}/wav.scp" \
            --valid_shape_file "${datadir}/${valid_set}/wav.scp" \
            --output_dir "${stats}" --ngpu 0 ${ssl_args}
        mark_done "${stats}/.done"
    fi
    stage_end
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    stage_begin 3 "pre-training (${ssl_config}, ${num_nodes} node(s) x ${ngpu} GPU(s)) -> ${sdir}"
    if done_or "${sdir}/.done_train"; then
        log "${sdir} already trained"
    else
        train_args=(--config "${ssl_config}" "${data_args[@]}"
                    --train_shape_file "${stats}/train/speech_shape"
                    --valid_shape_file "${stats}/valid/speech_shape"
                    --resume true --output_dir "${sdir}")
        log "training ${sdir} (log: ${sdir}/train.log)"
        # ESPnet's launcher, as its asr.sh: one process per GPU on one node, or one job per node
        # through cmd.sh's backend (Slurm) for --num_nodes > 1; it keeps earlier logs as train.N.log
        # shellcheck disable=SC2086  # ssl_args is a word list
        python -m espnet2.bin.launch --cmd "${cuda_cmd}" --log "${sdir}/train.log" \
            --ngpu "${ngpu}" --num_nodes "${num_nodes}" --init_file_prefix "${sdir}/.dist_init_" \
            --multiprocessing_distributed true -- \
            python -m rpq_units.ssl.train "${train_args[@]}" ${ssl_args}
        mark_done "${sdir}/.done_train"
    fi
    stage_end
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    stage_begin 4 "export ${sdir}/${export_model} -> ${sdir}/encoder.pt"
    if done_or "${sdir}/.done_export"; then
        log "${sdir}/encoder.pt already exported"
    else
        ${train_cmd} "${sdir}/export.log" python -m rpq_units.ssl.export \
            --config "${sdir}/config.yaml" --model "${sdir}/${export_model}" --out "${sdir}/encoder.pt"
        mark_done "${sdir}/.done_export"
    fi
    stage_end
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    stage_begin 5 "pre-training curves -> ${sdir}/curves.png"
    python utils/plot_ssl_curves.py --exp_dir "${sdir}" --out "${sdir}/curves.png"
    log "curves: ${sdir}/curves.png, values: ${sdir}/curves.tsv"
    stage_end
fi
log "Successfully finished. [elapsed=${SECONDS}s]"
