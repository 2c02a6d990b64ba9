# shellcheck shell=bash disable=SC2154  # the options and paths are set by units_asr.sh
# Scoring and the results table of units_asr.sh (stages 10-12), sourced by it.
#
#   current_decodes             the decodes made with the current settings, one a line
#   score_decodes <decode dir> <test set> ...   the one scoring path of every model
#   result_rows                 the current rows (kept per feature tag) and those of --results_tags
#                               -> <expdir>/results_rows.tsv, the rows of the table

current_decodes() {  # "<decode dir>\t<model>\t<variant>\t<set>" of every decode made with the current settings
    local d s v ddir
    for d in ${discretizers}; do
        for s in ${test_sets}; do
            for v in $(decode_variants); do
                ddir=$(asrdir_of "${d}")/decode_${s}_${v}
                if stamp_ok "${ddir}/.done" "$(stamp_of st_decode "${d}" "${s}" "${v}")"; then
                    printf '%s\t%s\t%s\t%s\n' "${ddir}" "${d}" "${v}" "${s}"
                fi
            done
        done
    done
    if "${run_continuous}"; then
        for s in ${test_sets}; do
            ddir=${contdir}/decode_${s}_nolm
            # the continuous reference's decodes made with the current settings (stage 11 redoes
            # the others)
            if stamp_ok "${ddir}/.done" "$(stamp_of st_cdecode "${s}")"; then
                printf '%s\tcontinuous\tnolm\t%s\n' "${ddir}" "${s}"
            fi
        done
    fi
    true
}
score_decodes() {  # score_decodes <decode dir> <test set> ...: the one scoring path of every model, discrete or continuous
    local ddir set unit sym_opts=() ddirs=()
    [ -n "${nlsyms_txt}" ] && sym_opts=(--remove_symbols "${nlsyms_txt}")  # [lang] tags are not characters
    while [ $# -gt 0 ]; do
        ddir=$1; set=$2; shift 2  # the set as the caller knows it, not read back from the dir's name
        ddirs+=("${ddir}")
        unit=${score_unit}
        [[ " ${char_test_sets} " == *" ${set} "* ]] && unit=char
        python -m rpq_units.evaluation.scoring score --ref "${ddir}/ref" --hyp "${ddir}/hyp" \
            --unit "${unit}" "${sym_opts[@]}" --out "${ddir}/result.txt"
    done
    if [ -x local/score.sh ]; then
        # the recipe's own breakdown (e.g. CER per language, LID) beside result.txt, which it
        # leaves alone: result.txt has one writer, the line above
        # shellcheck disable=SC2086  # local_score_opts is a word list
        local/score.sh --datadir "${datadir}" ${local_score_opts} "${expdir}"
    fi
    for ddir in "${ddirs[@]}"; do
        log "$(head -n 1 "${ddir}/result.txt") ${ddir}"
    done
}

result_rows() {  # result_rows: <expdir>/results_rows.tsv, the rows of stage 12's table
    local rowdir rowtag ddir d v s conf t mdir res msig marker
    # the rows: the current discretizers' decodes whose stamps match the current settings, each
    # with a signature of its done marker, kept per feature tag and source text (the model dirs'
    # suffix: whisper_l4, whisper_l4_rm, ...) for later tables (--results_tags)
    rowdir=${expdir}/results_rows
    rowtag=${feat_tag}${src_tag}
    mkdir -p "${rowdir}"
    current_decodes | while IFS=$'\t' read -r ddir d v s; do
        if [ "${d}" = continuous ]; then
            conf=${continuous_config}
        else
            conf="${units_conf_dir}/${d}.yaml ${asr_config}"
            if [ "${v}" = lm ]; then conf="${conf} ${lm_config}"; fi
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "${ddir%/*}" "${v}" "${s}" "${ddir}/result.txt" "${conf}" \
            "$(sig < "${ddir}/.done")"
    done > "${rowdir}/${rowtag}.tsv.tmp"
    mv "${rowdir}/${rowtag}.tsv.tmp" "${rowdir}/${rowtag}.tsv"
    cut -f1-5 "${rowdir}/${rowtag}.tsv" > "${expdir}/results_rows.tsv"
    for t in ${results_tags}; do
        [ "${t}" = "${rowtag}" ] && continue
        if [ ! -f "${rowdir}/${t}.tsv" ]; then
            log "error: --results_tags: no rows of '${t}' in ${rowdir} (run stage 12 with that feature tag, and --src_case / --src_token_type for a suffix, first)"
            exit 1
        fi
        # a row of another tag joins only while its decode is the one that tag's table showed
        while IFS=$'\t' read -r mdir v s res conf msig; do
            marker=${res%/*}/.done
            if [ -f "${marker}" ] && [ "$(sig < "${marker}")" = "${msig}" ]; then
                printf '%s\t%s\t%s\t%s\t%s\n' "${mdir}" "${v}" "${s}" "${res}" "${conf}"
            else
                log "warning: ${res%/*} (--results_tags ${t}) was redone or removed since stage 12 of ${t} tabled it: left out (rerun stage 12 of ${t})"
            fi
        done < "${rowdir}/${t}.tsv" >> "${expdir}/results_rows.tsv"
    done
}
