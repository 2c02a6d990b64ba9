# shellcheck shell=bash disable=SC2154  # the options and paths are set by units_asr.sh
# The ESPnet side of units_asr.sh (stages 5-9 and 11), sourced by it: the target token list,
# the statistics pass, training that resumes, and decoding. Every ESPnet model (the LM, the
# discrete models, the continuous reference) goes through the same collect_stats, espnet_train
# and queue_decode / run_decodes; tok_opts (the target tokenizer's arguments) is set by the engine.
#
#   target_token_list <stamp>           the target text's token list (and bpe model) -> tokendir
#   collect_stats <bin> <stats> <config> <train table> <valid table> <arguments>...
#   shape_opts_of <stats> <shape> <fold> [<shape> <fold>]...   sets shape_opts
#   espnet_train <bin> <dir> <config> <more args> [<job options>] -- <arguments>...
#   mt_data_args <discretizer>          sets data_args: the discrete model's target and source text
#   train_one <discretizer>             one discrete model's training (stage 8)
#   queue_decode / run_decodes          decodes split into --inference_nj processes

target_token_list() {  # target_token_list <stamp>: the target text's token list (and bpe model) -> tokendir
    local stamp=$1 nlsyms_opts=() spm_opts=() bpe_opts=()
    rm -rf "${tokendir}"
    stamp_write "${tokendir}/.stamp" "${stamp}"
    cut -d' ' -f2- "${datadir}/${train_set}/text" > "${tokendir}/train.txt"
    if [ -n "${nlsyms_txt}" ]; then
        nlsyms_opts=(--non_linguistic_symbols "${nlsyms_txt}")
        [ -s "${nlsyms_txt}" ] && spm_opts=(--user_defined_symbols="$(paste -sd, "${nlsyms_txt}")")
    fi
    if [ "${token_type}" = bpe ]; then
        ${train_cmd} "${tokendir}/spm_train.log" python utils/spm_train.py \
            --input="${tokendir}/train.txt" --vocab_size="${nbpe}" --model_type="${bpemode}" \
            --model_prefix="${tokendir}/bpe" --character_coverage=1.0 --input_sentence_size=100000000 \
            "${spm_opts[@]}"
        bpe_opts=(--bpemodel "${tokendir}/bpe.model")
    fi
    ${train_cmd} "${tokendir}/tokenize.log" python -m espnet2.bin.tokenize_text \
        --token_type "${token_type}" --input "${tokendir}/train.txt" --output "${tokendir}/tokens.txt.tmp" \
        "${bpe_opts[@]}" "${nlsyms_opts[@]}" --field 1- --write_vocabulary true \
        --add_symbol "<blank>:0" --add_symbol "<unk>:1" --add_symbol "<sos/eos>:-1"
    mv "${tokendir}/tokens.txt.tmp" "${tokendir}/tokens.txt"
    stamp_write "${tokendir}/.done" "${stamp}"
}

vocab_shapes() {  # vocab_shapes <stats dir> <name> <token list> <token type>: ESPnet's shape files
    local n part  # of collect stats, "<uttid> <length>", with the vocabulary size added as ESPnet's
    n=$(wc -l < "$3")  # recipes do: <name>_shape.<token type> for train and valid
    for part in train valid; do
        awk -v N="${n}" '{ print $0 "," N }' "$1/${part}/$2_shape" > "$1/${part}/$2_shape.$4"
    done
}

# collect_stats <espnet2.bin module> <stats dir> <config> <train table> <valid table> <arguments>...:
# ESPnet's statistics pass over the utterances of the two tables (keyed by their first column),
# then the target text's shape files; <arguments>: the source tokenizer's and the data paths
collect_stats() {
    local bin=$1 stats=$2 config=$3
    cut -d' ' -f1 "$4" > "${stats}/train.keys"
    cut -d' ' -f1 "$5" > "${stats}/valid.keys"
    shift 5
    ${train_cmd} "${stats}/collect_stats.log" python -m "espnet2.bin.${bin}" \
        --collect_stats true --use_preprocessor true "${tok_opts[@]}" "$@" \
        --train_shape_file "${stats}/train.keys" --valid_shape_file "${stats}/valid.keys" \
        --output_dir "${stats}" --config "${config}" --ngpu 0 --num_workers 0
    vocab_shapes "${stats}" text "${tokendir}/tokens.txt" "${token_type}"
}

# shape_opts_of <stats dir> <shape file> <fold length> [<shape file> <fold length>]...: sets
# shape_opts, a training's shape files of collect stats (train, then valid) and their fold lengths
shape_opts_of() {
    local stats=$1 part i
    shift
    shape_opts=()
    for part in train valid; do
        for ((i = 1; i < $#; i += 2)); do shape_opts+=("--${part}_shape_file" "${stats}/${part}/${!i}"); done
    done
    for ((i = 2; i <= $#; i += 2)); do shape_opts+=(--fold_length "${!i}"); done
}

# espnet_train <espnet2.bin module> <output dir> <config> <more arguments (a word list)>
#     [<run_jobs.sh options>] -- <arguments>...: one ESPnet training on --ngpu GPUs, logged in
# <output dir>/train.log, that resumes the one a kill interrupted
espnet_train() {
    local bin=$1 dir=$2 config=$3 more=$4 jobopts=()
    shift 4
    while [ "$1" != -- ]; do jobopts+=("$1"); shift; done
    shift
    python utils/check_resume.py "${dir}" || return  # a checkpoint cut short by a kill is not resumed
    # shellcheck disable=SC2086  # more is a word list
    ${cuda_cmd} --gpu "${ngpu}" "${jobopts[@]}" "${dir}/train.log" python -m "espnet2.bin.${bin}" \
        --use_preprocessor true "${tok_opts[@]}" "$@" \
        --resume true --ngpu "${ngpu}" --output_dir "${dir}" --config "${config}" ${more}
}

mt_data_args() {  # mt_data_args <discretizer>: sets data_args, mt_train's target and source text
    local tr va      # of the training and validation sets
    tr=$(srcfile_of "$1" "${train_set}"); va=$(srcfile_of "$1" "${valid_set}")
    data_args=(--train_data_path_and_name_and_type "${tr%/*}/text,text,text"
               --train_data_path_and_name_and_type "${tr},src_text,text"
               --valid_data_path_and_name_and_type "${va%/*}/text,text,text"
               --valid_data_path_and_name_and_type "${va},src_text,text")
}

train_one() {  # train_one <discretizer>: one mt_train run (stage 8); stamps it done on success
    local d=$1 adir stats _t stamp data_args shape_opts
    adir=$(asrdir_of "${d}")
    stats=${adir}/stats
    mt_data_args "${d}"
    shape_opts_of "${stats}" "text_shape.${token_type}" "${text_fold_length}" \
        "src_text_shape.${src_token_type}" "${src_fold_length}"
    src_opts_of "${d}"
    stamp=$(stamp_of st_train "${d}")
    log "training ${adir} (log: ${adir}/train.log)"
    stamp_write "${adir}/.stamp" "${stamp}"  # an interrupted training resumes only with these settings
    _t=${SECONDS}
    espnet_train mt_train "${adir}" "${adir}/train_config.yaml" "${asr_args}" "${_thr[@]}" -- \
        "${src_opts[@]}" "${data_args[@]}" "${shape_opts[@]}" || return 1
    echo "$(( SECONDS - _t ))" > "${adir}/train_seconds"
    stamp_write "${adir}/.done_train" "${stamp}"
    log "trained ${adir} in $(( SECONDS - _t )) s"
}

min() { local a b; a=$1; for b in "$@"; do [ "${b}" -lt "${a}" ] && a=${b}; done; echo "${a}"; }
decode_variants() { echo nolm; "${use_lm}" && echo lm; true; }

# Decoding: a stage queues its decodes, each split into up to --inference_nj parts of its keys,
# then runs them in --inference_nj processes, process J going through part J of every decode
# (rpq_units.pipeline.espnet_decode: ESPnet's own inference, its start-up paid once per process
# instead of once per decode); the logs are <decode_jobs>/decode.J.log.
queue_decode() {  # queue_decode <jobdir> <decode dir> <keyed scp> <espnet inference args>...
    local jobdir=$1 ddir=$2 scp=$3 nj j keys=()
    shift 3
    nj=$(min "${inference_nj}" "$(wc -l < "${scp}")")
    for ((j = 1; j <= nj; j++)); do keys+=("${ddir}/log/keys.${j}.scp"); done
    utils/split_scp.sh "${scp}" "${keys[@]}"
    for ((j = 1; j <= nj; j++)); do
        printf '%q ' --batch_size 1 --ngpu "$(inference_ngpu)" "$@" --key_file "${ddir}/log/keys.${j}.scp" \
            --output_dir "${ddir}/log/output.${j}" >> "${jobdir}/jobs.${j}.txt"
        echo >> "${jobdir}/jobs.${j}.txt"
    done
    echo "${nj}" > "${ddir}/log/nj"
}
inference_ngpu() { if "${gpu_inference}"; then echo 1; else echo 0; fi; }
run_decodes() {  # run_decodes <espnet2.bin module> <jobdir> <test set> <decode dir>... (pairs): run the queued decodes, then each decode's hyp, ref and done marker; false if one failed
    local bin=$1 jobdir=$2 n s ddir j nj part parts failed=0
    shift 2
    [ $# -gt 0 ] || return 0
    n=$(find "${jobdir}" -maxdepth 1 -name 'jobs.*.txt' | wc -l)
    log "decoding in ${n} process(es) (logs: ${jobdir}/decode.*.log)"
    # a failed decode is found below by its missing output; the others are kept
    ${decode_cmd} --gpu "$(inference_ngpu)" --num_threads 1 JOB=1:"${n}" "${jobdir}/decode.JOB.log" \
        python -m rpq_units.pipeline.espnet_decode --bin "${bin}" --jobs "${jobdir}/jobs.JOB.txt" || true
    while [ $# -gt 0 ]; do
        s=$1; ddir=$2; shift 2
        nj=$(cat "${ddir}/log/nj"); parts=()
        for ((j = 1; j <= nj; j++)); do
            part=${ddir}/log/output.${j}/1best_recog/text
            [ -f "${part}" ] && parts+=("${part}")
        done
        if [ "${#parts[@]}" -ne "${nj}" ]; then
            log "decoding ${ddir} failed (logs: ${jobdir}/decode.*.log)"
            failed=1
            continue
        fi
        utils/merge_sorted.sh "${ddir}/hyp" "${parts[@]}"
        # the reference is the whole test set: an utterance left out at encoding has no
        # hypothesis and is scored as a full deletion
        cp "${datadir}/${s}/text" "${ddir}/ref"
        stamp_write "${ddir}/.done" "$(cat "${ddir}/.stamp")"
    done
    [ "${failed}" -eq 0 ]
}
