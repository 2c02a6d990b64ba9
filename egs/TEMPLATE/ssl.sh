#!/usr/bin/env bash
# Self-supervised pre-training (BEST-RQ, BiRQ) on ESPnet's SSL task: corpus -> encoder file for
# units_asr.sh --upstream rpq_ssl --upstream_ckpt exp/ssl_<tag>/encoder.pt --layer L.
#
# The second stage engine beside units_asr.sh, run from a recipe dir the same way.
# Stages (bounded by --stage/--stop_stage). Each done marker is a stamp of the settings behind it
# (utils/stamp.sh): a rerun skips work whose stamp matches, redoes statistics or an export made
# with other settings, and refuses to touch a pre-trained model made with other settings.
#   1  data preparation: local/data.sh (download or generate, then Kaldi data dirs)
#   2  ESPnet SSL collect stats (shape files of the training and validation audio)
#   3  pre-training: python -m rpq_units.ssl.train (ESPnet's SSL trainer and launcher, resumable)
#   4  export: python -m rpq_units.ssl.export -> exp/ssl_<tag>/encoder.pt
#   5  plots: masked-prediction accuracy and label perplexity per epoch -> exp/ssl_<tag>/curves.png;
#      each changing label stream against a quarter of its first epoch (the label floor) on stderr
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

. utils/engine_checks.sh  # expect_options
expect_options train_set valid_set ssl_config -- "$@"
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
# shellcheck source=utils/stamp.sh
. utils/stamp.sh
set_sig() {  # <set>: content hash of a data dir's utterance ids and segments
    if [ -f "${datadir}/$1/wav.scp" ]; then
        { cut -d' ' -f1 "${datadir}/$1/wav.scp"; [ ! -f "${datadir}/$1/segments" ] || cat "${datadir}/$1/segments"; } | sig
    else
        echo missing
    fi
}
st_ssl() {  # the settings behind the statistics and the pre-trained model
    { echo "train_set=${train_set}"; echo "data.${train_set}=$(set_sig "${train_set}")"
      echo "valid_set=${valid_set}"; echo "data.${valid_set}=$(set_sig "${valid_set}")"
      echo "ssl_config=$(file_sig "${ssl_config}")"; echo "ssl_args=${ssl_args}"; } | LC_ALL=C sort -u
}
redo_if_changed() {  # <marker> <stamp>: true if the work must be (re)done
    stamp_ok "$1" "$2" && return 1
    [ -f "$1" ] && log "${1%/*}: made with other settings ($(stamp_diff "$1" "$2")): redoing it"
    return 0
}

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
    stamp=$(st_ssl)
    if ! redo_if_changed "${stats}/.done" "${stamp}"; then
        log "statistics already collected in ${stats}"
    else
        rm -rf "${stats}"; mkdir -p "${stats}"
        # shellcheck disable=SC2086  # ssl_args is a word list
        ${train_cmd} "${stats}/collect_stats.log" python -m rpq_units.ssl.train \
            --collect_stats true --config "${ssl_config}" "${data_args[@]}" \
            --train_shape_file "${datadir}/${train_set}/wav.scp" \
            --valid_shape_file "${datadir}/${valid_set}/wav.scp" \
            --output_dir "${stats}" --ngpu 0 ${ssl_args}
        stamp_write "${stats}/.done" "${stamp}"
    fi
    stage_end
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    stage_begin 3 "pre-training (${ssl_config}, ${num_nodes} node(s) x ${ngpu} GPU(s)) -> ${sdir}"
    stamp=$(st_ssl)
    for m in "${sdir}/.done_train" "${sdir}/.stamp"; do
        if [ -f "${m}" ] && ! stamp_ok "${m}" "${stamp}"; then
            log "error: ${sdir} was pre-trained with other settings ($(stamp_diff "${m}" "${stamp}")); to keep it, rerun with a new --ssl_tag or --expdir, or remove ${sdir} to train it again"
            exit 1
        fi
    done
    stamp_ok "${stats}/.done" "${stamp}" || { log "error: ${stats} is missing or made with other settings: run stage 2 first"; exit 1; }
    if stamp_ok "${sdir}/.done_train" "${stamp}"; then
        log "${sdir} already trained"
    else
        stamp_write "${sdir}/.stamp" "${stamp}"  # an interrupted training resumes only with these settings
        train_args=(--config "${ssl_config}" "${data_args[@]}"
                    --train_shape_file "${stats}/train/speech_shape"
                    --valid_shape_file "${stats}/valid/speech_shape"
                    --resume true --output_dir "${sdir}")
        log "training ${sdir} (log: ${sdir}/train.log)"
        python utils/check_resume.py "${sdir}"  # a checkpoint cut short by a kill is not resumed
        # ESPnet's launcher, as its asr.sh: one process per GPU on one node, or one job per node
        # through cmd.sh's backend (Slurm) for --num_nodes > 1; it keeps earlier logs as train.N.log
        # shellcheck disable=SC2086  # ssl_args is a word list
        python -m espnet2.bin.launch --cmd "${cuda_cmd}" --log "${sdir}/train.log" \
            --ngpu "${ngpu}" --num_nodes "${num_nodes}" --init_file_prefix "${sdir}/.dist_init_" \
            --multiprocessing_distributed true -- \
            python -m rpq_units.ssl.train "${train_args[@]}" ${ssl_args}
        stamp_write "${sdir}/.done_train" "${stamp}"
    fi
    stage_end
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    stage_begin 4 "export ${sdir}/${export_model} -> ${sdir}/encoder.pt"
    stamp=$(printf '%s\n' "$(st_ssl)" "export_model=${export_model}" "model=$(file_sig "${sdir}/${export_model}")" | LC_ALL=C sort -u)
    if ! redo_if_changed "${sdir}/.done_export" "${stamp}"; then
        log "${sdir}/encoder.pt already exported"
    else
        ${train_cmd} "${sdir}/export.log" python -m rpq_units.ssl.export \
            --config "${sdir}/config.yaml" --model "${sdir}/${export_model}" --out "${sdir}/encoder.pt"
        stamp_write "${sdir}/.done_export" "${stamp}"
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
