#!/usr/bin/env bash
# Prepare one LibriSpeech set (openslr 12 layout) as a Kaldi-style data dir:
#     local/data_prep_librispeech.sh [--check_audio header|full|none] <LibriSpeech/set dir> <data dir>
# Input:  <set>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac and <spk>-<chapter>.trans.txt
# Output: <data dir>/{wav.scp,text,utt2spk,spk2utt}, sorted (LC_ALL=C); wav.scp holds absolute
#         FLAC paths (soundfile reads FLAC); the speaker of an utterance is <spk>-<chapter>.
# Stops with one line naming the file on: a missing set dir, a transcript line whose FLAC is
# missing, a FLAC without a transcript line, a duplicate utterance id, or audio that does not
# decode. The data dir is written under a temp name and moved into place when valid.
set -euo pipefail

check_audio=header   # header: read each file's header; full: decode every sample; none
help_message="Usage: $0 [options] <LibriSpeech/set dir> <data dir>"
utils=$(cd "$(dirname "$0")/../egs/TEMPLATE/utils" && pwd)
# the recipes' environment (the repository's virtual environment for the audio check), so the
# script also runs from a plain shell
# shellcheck source=../egs/TEMPLATE/path.sh
. "${utils}/../path.sh"
export LC_ALL=C
# shellcheck source=../egs/TEMPLATE/utils/parse_options.sh
. "${utils}/parse_options.sh"

if [ $# -ne 2 ]; then
    echo "${help_message}" >&2
    exit 2
fi
src=$1
dst=$2
fail() { echo "$0: $*" >&2; exit 1; }

[ -d "${src}" ] || fail "corpus set dir not found: ${src}"
src=$(cd "${src}" && pwd -P)  # a set that is a symbolic link (e.g. to shared storage) is read where it is
case "${check_audio}" in header|full|none) ;; *) fail "--check_audio must be header, full or none" ;; esac

tmp=${dst}.tmp
rm -rf "${tmp}"
mkdir -p "${tmp}"

# uttid <tab> transcript file <tab> text, for every transcript line
find -L "${src}" -mindepth 3 -maxdepth 3 -name '*.trans.txt' | sort > "${tmp}/trans_files"
[ -s "${tmp}/trans_files" ] || fail "no <spk>/<chapter>/*.trans.txt files under ${src}"
# shellcheck disable=SC2016  # an awk program
xargs -d '\n' awk '
    NF == 0 { next }
    {
        id = $1; text = $0; sub(/^[^ ]+[ ]*/, "", text)
        expect = FILENAME; sub(/\/[^\/]*$/, "", expect)
        split(id, part, "-")
        if (FILENAME !~ ("/" part[1] "/" part[2] "/" part[1] "-" part[2] "\\.trans\\.txt$")) {
            print FILENAME ": utterance id " id " does not belong to this speaker/chapter" > "/dev/stderr"
            exit 1
        }
        print id "\t" FILENAME "\t" text
    }' < "${tmp}/trans_files" | sort -t "$(printf '\t')" -k1,1 > "${tmp}/trans" \
    || fail "bad transcript file (see above)"

dup=$(cut -f1 "${tmp}/trans" | uniq -d | head -n 1)
if [ -n "${dup}" ]; then
    files=$(awk -F'\t' -v id="${dup}" '$1 == id { print $2 }' "${tmp}/trans" | sort -u | tr '\n' ' ')
    fail "duplicate utterance id ${dup} in ${files}"
fi

# flac paths from disk vs expected paths from transcripts
find -L "${src}" -mindepth 3 -maxdepth 3 -name '*.flac' | sort > "${tmp}/flacs"
awk -F'\t' -v src="${src}" '{ split($1, p, "-"); print src "/" p[1] "/" p[2] "/" $1 ".flac" }' \
    "${tmp}/trans" | sort > "${tmp}/expected"
no_audio=$(comm -13 "${tmp}/flacs" "${tmp}/expected" | head -n 1)
if [ -n "${no_audio}" ]; then
    id=$(basename "${no_audio}" .flac)
    file=$(awk -F'\t' -v id="${id}" '$1 == id { print $2; exit }' "${tmp}/trans")
    fail "${file}: transcript line for ${id} but no audio file ${no_audio}"
fi
no_text=$(comm -23 "${tmp}/flacs" "${tmp}/expected" | head -n 1)
[ -z "${no_text}" ] || fail "${no_text}: audio file without a transcript line"

awk -F'\t' -v src="${src}" '{ split($1, p, "-"); print $1 " " src "/" p[1] "/" p[2] "/" $1 ".flac" }' "${tmp}/trans" > "${tmp}/wav.scp"
awk -F'\t' '{ print $1 " " $3 }' "${tmp}/trans" > "${tmp}/text"
awk -F'\t' '{ split($1, p, "-"); print $1 " " p[1] "-" p[2] }' "${tmp}/trans" > "${tmp}/utt2spk"
"${utils}/utt2spk_to_spk2utt.sh" "${tmp}/utt2spk" > "${tmp}/spk2utt"
rm -f "${tmp}/trans_files" "${tmp}/trans" "${tmp}/flacs" "${tmp}/expected"

case "${check_audio}" in
    header) python3 "${utils}/check_audio.py" "${tmp}/wav.scp" || exit 1 ;;
    full) python3 "${utils}/check_audio.py" --full "${tmp}/wav.scp" || exit 1 ;;
esac
"${utils}/validate_data_dir.sh" "${tmp}"

mkdir -p "${dst}"
for f in wav.scp text utt2spk spk2utt; do
    mv "${tmp}/${f}" "${dst}/${f}"
done
rmdir "${tmp}"
echo "$0: prepared ${dst} from ${src} ($(wc -l < "${dst}/wav.scp") utterances)" >&2
