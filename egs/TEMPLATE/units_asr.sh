#!/usr/bin/env bash
# Discrete-unit ASR from self-supervised speech features: corpus -> units -> ESPnet -> WER table.
#
# The shared stage engine for every recipe under egs/ (the counterpart of ESPnet's asr.sh).
# A recipe's run.sh names its sets and configs and calls this script from the recipe dir, which
# holds local/data.sh, conf/ and links to ../TEMPLATE/{cmd.sh,path.sh,utils}.
#
# Stages (bounded by --stage/--stop_stage). Each result's done marker is a stamp of the settings
# that made it (utils/stamp.sh): a rerun skips work whose stamp matches the current options,
# config contents and inputs, redoes work made with other settings (and what was made from it),
# and refuses to overwrite a trained model (ASR or LM) made with other settings.
#   1  data preparation: local/data.sh (download or generate, then Kaldi data dirs)
#   2  feature sample: rpq-units dump_feats on a portion of the training set
#   3  fit each discretizer of --discretizers (conf/units/<name>.yaml), then analyze it
#   4  encode every set into unit text (sharded, merged)
#   5  token lists: target (char or sentencepiece BPE), source units; with --src_case rm or
#      --src_token_type bpe each set's source text (rpq-units src_text) and the units' sentencepiece model
#   6  language model (--use_lm true): ESPnet lm_train on the training text
#   7  ESPnet mt_train collect stats (discrete_asr)
#   8  ESPnet mt_train training
#   9  ESPnet mt_inference decoding of every test set (with and without the LM)
#  10  scoring of the current models' decodes: WER/CER with rpq_units.evaluation.scoring (result.txt with its
#      measure and Sub/Del/Ins; CER for --char_test_sets), then the recipe's local/score.sh
#      <expdir> where it has one adds its breakdown (e.g. CER per language) beside it; the
#      continuous reference is scored the same way
#  11  continuous reference (--run_continuous true): the frozen upstream's features of every set
#      (rpq-units dump_feats --format ark), then ESPnet asr_train / asr_inference on them
#  12  RESULTS.md: one row per model of the current settings, one column per test set (plus what
#      the recipe's local/results.sh <expdir> prints, where it has one); --results_tags adds the
#      rows other feature tags' stage 12 tabled (e.g. log-mel and SSL upstreams in one table)
#  13  resynthesis: units -> features -> waveform per discretizer (Griffin-Lim for log-mel, else a
#      HiFi-GAN trained on the training set), scored (STOI, PESQ, MCD, WER/dWER by the continuous
#      reference or --resynth_judge whisper); a static demo page
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
trap 'log "failed (exit $?) at line ${LINENO}: ${BASH_COMMAND}"' ERR
SECONDS=0
# shellcheck source=utils/unit_defaults.sh
. utils/unit_defaults.sh  # the defaults this engine shares with utils/units_steps.sh

# General
stage=1                 # first stage to run
stop_stage=13           # last stage to run
show_stamp=""           # "<result> [args]": print the settings that result's done marker records
                        # (e.g. "cdecode test_clean", "decode kmeans test_clean nolm") and exit
nj=${default_nj}        # parallel jobs for feature dump and encoding
inference_nj=2          # parallel jobs for decoding
ngpu=0                  # GPUs for ESPnet training (0: CPU)
train_jobs=1            # models (one per discretizer) trained at once in stage 8
gpu_inference=false     # decode on GPU
device=${default_device}  # device for rpq-units (cpu, cuda)
datadir=data            # Kaldi data dirs
dumpdir=dump            # feature samples and unit files
expdir=exp              # codebooks, models, logs, results
lock_wait=0             # seconds to wait while another run holds --expdir or --dumpdir (0: stop at
                        # once, naming that run); one run at a time writes an experiment
# Data
data_sh=local/data.sh   # the recipe's data preparation script (stage 1)
data_opts=""            # options for data_sh
train_set=""            # training set name (under datadir)
valid_set=""            # validation set name
test_sets=""            # test set names, space separated
# Features and units
upstream=${default_upstream}  # s3prl upstream name (fbank, wavlm_large, ...), wavlm_local/hubert_local, or
                        # rpq_ssl (an encoder pre-trained by ssl.sh)
upstream_ckpt=""        # checkpoint for wavlm_local/hubert_local/rpq_ssl (config file for baseline_local)
layer=${default_layer}  # upstream layer (-1: last); several joined by commas (1,3,7) give units of
                        # each layer side by side, each layer fit its own discretizer (DASB's streams)
feat_tag=""             # name of the features in dump/exp dir names (default: <upstream>_l<layer>,
                        # with the checkpoint's file name instead of <upstream> when one is given)
feats_portion=${default_feats_portion}  # portion of the training utterances used to fit the discretizers
feats_autocast=none     # precision of the upstream forward in dump_feats/encode: none (fp32), bf16
                        # or fp16 (torch.autocast; bf16 agreement with fp32: bench/RESULTS.md)
feats_batch_size=1      # utterances per upstream forward in dump_feats/encode (1: one at a time,
                        # exact; more: padded batches of similar lengths, faster on a GPU)
on_encode_error=fail    # an utterance that cannot be encoded: fail (stop stage 4) or delete (left
                        # out of training; scored as a full deletion; named in the log with the count)
max_frames=${default_max_frames}  # at most this many frames to fit on (0: all sampled)
reuse_set_feats=true    # dump the features of the validation and test sets once (npy, under
                        # dumpdir) for every discretizer's encoding and the continuous reference,
                        # instead of one upstream forward each (false: no copy on disk)
discretizers="kmeans pq rpq"  # discretizer configs: conf/units/<name>.yaml
units_conf_dir=conf/units     # where the discretizer configs live
# Source text: what the model reads of the units (ESPnet asr2's option names)
src_case=ts             # ts: the units as encoded; rm: a frame equal to the frame before it removed
                        # (all M codes of a PQ/RPQ frame: the frame stays whole for the patch frontend)
src_token_type=word     # word: one token per unit; bpe: sentencepiece pieces over the units, each
                        # unit spelled as one character, frames interleaved (read with frontend embed)
src_nbpe=1000           # sentencepiece pieces over the units, at most (src_token_type bpe)
src_bpemode=unigram     # sentencepiece model type of the units (unigram or bpe)
# Target text
token_type=bpe          # char or bpe
nbpe=5000               # sentencepiece vocabulary size (bpe)
bpemode=unigram         # sentencepiece model type
score_unit=word         # word (WER) or char (CER)
char_test_sets=""       # test sets scored by CER whatever --score_unit (a combined recipe's ML-SUPERB sets)
nlsyms_txt=""           # non-linguistic symbols, one a line (e.g. [eng] language tags): one target token each
local_score_opts=""     # options for the recipe's local/score.sh (stage 10) and local/results.sh (stage 12)
# ESPnet models
asr_config=conf/asr/train_discrete_asr.yaml   # mt_train config (discrete_asr, frontend patch)
asr_args=""             # more mt_train arguments
inference_config=conf/asr/decode.yaml         # mt_inference config
inference_args=""       # more mt_inference arguments
inference_model=valid.acc.ave.pth             # model file to decode with
text_fold_length=150    # fold length of the target text shape file
src_fold_length=3000    # fold length of the source units shape file
use_lm=false            # train an LM on the training text and decode with and without it
lm_config=conf/asr/train_lm.yaml              # lm_train config
lm_args=""              # more lm_train arguments
lm_weight=0.5           # shallow-fusion weight of the LM
run_continuous=false    # also train the continuous reference (asr_train on the frozen features)
continuous_config=conf/asr/train_continuous.yaml  # asr_train config for the reference
results=RESULTS.md      # results table to (re)write in stage 12
results_tags=""         # more feature tags whose rows join the table (as their own last stage 12
                        # left them, each checked against its decode's done marker); another
                        # source text's rows have its suffix (whisper_l4_rm for --src_case rm)
# Resynthesis and demo page (stage 13)
resynth_set=""          # set to resynthesize (default: the first test set)
resynth_utts=10         # utterances of it resynthesized and scored (0: all)
page_utts=5             # utterances with audio players on the demo page
vocoder=auto            # auto (griffinlim for s3prl log-mel upstreams, else train a HiFi-GAN), griffinlim, or a vocoder.pt
vocoder_config=../../conf/vocoder/hifigan_cpu.yaml  # HiFi-GAN config when one is trained
vocoder_args=""         # more rpq-units train_vocoder arguments (e.g. --steps 500 --max_utts 200)
resynth_args=""         # more rpq-units resynth arguments (e.g. --n_iter 32)
resynth_judge=espnet    # who transcribes the resynthesized speech (WER, dWER): espnet (the
                        # continuous reference of stage 11) or whisper (the bundled Whisper tiny.en)

help_message="Usage: $0 --train_set <set> --valid_set <set> --test_sets \"<set> ...\" [options]"
run_args=$(printf '%q ' "$0" "$@")
. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

. utils/engine_checks.sh  # check_options, take_lock
check_options "$@"  # (the arguments parse_options.sh left: none)
# the upstream forward options of dump_feats and encode (defaults: fp32, one utterance at a time)
fwd_opts="--batch_size ${feats_batch_size}"
[ "${feats_autocast}" = none ] || fwd_opts+=" --autocast ${feats_autocast}"

layer_tag=""  # 21, last, or 1+3+7 for several layers
for _l in ${layer//,/ }; do
    [ "${_l}" -lt 0 ] && _l=last
    layer_tag+=${layer_tag:++}${_l}
done
if [ -z "${feat_tag}" ]; then
    _name=${upstream}
    [ -n "${upstream_ckpt}" ] && { _name=$(basename "${upstream_ckpt}"); _name=${_name%.*}; }
    feat_tag=${_name}_l${layer_tag}
fi
featdir=${dumpdir}/feats_${feat_tag}_${train_set}
tokendir=${dumpdir}/token_list/${token_type}
[ "${token_type}" = bpe ] && tokendir=${dumpdir}/token_list/bpe${nbpe}
lmdir=${expdir}/lm_$(basename "${tokendir}")
contdir=${expdir}/asr_${feat_tag}_continuous  # the continuous reference (stage 11)
timing=${expdir}/timing.tsv

# ---- one run at a time per experiment (take_lock: utils/engine_checks.sh) ----
if [ -z "${show_stamp}" ]; then
    take_lock "${expdir}"
    take_lock "${dumpdir}"
    if [ "${stage}" -le 1 ]; then take_lock "${datadir}"; fi
fi
mkdir -p "${expdir}"
touch "${expdir}/commands.txt"  # every invocation that finished, for RESULTS.md (appended at the end)

stage_begin() {  # stage_begin <n> <title>: announce
    _stage_no=$1; _stage_start=${SECONDS}
    log "Stage $1: $2"
}
stage_end() {  # record the stage's wall time in exp/timing.tsv
    printf '%s\t%s\t%s\n' "${_stage_no}" "$1" "$(( SECONDS - _stage_start ))" >> "${timing}"
    log "Stage ${_stage_no} done in $(( SECONDS - _stage_start )) s"
}
units_tag() { echo "${feat_tag}_$1"; }                         # discretizer name -> tag
all_sets() { echo "${train_set} ${valid_set} ${test_sets}"; }
set_featdir() { echo "${dumpdir}/feats_${feat_tag}_$1"; }  # <set>: its features (npy shards)
# the source text's settings name the model dir (nothing for the encoded units as words) and the
# source file beside each set's units: units, units.rm, units.chars or units.rm.chars
src_tag=""; src_ext=""
[ "${src_case}" = ts ] || { src_tag+=_${src_case}; src_ext+=.${src_case}; }
[ "${src_token_type}" = word ] || { src_tag+=_${src_bpemode}${src_nbpe}; src_ext+=.chars; }
# where each result of a discretizer lives (the one place that spells the layout of exp/ and dump/)
unitsdir_of() { echo "${expdir}/units_$(units_tag "$1")"; }           # <discretizer>: codebook, token list
unitsdump_of() { echo "${dumpdir}/units_$(units_tag "$1")/$2"; }     # <discretizer> <set>: units, text
asrdir_of() { echo "${expdir}/asr_$(units_tag "$1")${src_tag}"; }
srcfile_of() { echo "$(unitsdump_of "$1" "$2")/units${src_ext}"; }  # <discretizer> <set>
spmdir_of() { echo "$(unitsdir_of "$1")/src_${src_case}_${src_bpemode}${src_nbpe}"; }
src_opts_of() {  # <discretizer>: sets src_opts, ESPnet's source tokenizer arguments, and src_list
    if [ "${src_token_type}" = bpe ]; then
        src_list=$(spmdir_of "$1")/tokens.txt
        src_opts=(--src_token_type bpe --src_token_list "${src_list}" --src_bpemodel "$(spmdir_of "$1")/bpe.model")
    else
        src_list=$(unitsdir_of "$1")/tokens.txt
        src_opts=(--src_token_type word --src_token_list "${src_list}")
    fi
}

# ---- stamps: the settings behind each result (see utils/stamp.sh) ----
. utils/stamp.sh
. utils/engine_stamps.sh   # st_<result>, stamp_of, redo_if_changed, require, keep_trained
# ---- the work of the stages (each file lists its functions) ----
. utils/engine_units.sh    # stages 2-5 and 11: unit steps, shared features, source text
. utils/engine_espnet.sh   # stages 5-9 and 11: token list, statistics, training, decoding
. utils/engine_results.sh  # stages 10-12: scoring and the results table
. utils/engine_resynth.sh  # stage 13: resynthesis and the demo page

if [ -n "${show_stamp}" ]; then
    read -r -a _st <<< "${show_stamp}"
    if ! declare -F "st_${_st[0]}" > /dev/null; then
        echo "$0: --show_stamp: no result named '${_st[0]}' (one of: $(declare -F | awk '$3 ~ /^st_/ { printf "%s ", substr($3, 4) }'))" >&2
        exit 2
    fi
    load_data_sigs
    stamp_of "st_${_st[0]}" "${_st[@]:1}"
    exit 0
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    stage_begin 1 "data preparation: ${data_sh} ${data_opts}"
    # data.sh skips the sets it finished before: data prepared with other options is not redone
    # behind the user's back (what data.sh generated or downloaded may have to go as well)
    stamp=$(printf 'data_sh=%s\ndata_opts=%s\n' "${data_sh}" "${data_opts}")
    if [ -f "${datadir}/.done_data" ] && ! stamp_ok "${datadir}/.done_data" "${stamp}"; then
        log "error: ${datadir} was prepared with other settings ($(stamp_diff "${datadir}/.done_data" "${stamp}")); to keep it, use a new --datadir (and the data options' output dirs), or remove ${datadir} (and what ${data_sh} generated) to prepare it again"
        exit 1
    fi
    # shellcheck disable=SC2086  # data_opts is a word list
    ${data_sh} ${data_opts}
    for s in $(all_sets); do
        utils/validate_data_dir.sh "${datadir}/${s}"
    done
    stamp_write "${datadir}/.done_data" "${stamp}"
    stage_end "data preparation"
fi

load_data_sigs
if [ "${stop_stage}" -ge 2 ]; then
    # before anything is redone: a trained model made with other settings is never overwritten
    for d in ${discretizers}; do
        keep_trained "$(asrdir_of "${d}")" "$(asrdir_of "${d}")/.done_train" "$(stamp_of st_train "${d}")"
    done
    if "${use_lm}"; then
        keep_trained "${lmdir}" "${lmdir}/.done" "$(stamp_of st_lm)"
    fi
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    stage_begin 2 "feature sample (${upstream}, layer ${layer}, portion ${feats_portion}) -> ${featdir}"
    stamp=$(stamp_of st_feats)
    if ! redo_if_changed "${featdir}/.done" "${stamp}"; then
        log "features already dumped in ${featdir}"
    else
        rm -rf "${featdir}"
        stamp_write "${featdir}/.stamp" "${stamp}"
        steps feats --data_dir "${datadir}/${train_set}" --portion "${feats_portion}" --seed 0 \
            --feats_dir "${featdir}"
        stamp_write "${featdir}/.done" "${stamp}"
    fi
    stage_end "feature sample"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    stage_begin 3 "fit discretizers: ${discretizers}"
    require "${featdir}/.done" "$(stamp_of st_feats)" 2
    for d in ${discretizers}; do
        udir=$(unitsdir_of "${d}")
        stamp=$(stamp_of st_units "${d}")
        if ! redo_if_changed "${udir}/.done" "${stamp}"; then
            log "${udir} already fitted"
            continue
        fi
        [ -f "${units_conf_dir}/${d}.yaml" ] || { log "missing discretizer config ${units_conf_dir}/${d}.yaml"; exit 1; }
        rm -rf "${udir}"
        stamp_write "${udir}/.stamp" "${stamp}"
        log "fitting ${d} -> ${udir}/codebook.pt (log: ${udir}/fit.log)"
        steps fit --feats_dir "${featdir}" --config "${units_conf_dir}/${d}.yaml" --max_frames "${max_frames}" \
            --units_dir "${udir}"
        stamp_write "${udir}/.done" "${stamp}"
    done
    stage_end "fit discretizers"
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    stage_begin 4 "encode $(all_sets) with ${discretizers} (on encode error: ${on_encode_error})"
    for d in ${discretizers}; do
        udir=$(unitsdir_of "${d}")
        require "${udir}/.done" "$(stamp_of st_units "${d}")" 3
        for s in $(all_sets); do
            odir=$(unitsdump_of "${d}" "${s}")
            stamp=$(stamp_of st_encode "${d}" "${s}")
            if ! redo_if_changed "${odir}/.done" "${stamp}"; then
                continue
            fi
            rm -rf "${odir}"
            mkdir -p "${odir}"
            stamp_write "${odir}/.stamp" "${stamp}"
            # the training utterances of stage 2's sample are encoded from its features, those
            # of the other sets from their features dumped once for every discretizer
            reuse=()
            if [ "${s}" = "${train_set}" ]; then
                stamp_ok "${featdir}/.done" "$(stamp_of st_feats)" && reuse=(--feats_dir "${featdir}")
            elif "${reuse_set_feats}" && dump_set_feats "${s}"; then
                reuse=(--feats_dir "$(set_featdir "${s}")")
            fi
            log "encoding ${s} with ${d} -> ${odir}/units"
            steps encode --data_dir "${datadir}/${s}" --units_dir "${udir}" --out_dir "${odir}" "${reuse[@]}" --label "${s} with ${d}" \
                --strict "$([ "${on_encode_error}" = fail ] && echo true || echo false)"
            stamp_write "${odir}/.done" "${stamp}"
        done
    done
    stage_end "encode"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    stage_begin 5 "token lists: target ${token_type} -> ${tokendir}, source units"
    stamp=$(stamp_of st_tokens)
    if redo_if_changed "${tokendir}/.done" "${stamp}"; then
        target_token_list "${stamp}"
    fi
    for d in ${discretizers}; do
        udir=$(unitsdir_of "${d}")
        require "${udir}/.done" "$(stamp_of st_units "${d}")" 3
        if [ ! -f "${udir}/tokens.txt" ]; then  # removed with the codebook when it is refitted
            steps token_list --units_dir "${udir}"
        fi
        source_text "${d}"
    done
    stage_end "token lists"
fi

# ESPnet target tokenizer arguments, one path per word (paths may hold spaces)
tok_opts=(--token_type "${token_type}" --token_list "${tokendir}/tokens.txt")
[ "${token_type}" = bpe ] && tok_opts+=(--bpemodel "${tokendir}/bpe.model")
[ -n "${nlsyms_txt}" ] && tok_opts+=(--non_linguistic_symbols "${nlsyms_txt}")

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ] && "${use_lm}"; then
    stage_begin 6 "language model on ${train_set} text -> ${lmdir}"
    require "${tokendir}/.done" "$(stamp_of st_tokens)" 5
    stamp=$(stamp_of st_lm)
    keep_trained "${lmdir}" "${lmdir}/.done" "${stamp}"
    if stamp_ok "${lmdir}/.done" "${stamp}"; then
        log "LM already trained in ${lmdir}"
    else
        mkdir -p "${lmdir}"
        stamp_write "${lmdir}/.stamp" "${stamp}"
        data_args=(--train_data_path_and_name_and_type "${datadir}/${train_set}/text,text,text"
                   --valid_data_path_and_name_and_type "${datadir}/${valid_set}/text,text,text")
        if redo_if_changed "${lmdir}/stats/.done" "${stamp}"; then
            rm -rf "${lmdir}/stats"
            mkdir -p "${lmdir}/stats"
            collect_stats lm_train "${lmdir}/stats" "${lm_config}" "${datadir}/${train_set}/text" \
                "${datadir}/${valid_set}/text" "${data_args[@]}"
            stamp_write "${lmdir}/stats/.done" "${stamp}"
        fi
        shape_opts_of "${lmdir}/stats" "text_shape.${token_type}" "${text_fold_length}"
        espnet_train lm_train "${lmdir}" "${lm_config}" "${lm_args}" -- "${data_args[@]}" "${shape_opts[@]}"
        stamp_write "${lmdir}/.done" "${stamp}"
    fi
    stage_end "language model"
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    stage_begin 7 "ESPnet mt_train collect stats for ${discretizers}"
    for d in ${discretizers}; do
        adir=$(asrdir_of "${d}"); udir=$(unitsdir_of "${d}")
        stats=${adir}/stats
        stamp=$(stamp_of st_stats "${d}")
        if ! redo_if_changed "${stats}/.done" "${stamp}"; then
            continue
        fi
        require "${tokendir}/.done" "$(stamp_of st_tokens)" 5
        for s in "${train_set}" "${valid_set}"; do
            require "$(unitsdump_of "${d}" "${s}")/.done" "$(stamp_of st_encode "${d}" "${s}")" 4
        done
        [ -f "${udir}/tokens.txt" ] || { log "error: ${udir}/tokens.txt is missing: run stage 5 first"; exit 1; }
        if [ -n "${src_tag}" ]; then
            for s in "${train_set}" "${valid_set}"; do
                require "$(srcfile_of "${d}" "${s}").done" "$(stamp_of st_src "${d}" "${s}")" 5
            done
            [ "${src_token_type}" = word ] || require "$(spmdir_of "${d}")/.done" "$(stamp_of st_spm "${d}")" 5
        fi
        rm -rf "${stats}"
        mkdir -p "${stats}"
        stamp_write "${stats}/.stamp" "${stamp}"
        # the model config for this discretizer: frontend and patch size from its number of
        # streams and the source token type; units.yaml: which units and source text it reads
        python utils/make_asr_config.py --config "${asr_config}" --codebook "${udir}/codebook.pt" \
            --src_token_type "${src_token_type}" --out "${adir}/train_config.yaml"
        printf 'units_dir: %s\nsrc_case: %s\nsrc_token_type: %s\nsrc_nbpe: %s\nsrc_bpemode: %s\n' \
            "${udir}" "${src_case}" "${src_token_type}" "${src_nbpe}" "${src_bpemode}" > "${adir}/units.yaml"
        src_opts_of "${d}"
        mt_data_args "${d}"
        collect_stats mt_train "${stats}" "${adir}/train_config.yaml" "$(srcfile_of "${d}" "${train_set}")" \
            "$(srcfile_of "${d}" "${valid_set}")" "${src_opts[@]}" "${data_args[@]}"
        vocab_shapes "${stats}" src_text "${src_list}" "${src_token_type}"
        stamp_write "${stats}/.done" "${stamp}"
    done
    stage_end "collect stats"
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ]; then
    stage_begin 8 "ESPnet mt_train (discrete_asr) for ${discretizers}"
    # With --train_jobs N > 1 up to N models train at once (train_one), each with nproc/N threads
    # (at least one): small CPU models gain less from a second thread than from a second process.
    _thr=()
    if [ "${train_jobs}" -gt 1 ]; then
        # the machine's CPUs, as utils/run_jobs.sh counts them (nproc follows OMP_NUM_THREADS)
        _n=$(( $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1) / train_jobs ))
        _thr=(--num_threads "$(( _n > 0 ? _n : 1 ))")
    fi
    for d in ${discretizers}; do
        adir=$(asrdir_of "${d}")
        keep_trained "${adir}" "${adir}/.done_train" "$(stamp_of st_train "${d}")"
        if [ -f "${adir}/.done_train" ]; then
            log "${adir} already trained"
            continue
        fi
        if [ -f "${adir}/stats/.done" ]; then  # (missing statistics: mt_train says so in its log)
            require "${adir}/stats/.done" "$(stamp_of st_stats "${d}")" 7
        fi
        if [ "${train_jobs}" -le 1 ]; then
            train_one "${d}"
            continue
        fi
        while [ "$(jobs -rp | wc -l)" -ge "${train_jobs}" ]; do
            wait -n || true  # success is read from each model's done marker below
        done
        train_one "${d}" &
    done
    wait || true
    _failed=0
    for d in ${discretizers}; do
        adir=$(asrdir_of "${d}")
        if ! stamp_ok "${adir}/.done_train" "$(stamp_of st_train "${d}")"; then
            log "training ${adir} failed (log: ${adir}/train.log)"
            _failed=1
        fi
    done
    [ "${_failed}" -eq 0 ] || exit 1
    stage_end "train"
fi

# Decoding (queue_decode, run_decodes: utils/engine_espnet.sh): a stage queues its decodes,
# each split into up to --inference_nj parts of its keys, then runs them in --inference_nj
# processes, process J going through part J of every decode.
if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ]; then
    stage_begin 9 "ESPnet mt_inference on ${test_sets}"
    jobdir=${expdir}/decode_jobs/stage9
    rm -rf "${jobdir}"; mkdir -p "${jobdir}"
    pending=()
    for d in ${discretizers}; do
        adir=$(asrdir_of "${d}")
        for s in ${test_sets}; do
            for v in $(decode_variants); do
                ddir=${adir}/decode_${s}_${v}
                stamp=$(stamp_of st_decode "${d}" "${s}" "${v}")
                if ! redo_if_changed "${ddir}/.done" "${stamp}"; then
                    continue
                fi
                require "${adir}/.done_train" "$(stamp_of st_train "${d}")" 8
                require "$(unitsdump_of "${d}" "${s}")/.done" "$(stamp_of st_encode "${d}" "${s}")" 4
                [ -z "${src_tag}" ] || require "$(srcfile_of "${d}" "${s}").done" "$(stamp_of st_src "${d}" "${s}")" 5
                lm_opts=()
                if [ "${v}" = lm ]; then
                    require "${lmdir}/.done" "$(stamp_of st_lm)" 6
                    lm_opts=(--lm_train_config "${lmdir}/config.yaml" --lm_file "${lmdir}/valid.loss.ave.pth"
                             --lm_weight "${lm_weight}")
                fi
                src=$(srcfile_of "${d}" "${s}")
                rm -rf "${ddir}"
                mkdir -p "${ddir}/log"
                stamp_write "${ddir}/.stamp" "${stamp}"
                log "decoding ${s} with ${adir} (${v}) -> ${ddir}"
                # shellcheck disable=SC2086  # inference_args is a word list
                queue_decode "${jobdir}" "${ddir}" "${src}" \
                    --data_path_and_name_and_type "${src},src_text,text" \
                    --mt_train_config "${adir}/config.yaml" --mt_model_file "${adir}/${inference_model}" \
                    --config "${inference_config}" "${lm_opts[@]}" ${inference_args}
                pending+=("${s}" "${ddir}")
            done
        done
    done
    run_decodes mt_inference "${jobdir}" "${pending[@]}" || exit 1
    stage_end "decode"
fi

if [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 10 ]; then
    stage_begin 10 "scoring (${score_unit})"
    mapfile -t decodes < <(current_decodes | cut -f1,4 | tr '\t' '\n')  # decode dir, set, ...
    if [ "${#decodes[@]}" -eq 0 ]; then
        log "no decode made with the current settings: run stage 9 first"
    else
        score_decodes "${decodes[@]}"
    fi
    stage_end "scoring"
fi

if [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 11 ] && "${run_continuous}"; then
    adir=${contdir}
    cdump=${dumpdir}/continuous_${feat_tag}
    stage_begin 11 "continuous reference: ${upstream} layer ${layer} features -> ${cdump}, asr_train -> ${adir}"
    require "${tokendir}/.done" "$(stamp_of st_tokens)" 5  # the target token list
    # The frozen upstream's features of every set, dumped once through the extractor that made
    # the units (any upstream kind, rpq_ssl encoders included), read by ESPnet as kaldi_ark.
    for s in $(all_sets); do
        continuous_feats "${s}" "${cdump}/${s}"
    done
    mkdir -p "${adir}"
    python utils/make_asr_config.py --config "${continuous_config}" \
        --feats_json "${cdump}/${train_set}/feats.json" --out "${adir}/train_config.yaml"
    # fold (halve the batch) only past 50 s of speech, as for the discrete models' text
    speech_fold=$(python -c 'import json, sys; print(round(50 * json.load(open(sys.argv[1]))["frame_rate"]))' \
        "${cdump}/${train_set}/feats.json")
    tr=${cdump}/${train_set}; va=${cdump}/${valid_set}
    data_args=(--train_data_path_and_name_and_type "${tr}/feats.scp,speech,kaldi_ark"
               --train_data_path_and_name_and_type "${tr}/text,text,text"
               --valid_data_path_and_name_and_type "${va}/feats.scp,speech,kaldi_ark"
               --valid_data_path_and_name_and_type "${va}/text,text,text")
    stats=${adir}/stats
    ctrain=$(stamp_of st_ctrain)
    keep_trained "${adir}" "${adir}/.done_train" "${ctrain}"
    if redo_if_changed "${stats}/.done" "${ctrain}"; then
        rm -rf "${stats}"; mkdir -p "${stats}"
        collect_stats asr_train "${stats}" "${adir}/train_config.yaml" "${tr}/feats.scp" "${va}/feats.scp" \
            "${data_args[@]}"
        stamp_write "${stats}/.done" "${ctrain}"
    fi
    if ! stamp_ok "${adir}/.done_train" "${ctrain}"; then
        log "training ${adir} (log: ${adir}/train.log)"
        stamp_write "${adir}/.stamp" "${ctrain}"  # an interrupted training resumes only with these settings
        shape_opts_of "${stats}" speech_shape "${speech_fold}" "text_shape.${token_type}" "${text_fold_length}"
        espnet_train asr_train "${adir}" "${adir}/train_config.yaml" "${asr_args}" -- "${data_args[@]}" "${shape_opts[@]}"
        stamp_write "${adir}/.done_train" "${ctrain}"
    fi
    jobdir=${expdir}/decode_jobs/stage11
    rm -rf "${jobdir}"; mkdir -p "${jobdir}"
    pending=()
    for s in ${test_sets}; do
        ddir=${adir}/decode_${s}_nolm
        src=${cdump}/${s}
        stamp=$(stamp_of st_cdecode "${s}")
        redo_if_changed "${ddir}/.done" "${stamp}" || continue
        rm -rf "${ddir}"; mkdir -p "${ddir}/log"
        stamp_write "${ddir}/.stamp" "${stamp}"
        log "decoding ${s} with ${adir} -> ${ddir}"
        # shellcheck disable=SC2086  # inference_args is a word list
        queue_decode "${jobdir}" "${ddir}" "${src}/feats.scp" \
            --data_path_and_name_and_type "${src}/feats.scp,speech,kaldi_ark" \
            --asr_train_config "${adir}/config.yaml" --asr_model_file "${adir}/${inference_model}" \
            --config "${inference_config}" ${inference_args}
        pending+=("${s}" "${ddir}")
    done
    run_decodes asr_inference "${jobdir}" "${pending[@]}" || exit 1
    mapfile -t decodes < <(for s in ${test_sets}; do echo "${adir}/decode_${s}_nolm"; echo "${s}"; done)
    score_decodes "${decodes[@]}"
    stage_end "continuous reference"
fi

if [ "${stage}" -le 12 ] && [ "${stop_stage}" -ge 12 ]; then
    stage_begin 12 "results table -> ${results}"
    # the rows: the current discretizers' decodes whose stamps match the current settings, each
    # kept per feature tag for later tables, and the rows of --results_tags (result_rows)
    result_rows
    python -m rpq_units.evaluation.scoring table --exp_dir "${expdir}" --test_sets "${test_sets}" \
        --rows "${expdir}/results_rows.tsv" --command "$(cat "${expdir}/commands.txt"; echo "${run_args% }")" \
        --timing "${timing}" --out "${results}"
    if [ -x local/results.sh ]; then
        # shellcheck disable=SC2086  # local_score_opts is a word list
        local/results.sh ${local_score_opts} "${expdir}" >> "${results}"
    fi
    cat "${results}"
    stage_end "results"
fi
if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 13 ]; then
    rset=${resynth_set:-${test_sets%% *}}
    rdir=${expdir}/resynth_${feat_tag}_${rset}
    pdir=${expdir}/demo_${feat_tag}  # one page per feature tag (run_ssl.sh shares exp/ with run.sh)
    stage_begin 13 "resynthesis of ${rset} from ${discretizers} -> ${rdir}; demo page -> ${pdir}"
    choose_vocoder  # sets voc and vkind; trains a HiFi-GAN for --vocoder train (or auto)
    rstamp=$(stamp_of st_resynth "${rset}" "${vkind}")
    if redo_if_changed "${rdir}/.done" "${rstamp}"; then
        resynthesize "${rset}" "${rdir}"
        stamp_write "${rdir}/.done" "${rstamp}"
    fi
    demo_page "${rdir}" "${pdir}"
    cat "${rdir}/resynth.md"
    log "demo page: ${pdir}/index.html"
    stage_end "resynthesis"
fi
echo "${run_args% }" >> "${expdir}/commands.txt"
log "Successfully finished. [elapsed=${SECONDS}s]"
