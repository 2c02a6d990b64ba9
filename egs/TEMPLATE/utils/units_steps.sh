#!/usr/bin/env bash
# The unit steps of a recipe (units_asr.sh stages 2-5), usable outside the engine, e.g. to add
# units to an existing ESPnet recipe (asr2's unit text):
#
#     units_steps.sh [options] <step> [<step> ...]
#
#   feats       features of a seeded --portion of --data_dir -> --feats_dir (shards + feats.json;
#               with --format ark, kaldi_ark + feats.scp for ESPnet)
#   fit         a quantizer from --config on --feats_dir -> --units_dir/codebook.pt (+ .yaml,
#               .metrics.json, config.yaml) and its analysis (--units_dir/analysis)
#   encode      units of --data_dir with --units_dir/codebook.pt -> --out_dir/units (sorted Kaldi
#               text), --out_dir/text (the transcripts of the encoded utterances, same order) and
#               --out_dir/failed (utterances that could not be encoded; with --strict false)
#   token_list  the source token list of the codebook -> --units_dir/tokens.txt
#
# One data dir per call; "feats fit encode token_list" runs all four on it. For example, from an
# ESPnet recipe dir with this repository's egs/TEMPLATE/utils linked as units_utils:
#
#     units_utils/units_steps.sh --data_dir data/train --upstream wavlm_large --layer 21 \
#         --portion 0.1 --feats_dir dump/feats --config conf/units/rpq.yaml \
#         --units_dir exp/units_rpq --out_dir dump/units_rpq/train feats fit encode token_list
#     units_utils/units_steps.sh --data_dir data/test --units_dir exp/units_rpq \
#         --out_dir dump/units_rpq/test encode
#
# Jobs run through --cmd (a run_jobs.sh command line, as cmd.sh defines); --nj splits the
# feature dump and the encoding. Each step overwrites what it writes and nothing else; the
# recipes' engine records the settings behind each result (done markers) around these calls.
set -euo pipefail
export LC_ALL=C  # sorted Kaldi tables (comm, join)

utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=unit_defaults.sh
. "${utils}/unit_defaults.sh"  # the defaults this script shares with the engine, units_asr.sh
cmd="${utils}/run_jobs.sh --backend local"  # job runner for the parallel steps
fit_cmd=""              # job runner for fit / analyze / token_list (default: --cmd)
nj=${default_nj}        # parallel jobs (feats, encode); at most one per utterance
data_dir=""             # Kaldi data dir (wav.scp; text for encode's text output)
upstream=${default_upstream}  # s3prl upstream, wavlm_local/hubert_local, baseline_local or rpq_ssl
upstream_ckpt=""        # its checkpoint (config file for baseline_local)
layer=${default_layer}  # upstream layer (-1: last), or several joined by commas (1,3,7: side by side)
portion=${default_feats_portion}  # feats: portion of the utterances sampled (seeded)
seed=0                  # feats: seed of the sample
format=npy              # feats: npy shards (for fit) or ark (kaldi_ark for ESPnet, merged into
                        # <feats_dir>/feats.scp)
feats_dir=""            # feats: output; fit: input; encode: features to reuse for the utterances
                        # dumped there with the same settings (optional)
from_feats_dir=""       # feats: an npy feats dump of the same data dir whose utterances are copied
                        # instead of run through the upstream (used only with the same settings)
config=""               # fit: discretizer config (conf/units/<name>.yaml)
max_frames=${default_max_frames}  # fit: at most this many frames (0: all)
units_dir=""            # fit: output; encode, token_list: the codebook's dir
out_dir=""              # encode: output dir
strict=true             # encode: stop at an utterance that cannot be encoded (false: name it in
                        # <out_dir>/failed and go on)
device=${default_device}  # torch device
fwd_opts=""             # more dump_feats/encode options (--batch_size N, --autocast bf16)
label=""                # encode: how errors name the work (default: "<data_dir> with <units_dir>")

help_message="Usage: $0 [options] <step> [<step> ...]"
. "${utils}/parse_options.sh"

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (units_steps.sh) $*" >&2; }
die() { log "error: $*"; exit 1; }
need() { local v; for v in "$@"; do [ -n "${!v}" ] || { echo "$0: --${v} is required for this step (see --help)" >&2; exit 2; }; done; }
njobs() { local n; n=$(wc -l < "$1/wav.scp"); [ "${nj}" -lt "${n}" ] && n=${nj}; [ "${n}" -ge 1 ] || n=1; echo "${n}"; }
[ -n "${fit_cmd}" ] || fit_cmd=${cmd}
[ $# -ge 1 ] || { echo "${help_message}" >&2; exit 2; }
for step in "$@"; do
    case "${step}" in feats|fit|encode|token_list) ;; *) echo "$0: unknown step '${step}' (feats, fit, encode, token_list)" >&2; exit 2 ;; esac
done
case "${strict}" in true|false) ;; *) echo "$0: --strict must be true or false" >&2; exit 2 ;; esac
case "${format}" in npy|ark) ;; *) echo "$0: --format must be npy or ark" >&2; exit 2 ;; esac
case "${nj}" in ''|*[!0-9]*|0) echo "$0: --nj ${nj}: must be a positive integer" >&2; exit 2 ;; esac
case "${max_frames}" in ''|*[!0-9]*) echo "$0: --max_frames ${max_frames}: must be 0 (all) or a positive integer" >&2; exit 2 ;; esac
if ! awk -v p="${portion}" 'BEGIN { exit !(p ~ /^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/ && p > 0 && p <= 1) }'; then
    echo "$0: --portion ${portion}: must be a number in (0, 1]" >&2; exit 2
fi
ckpt_opt=()
[ -n "${upstream_ckpt}" ] && ckpt_opt=(--upstream_ckpt "${upstream_ckpt}")
# shellcheck disable=SC2206  # fwd_opts is a word list of options without paths
fwd=(${fwd_opts})
# A job's command: rank JOB - 1 of the job array (run_jobs.sh replaces JOB in it), the paths
# passed as arguments, never pasted into a shell string
# shellcheck disable=SC2016  # expanded by the job's shell, not here
job_rank() { echo 'exec "$0" "$@" --rank $((JOB - 1))'; }

step_feats() {
    need data_dir feats_dir
    [ -f "${data_dir}/wav.scp" ] || die "${data_dir}: no wav.scp"
    local n j parts=() from=(); n=$(njobs "${data_dir}")
    [ -n "${from_feats_dir}" ] && from=(--from_feats_dir "${from_feats_dir}")
    if ! ${cmd} --num_threads 1 JOB=1:"${n}" "${feats_dir}/log/dump_feats.JOB.log" \
        bash -c "$(job_rank)" rpq-units dump_feats --data_dir "${data_dir}" --out_dir "${feats_dir}" \
            --format "${format}" --upstream "${upstream}" "${ckpt_opt[@]}" --layer "${layer}" \
            --portion "${portion}" --seed "${seed}" --nshard "${n}" --device "${device}" "${fwd[@]}" \
            "${from[@]}"; then
        die "features of ${data_dir} failed: $("${utils}/job_error.sh" "${feats_dir}"/log/dump_feats.*.log) (logs: ${feats_dir}/log)"
    fi
    if [ "${format}" = ark ]; then
        for ((j = 0; j < n; j++)); do parts+=("${feats_dir}/feats.${j}.scp"); done
        "${utils}/merge_sorted.sh" "${feats_dir}/feats.scp" "${parts[@]}"
        rm -f "${parts[@]}"
    fi
}

step_fit() {
    need feats_dir config units_dir
    [ -f "${config}" ] || die "missing discretizer config ${config}"
    mkdir -p "${units_dir}"
    cp "${config}" "${units_dir}/config.yaml"
    local opts=()
    [ "${max_frames}" -gt 0 ] && opts+=(--max_frames "${max_frames}")
    ${fit_cmd} "${units_dir}/fit.log" rpq-units fit --feats_dir "${feats_dir}" --out "${units_dir}/codebook.pt" \
        --config "${units_dir}/config.yaml" "${opts[@]}" --device "${device}"
    ${fit_cmd} "${units_dir}/analyze.log" rpq-units analyze --codebook "${units_dir}/codebook.pt" \
        --feats_dir "${feats_dir}" --out_dir "${units_dir}/analysis"
}

step_encode() {
    need data_dir units_dir out_dir
    [ -f "${data_dir}/wav.scp" ] || die "${data_dir}: no wav.scp"
    local n j reuse=() strict_opt=() hint="" parts=()
    n=$(njobs "${data_dir}")
    [ -n "${feats_dir}" ] && reuse=(--feats_dir "${feats_dir}")
    if "${strict}"; then
        strict_opt=(--strict)
        hint="; --on_encode_error delete scores an utterance that cannot be encoded as a full deletion"
    fi
    mkdir -p "${out_dir}"
    if ! ${cmd} --num_threads 1 JOB=1:"${n}" "${out_dir}/log/encode.JOB.log" \
        bash -c "$(job_rank)" rpq-units encode --data_dir "${data_dir}" --codebook "${units_dir}/codebook.pt" \
            --out "${out_dir}/units.JOB" --nshard "${n}" --device "${device}" "${strict_opt[@]}" \
            "${fwd[@]}" "${reuse[@]}"; then
        die "encoding ${label:-${data_dir} with ${units_dir}} failed: $("${utils}/job_error.sh" "${out_dir}"/log/encode.*.log)" \
            "(logs: ${out_dir}/log${hint})"
    fi
    for ((j = 1; j <= n; j++)); do parts+=("${out_dir}/units.${j}"); done
    "${utils}/merge_sorted.sh" "${out_dir}/units" "${parts[@]}"
    rm -f "${parts[@]}"
    # utterances that could not be encoded (--strict false): named, counted, and left out of
    # training; references stay the full data dir text, so decoding scores each of them as a
    # full deletion
    comm -23 <(cut -d' ' -f1 "${data_dir}/wav.scp" | LC_ALL=C sort) <(cut -d' ' -f1 "${out_dir}/units") > "${out_dir}/failed"
    if [ -s "${out_dir}/failed" ]; then
        log "warning: ${data_dir}: $(wc -l < "${out_dir}/failed") of $(wc -l < "${data_dir}/wav.scp") utterances could not be encoded" \
            "(reasons in ${out_dir}/log), scored as full deletions: $(head -n 5 "${out_dir}/failed" | paste -sd' ')"
    fi
    if [ -f "${data_dir}/text" ]; then  # the target text of the encoded utterances, same order
        join -j1 <(cut -d' ' -f1 "${out_dir}/units") "${data_dir}/text" > "${out_dir}/text.tmp"
        mv "${out_dir}/text.tmp" "${out_dir}/text"
    fi
}

step_token_list() {
    need units_dir
    ${fit_cmd} "${units_dir}/token_list.log" rpq-units token_list --codebook "${units_dir}/codebook.pt" \
        --out "${units_dir}/tokens.txt"
}

for step in "$@"; do
    "step_${step}"
done
