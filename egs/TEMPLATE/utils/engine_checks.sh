# shellcheck shell=bash disable=SC2154  # the options and paths are set by units_asr.sh
# What units_asr.sh checks before any stage runs, sourced by it: its options (check_options) and
# that no other run writes the same dirs (take_lock).
#
#   check_options "$@"      every option value, checked before any stage acts on it (a usage
#                           error: one line, exit 2), numbers rewritten one way
#   expect_options <name>... -- "$@"   no argument left over and each named option given (also
#                           ssl.sh's first check)
#   take_lock <dir>         hold <dir>/.lock for this run and the jobs it starts, or stop

usage_error() { echo "$0: $*" >&2; exit 2; }
number() {  # number <value>: the value written one way (1.0 for 1, 0.5 for 0.50), or false
    [[ "$1" =~ ^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] || return 1
    awk -v x="$1" 'BEGIN { s = sprintf("%.10g", x + 0); if (s !~ /[.e]/) s = s ".0"; print s }'
}

expect_options() {  # expect_options <name>... -- "$@": the arguments parse_options.sh left
    local names=()     # (none expected) and the options that must not be empty
    while [ $# -gt 0 ] && [ "$1" != -- ]; do names+=("$1"); shift; done
    shift
    if [ $# -ne 0 ]; then
        echo "$0: unexpected arguments: $* (see --help)" >&2
        exit 2
    fi
    local v
    for v in "${names[@]}"; do
        if [ -z "${!v}" ]; then
            echo "$0: --${v} is required (see --help)" >&2
            exit 2
        fi
    done
}

check_options() {  # check_options "$@": the options after parse_options.sh, each checked (and
    expect_options train_set valid_set test_sets -- "$@"  # numbers rewritten)
    case "${token_type}" in char|bpe) ;; *) echo "$0: --token_type must be char or bpe" >&2; exit 2 ;; esac
    case "${score_unit}" in word|char) ;; *) echo "$0: --score_unit must be word or char" >&2; exit 2 ;; esac
    case "${train_jobs}" in ''|*[!0-9]*|0) echo "$0: --train_jobs must be a positive integer" >&2; exit 2 ;; esac
    case "${feats_autocast}" in none|bf16|fp16) ;; *) echo "$0: --feats_autocast must be none, bf16 or fp16" >&2; exit 2 ;; esac
    case "${feats_batch_size}" in ''|*[!0-9]*|0) echo "$0: --feats_batch_size must be a positive integer" >&2; exit 2 ;; esac
    case "${on_encode_error}" in fail|delete) ;; *) echo "$0: --on_encode_error must be fail or delete" >&2; exit 2 ;; esac
    case "${resynth_judge}" in espnet|whisper) ;; *) echo "$0: --resynth_judge must be espnet or whisper" >&2; exit 2 ;; esac
    # Every other value, checked here before any stage acts on it (nothing is removed for settings
    # that are not valid), and numbers written one way (0.50 and 0.5 are the same stamp)
    for v in nj inference_nj nbpe src_nbpe text_fold_length src_fold_length; do
        if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "$((10#${!v}))" -eq 0 ]; then
            usage_error "--${v} ${!v}: must be a positive integer"
        fi
        printf -v "${v}" '%d' "$((10#${!v}))"
    done
    for v in ngpu max_frames resynth_utts page_utts lock_wait; do
        [[ "${!v}" =~ ^[0-9]+$ ]] || usage_error "--${v} ${!v}: must be 0 or a positive integer"
        printf -v "${v}" '%d' "$((10#${!v}))"
    done
    [[ "${layer}" =~ ^-?[0-9]+(,-?[0-9]+)*$ ]] \
        || usage_error "--layer ${layer}: must be an integer (-1: the last layer), or several joined by commas (1,3,7: each layer its own discretizer, their units side by side)"
    if ! _v=$(number "${feats_portion}") || ! awk -v p="${_v}" 'BEGIN { exit !(p > 0 && p <= 1) }'; then
        usage_error "--feats_portion ${feats_portion}: must be a number in (0, 1]"
    fi
    feats_portion=${_v}
    _v=$(number "${lm_weight}") || usage_error "--lm_weight ${lm_weight}: must be a number"
    lm_weight=${_v}
    case "${reuse_set_feats}" in true|false) ;; *) usage_error "--reuse_set_feats ${reuse_set_feats}: must be true or false" ;; esac
    case "${bpemode}" in unigram|bpe|char|word) ;; *) usage_error "--bpemode ${bpemode}: must be unigram, bpe, char or word" ;; esac
    case "${src_case}" in ts|rm) ;; *) usage_error "--src_case ${src_case}: must be ts (units as encoded) or rm (repeated frames removed)" ;; esac
    case "${src_token_type}" in word|bpe) ;; *) usage_error "--src_token_type ${src_token_type}: must be word or bpe" ;; esac
    case "${src_bpemode}" in unigram|bpe) ;; *) usage_error "--src_bpemode ${src_bpemode}: must be unigram or bpe" ;; esac
    if [ "${stop_stage}" -ge 3 ]; then  # from stage 3 on, each discretizer's config is fitted, stamped, tabled
        for _d in ${discretizers}; do
            [ -f "${units_conf_dir}/${_d}.yaml" ] && continue
            _have=""
            for _f in "${units_conf_dir}"/*.yaml; do
                if [ -f "${_f}" ]; then _f=${_f##*/}; _have+=" ${_f%.yaml}"; fi
            done
            usage_error "--discretizers: no config ${units_conf_dir}/${_d}.yaml for '${_d}' (configs in ${units_conf_dir}:${_have:- none}); add it, or name one of those"
        done
    fi
    case "${device}" in cpu|cuda|cuda:[0-9]*) ;; *) usage_error "--device ${device}: must be cpu, cuda or cuda:<index>" ;; esac
    # a GPU is needed only where the device is used: stages 2-4, 11 (with --run_continuous true) and
    # 13, and not by --show_stamp (a GPU recipe's stage 12 or stamps run on a CPU login node)
    _uses_device=false
    for _s in 2 3 4 11 13; do
        [ "${_s}" -eq 11 ] && [ "${run_continuous}" != true ] && continue
        [ "${stage}" -le "${_s}" ] && [ "${stop_stage}" -ge "${_s}" ] && _uses_device=true
    done
    if [[ "${device}" == cuda* ]] && "${_uses_device}" && [ -z "${show_stamp}" ] \
        && ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        usage_error "--device ${device}: PyTorch sees no CUDA GPU on this machine: use --device cpu"
    fi
}

# ---- one run at a time per experiment ----
# Every run that may write takes a lock on --expdir and --dumpdir (and --datadir when stage 1
# runs): flock(1) on <dir>/.lock, held until this script and every job it started have ended
# (the jobs inherit it), released by the kernel however they end, kill -9 included. A second run
# on the same dirs stops with one line naming the run that holds them, or with --lock_wait N
# waits up to N seconds. The dirs may be on a shared file system (NFS, as for Slurm) that
# supports locks; on one that does not, the run stops and says so.
take_lock() {  # take_lock <dir>
    local dir=$1 fd rc real
    mkdir -p "${dir}"
    real=$(cd "${dir}" && pwd -P)
    [[ " ${_locked:-} " == *" ${real} "* ]] && return 0  # the same dir under two options
    exec {fd}>>"${dir}/.lock"
    rc=0
    if [ "${lock_wait}" -gt 0 ]; then
        flock -n -E 75 "${fd}" || {
            log "${dir} is in use by another run ($(cat "${dir}/.lock")): waiting up to ${lock_wait} s"
            flock -w "${lock_wait}" -E 75 "${fd}"; } || rc=$?
    else
        flock -n -E 75 "${fd}" || rc=$?
    fi
    if [ "${rc}" -eq 75 ]; then
        log "error: ${dir} is in use by another run ($(cat "${dir}/.lock")); wait for it to end (--lock_wait <seconds> waits), or use another --expdir and --dumpdir"
        exit 1
    elif [ "${rc}" -ne 0 ]; then
        log "error: cannot lock ${dir}/.lock (exit ${rc}): its file system may not support locks (flock); use a --expdir and --dumpdir on one that does"
        exit 1
    fi
    printf 'pid %s on %s since %s: %s\n' "$$" "${HOSTNAME:-$(uname -n)}" "$(date '+%Y-%m-%dT%H:%M:%S')" "${run_args% }" > "${dir}/.lock"
    _locked="${_locked:-} ${real}"
}
