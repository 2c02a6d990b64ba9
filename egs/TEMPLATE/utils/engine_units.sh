# shellcheck shell=bash disable=SC2154  # the options and paths are set by units_asr.sh
# The units' side of units_asr.sh (stages 2-5 and 11), sourced by it: the unit steps of
# utils/units_steps.sh with this run's options, the shared feature dumps, and the source text
# the models read.
#
#   steps <step> [options]      one unit step with this run's upstream, device and jobs
#   dump_set_feats <set>        a set's features dumped once for every discretizer
#   source_text <discretizer>   each set's source text and, for bpe, the units' sentencepiece model
#   continuous_feats <set> <dir>  a set's features and text for the continuous reference (stage 11)

steps() {  # steps <step> [options]: one unit step (utils/units_steps.sh) with this run's upstream and jobs
    local step=$1 gpu=0; shift
    case "${device}" in cuda*) gpu=1 ;; esac  # its jobs ask the job runner for a GPU (Slurm: --gres)
    utils/units_steps.sh --cmd "${decode_cmd} --gpu ${gpu}" --fit_cmd "${train_cmd} --gpu ${gpu}" \
        --nj "${nj}" --device "${device}" \
        --upstream "${upstream}" --upstream_ckpt "${upstream_ckpt}" --layer "${layer}" \
        --fwd_opts "${fwd_opts}" "$@" "${step}"
}
dump_set_feats() {  # dump_set_feats <set>: every utterance's features of a set other than the
    local s=$1 fdir stamp    # training set, dumped once (npy) for every discretizer's encoding
    fdir=$(set_featdir "${s}")  # (stage 4) and the continuous reference's ark (stage 11); false
    stamp=$(stamp_of st_cfeats "${s}")  # when there are none to share
    redo_if_changed "${fdir}/.done" "${stamp}" || return 0
    rm -rf "${fdir}"
    stamp_write "${fdir}/.stamp" "${stamp}"
    log "dumping ${s} features once for every discretizer -> ${fdir}"
    if ! steps feats --data_dir "${datadir}/${s}" --portion 1 --seed 0 --feats_dir "${fdir}"; then
        # e.g. every utterance of a shard unreadable: the encoding meets them itself and fails
        # or leaves them out as --on_encode_error says
        log "warning: no features of ${s} to share (logs: ${fdir}/log): each discretizer encodes it from the audio"
        rm -rf "${fdir}"
        return 1
    fi
    stamp_write "${fdir}/.done" "${stamp}"
}

source_text() {  # source_text <discretizer>: each set's source text and, for bpe, the units' sentencepiece model
    local d=$1 s f spm stamp chars=()
    [ -n "${src_tag}" ] || return 0  # the encoded units are the source text
    [ "${src_token_type}" = word ] || chars=(--chars)
    for s in $(all_sets); do
        f=$(srcfile_of "${d}" "${s}"); stamp=$(stamp_of st_src "${d}" "${s}")
        require "$(unitsdump_of "${d}" "${s}")/.done" "$(stamp_of st_encode "${d}" "${s}")" 4
        stamp_ok "${f}.done" "${stamp}" && continue
        rm -f "${f}.done"
        ${train_cmd} "${f}.log" rpq-units src_text --units "$(unitsdump_of "${d}" "${s}")/units" --out "${f}" \
            --case "${src_case}" --codebook "$(unitsdir_of "${d}")/codebook.pt" "${chars[@]}"
        stamp_write "${f}.done" "${stamp}"
    done
    [ "${src_token_type}" = bpe ] || return 0
    spm=$(spmdir_of "${d}"); stamp=$(stamp_of st_spm "${d}")
    redo_if_changed "${spm}/.done" "${stamp}" || return 0
    rm -rf "${spm}"; mkdir -p "${spm}"
    cut -d' ' -f2- "$(srcfile_of "${d}" "${train_set}")" > "${spm}/train.txt"
    log "sentencepiece (${src_bpemode}, ${src_nbpe} pieces) over ${d}'s units -> ${spm}"
    # a unit line is one long word: no sentence length limit, every unit a character of the
    # vocabulary, at most --src_nbpe pieces (fewer where the training units hold fewer)
    ${train_cmd} "${spm}/spm_train.log" python utils/spm_train.py \
        --input="${spm}/train.txt" --vocab_size="${src_nbpe}" --model_type="${src_bpemode}" \
        --model_prefix="${spm}/bpe" --character_coverage=1.0 --input_sentence_size=100000000 \
        --max_sentence_length=1000000 --split_by_whitespace=false --max_sentencepiece_length=64 \
        --hard_vocab_limit=false
    ${train_cmd} "${spm}/tokenize.log" python -m espnet2.bin.tokenize_text \
        --token_type bpe --bpemodel "${spm}/bpe.model" --input "${spm}/train.txt" --output "${spm}/tokens.txt.tmp" \
        --field 1- --write_vocabulary true \
        --add_symbol "<blank>:0" --add_symbol "<unk>:1" --add_symbol "<sos/eos>:-1"
    mv "${spm}/tokens.txt.tmp" "${spm}/tokens.txt"
    stamp_write "${spm}/.done" "${stamp}"
}

continuous_feats() {  # continuous_feats <set> <dir>: the frozen upstream's features of a set for
    local s=$1 fdir=$2 stamp from=()  # the continuous reference (stage 11), read by ESPnet as
    stamp=$(stamp_of st_cfeats "${s}")  # kaldi_ark, and its target text in the same order
    redo_if_changed "${fdir}/.done" "${stamp}" || return 0
    rm -rf "${fdir}"
    # the utterances the npy features of stages 2 and 4 hold are copied from there
    if [ "${s}" = "${train_set}" ]; then
        stamp_ok "${featdir}/.done" "$(stamp_of st_feats)" && from=(--from_feats_dir "${featdir}")
    elif stamp_ok "$(set_featdir "${s}")/.done" "$(stamp_of st_cfeats "${s}")"; then
        from=(--from_feats_dir "$(set_featdir "${s}")")
    fi
    log "dumping ${s} features -> ${fdir}/feats.scp${from:+ (from ${from[1]})}"
    steps feats --data_dir "${datadir}/${s}" --portion 1 --format ark --feats_dir "${fdir}" "${from[@]}"
    # the target text, restricted to the utterances with features, in the same order
    join -j1 <(cut -d' ' -f1 "${fdir}/feats.scp") "${datadir}/${s}/text" > "${fdir}/text.tmp"
    mv "${fdir}/text.tmp" "${fdir}/text"
    stamp_write "${fdir}/.done" "${stamp}"
}
