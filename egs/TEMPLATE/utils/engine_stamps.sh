# shellcheck shell=bash disable=SC2154  # the options and paths are set by units_asr.sh
# The settings behind each result of units_asr.sh (its stamps, written and compared with
# utils/stamp.sh), sourced by it after utils/stamp.sh.
#
#   load_data_sigs              hash each set's data dir and the upstream checkpoint (once a run)
#   st_<result> [args]          the "key=value" settings of one result, those of its inputs
#                               included (--show_stamp <result> prints them)
#   stamp_of st_<result> [args] the sorted, unique settings: what a done marker holds
#   redo_if_changed <marker> <stamp>          true if the work must be (re)done
#   require <marker> <stamp> <stage>          stop unless an input is there with these settings
#   keep_trained <dir> <marker> <stamp>       stop before a model made with other settings is touched

declare -A data_sig=()
ckpt_sig=none
load_data_sigs() {  # content hash of each set's utterance ids, transcripts and segments, and of
    local s d       # the upstream checkpoint (hashed once per run: it may be gigabytes)
    ckpt_sig=$(file_sig "${upstream_ckpt}")
    for s in $(all_sets); do
        d=${datadir}/${s}
        if [ -f "${d}/wav.scp" ] && [ -f "${d}/text" ]; then
            data_sig[${s}]=$({ cut -d' ' -f1 "${d}/wav.scp"; cat "${d}/text"
                               [ ! -f "${d}/segments" ] || cat "${d}/segments"; } | sig)
        else
            data_sig[${s}]=missing
        fi
    done
}
# Each st_* prints the "key=value" settings of one result, those of its inputs included.
st_fwd() {  # the forward options, recorded when not the defaults (older stamps stay valid)
    [ "${feats_autocast}" = none ] || echo "feats_autocast=${feats_autocast}"
    [ "${feats_batch_size}" = 1 ] || echo "feats_batch_size=${feats_batch_size}"
}
st_feats() {
    echo "train_set=${train_set}"; echo "data.${train_set}=${data_sig[${train_set}]}"
    echo "upstream=${upstream}"; echo "upstream_ckpt=${ckpt_sig}"
    echo "layer=${layer}"; echo "feats_portion=${feats_portion}"; st_fwd
}
st_units() {  # <discretizer>
    st_feats; echo "units_config.$1=$(file_sig "${units_conf_dir}/$1.yaml")"; echo "max_frames=${max_frames}"
}
st_encode() {  # <discretizer> <set>; --on_encode_error when not the default (older stamps stay valid)
    st_units "$1"; echo "data.$2=${data_sig[$2]}"
    [ "${on_encode_error}" = fail ] || echo "on_encode_error=${on_encode_error}"
}
st_src() {  # <discretizer> <set>: a set's source text (--src_case; the encoded units as they are for ts)
    st_encode "$1" "$2"; [ "${src_case}" = ts ] || echo "src_case=${src_case}"
}
st_spm() {  # <discretizer>: the units' sentencepiece model
    st_src "$1" "${train_set}"; echo "src_nbpe=${src_nbpe}"; echo "src_bpemode=${src_bpemode}"
}
st_srcopts() {  # the source text's settings, when not the default (older stamps stay valid)
    [ "${src_case}" = ts ] || echo "src_case=${src_case}"
    [ "${src_token_type}" = word ] || { echo "src_token_type=${src_token_type}"; echo "src_nbpe=${src_nbpe}"; echo "src_bpemode=${src_bpemode}"; }
}
st_tokens() {
    echo "train_set=${train_set}"; echo "data.${train_set}=${data_sig[${train_set}]}"
    echo "token_type=${token_type}"; echo "nlsyms_txt=$(file_sig "${nlsyms_txt}")"
    if [ "${token_type}" = bpe ]; then echo "nbpe=${nbpe}"; echo "bpemode=${bpemode}"; fi
}
st_lm() {
    st_tokens; echo "valid_set=${valid_set}"; echo "data.${valid_set}=${data_sig[${valid_set}]}"
    echo "lm_config=$(file_sig "${lm_config}")"; echo "lm_args=${lm_args}"
}
st_stats() {  # <discretizer>
    st_encode "$1" "${train_set}"; st_encode "$1" "${valid_set}"; st_tokens
    echo "valid_set=${valid_set}"; echo "asr_config=$(file_sig "${asr_config}")"; st_srcopts
}
st_train() { st_stats "$1"; echo "asr_args=${asr_args}"; }  # <discretizer>
st_decode() {  # <discretizer> <set> <nolm|lm>
    st_train "$1"; st_encode "$1" "$2"
    echo "inference_config=$(file_sig "${inference_config}")"; echo "inference_args=${inference_args}"
    echo "inference_model=${inference_model}"
    if [ "$3" = lm ]; then st_lm; echo "lm_weight=${lm_weight}"; fi
}
st_cfeats() {  # <set>: the frozen features of one set (continuous reference, stage 11)
    echo "upstream=${upstream}"; echo "upstream_ckpt=${ckpt_sig}"; echo "layer=${layer}"
    echo "data.$1=${data_sig[$1]}"; st_fwd
}
st_ctrain() {
    st_cfeats "${train_set}"; st_cfeats "${valid_set}"; st_tokens; echo "valid_set=${valid_set}"
    echo "continuous_config=$(file_sig "${continuous_config}")"; echo "asr_args=${asr_args}"
}
st_cdecode() {  # <set>
    st_ctrain; st_cfeats "$1"
    echo "inference_config=$(file_sig "${inference_config}")"; echo "inference_args=${inference_args}"
    echo "inference_model=${inference_model}"
}
st_vocoder() { st_cfeats "${train_set}"; echo "vocoder_config=$(file_sig "${vocoder_config}")"; echo "vocoder_args=${vocoder_args}"; }
st_resynth() {  # <set> <vocoder>: every discretizer's units of the set, the vocoder, the options
    local d
    for d in ${discretizers}; do st_encode "${d}" "$1"; done
    echo "discretizers=${discretizers}"; echo "vocoder=$2"; echo "resynth_utts=${resynth_utts}"
    echo "resynth_args=${resynth_args}"
    if [ "$2" = train ]; then st_vocoder; fi
    # the intelligibility columns: Whisper, or the continuous model (when trained) and how it decodes
    echo "resynth_judge=${resynth_judge}"
    [ "${resynth_judge}" = whisper ] && return 0
    local m=${contdir}/.done_train
    if [ -f "${m}" ]; then echo "asr_model=$(file_sig "${m}")"; else echo "asr_model=none"; fi
    echo "asr_decode=$(file_sig "${inference_config}") ${inference_args}"
}
stamp_of() { "$@" | LC_ALL=C sort -u; }  # stamp_of st_<x> [args]: the sorted, unique settings
redo_if_changed() {  # redo_if_changed <marker> <stamp>: true if the work must be (re)done
    stamp_ok "$1" "$2" && return 1
    [ -f "$1" ] && log "${1%/*}: made with other settings ($(stamp_diff "$1" "$2")): redoing it"
    return 0
}
require() {  # require <marker> <stamp> <stage>: stop unless an input is there with the current settings
    stamp_ok "$1" "$2" && return 0
    if [ -f "$1" ]; then
        log "error: ${1%/*} was made with other settings ($(stamp_diff "$1" "$2")): run stage $3 again first"
    else
        log "error: ${1%/*} is not finished: run stage $3 first"
    fi
    exit 1
}
keep_trained() {  # keep_trained <dir> <done marker> <stamp>: stop before a model made with other settings is touched
    local dir=$1 stamp=$3 m
    for m in "$2" "${dir}/.stamp"; do
        if [ -f "${m}" ] && ! stamp_ok "${m}" "${stamp}"; then
            log "error: ${dir} was $([ "${m}" = "$2" ] && echo trained || echo being trained) with other settings ($(stamp_diff "${m}" "${stamp}")); to keep it, rerun with a new --expdir (and --dumpdir), or remove ${dir} to train it again"
            exit 1
        fi
    done
}
