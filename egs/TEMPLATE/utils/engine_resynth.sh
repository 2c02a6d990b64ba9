# shellcheck shell=bash disable=SC2154  # the options and paths are set by units_asr.sh
# Resynthesis and the demo page of units_asr.sh (stage 13), sourced by it.
#
#   choose_vocoder              sets voc (griffinlim or a vocoder file) and vkind (what the
#                               resynthesis stamp records); trains a HiFi-GAN when --vocoder says so
#   resynthesize <set> <dir>    every discretizer's units of <set> -> speech with ${voc}, scored
#   demo_page <resynth dir> <page dir>   the static demo page of a resynthesis

choose_vocoder() {  # sets voc and vkind from --vocoder (auto: by the upstream's kind)
    local vdir stamp voc_opts=() _dev
    voc=${vocoder}
    if [ "${voc}" = auto ]; then
        case "${upstream}" in baseline_local|mel) voc=griffinlim ;; *) voc=train ;; esac
    fi
    # shellcheck disable=SC2034  # vkind is read by the engine (the resynthesis stamp)
    vkind=${voc}  # griffinlim, train, or a given vocoder file (by its content)
    # shellcheck disable=SC2034
    case "${voc}" in griffinlim|train) ;; *) vkind="file:$(file_sig "${voc}")" ;; esac
    [ "${voc}" = train ] || return 0
    vdir=${expdir}/vocoder_${feat_tag}
    voc=${vdir}/vocoder.pt
    stamp=$(stamp_of st_vocoder)
    redo_if_changed "${vdir}/.done" "${stamp}" || return 0
    mkdir -p "${vdir}"
    cp "${vocoder_config}" "${vdir}/config.yaml"
    [ -n "${upstream_ckpt}" ] && voc_opts=(--upstream_ckpt "${upstream_ckpt}")
    # stage 2's features of the training set where it has them (and the same forward)
    stamp_ok "${featdir}/.done" "$(stamp_of st_feats)" && voc_opts+=(--feats_dir "${featdir}")
    log "training a HiFi-GAN on ${train_set} features -> ${voc} (log: ${vdir}/train.log)"
    _dev=${device}; [ "${ngpu}" -gt 0 ] && _dev=cuda
    # shellcheck disable=SC2086  # vocoder_args is a word list
    ${cuda_cmd} --gpu "${ngpu}" "${vdir}/train.log" rpq-units train_vocoder \
        --data_dir "${datadir}/${train_set}" --config "${vdir}/config.yaml" --out "${voc}" \
        --upstream "${upstream}" "${voc_opts[@]}" --layer "${layer}" --device "${_dev}" ${vocoder_args}
    stamp_write "${vdir}/.done" "${stamp}"
}

resynthesize() {  # resynthesize <set> <dir>: every discretizer's units of the set -> speech with
    local rset=$1 rdir=$2 d names=() codebooks=() unitfiles=() asr_opts=()  # ${voc}, scored in <dir>
    for d in ${discretizers}; do
        names+=("${d}")
        codebooks+=("$(unitsdir_of "${d}")/codebook.pt")
        unitfiles+=("$(unitsdump_of "${d}" "${rset}")/units")
    done
    if [ "${resynth_judge}" = whisper ]; then
        asr_opts=(--judge whisper)
    elif [ -f "${contdir}/.done_train" ]; then
        asr_opts=(--asr_dir "${contdir}" --asr_decode_config "${inference_config}"
                  "--asr_decode_args=${inference_args}")
    else
        log "no continuous model in ${contdir} (--run_continuous true, stage 11): WER/dWER of the resynthesized speech skipped"
    fi
    log "resynthesizing $([ "${resynth_utts}" -gt 0 ] && echo "${resynth_utts}" || echo all) utterances of ${rset} (${voc}; log: ${rdir}/resynth.log)"
    mkdir -p "${rdir}"
    # shellcheck disable=SC2086  # resynth_args is a word list
    ${train_cmd} --num_threads 1 "${rdir}/resynth.log" rpq-units resynth \
        --data_dir "${datadir}/${rset}" --names "${names[@]}" --codebooks "${codebooks[@]}" \
        --units "${unitfiles[@]}" --out_dir "${rdir}" --vocoder "${voc}" \
        --stats_data_dir "${datadir}/${train_set}" --max_utts "${resynth_utts}" \
        --score_unit "${score_unit}" --device "${device}" "${asr_opts[@]}" ${resynth_args}
}

demo_page() {  # demo_page <resynth dir> <page dir>: the resynthesis's demo page, with --page_utts
    local d h heatmaps=()  # audio players, the results table and a correlation heatmap
    for d in ${discretizers}; do
        h=$(unitsdir_of "${d}")/analysis/dim_correlation.png
        [ -f "${h}" ] && { heatmaps+=("${h}"); break; }  # the features' correlation: one suffices
    done
    rpq-units demo_page --resynth_dir "$1" --page_dir "$2" --num_utts "${page_utts}" \
        --results_md "${results}" --heatmaps "${heatmaps[@]}"
}
