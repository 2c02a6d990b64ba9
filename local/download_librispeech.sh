#!/usr/bin/env bash
# Download and unpack LibriSpeech sets from openslr 12, checking each archive's SHA-256:
#     local/download_librispeech.sh [--mirror URL] <download dir> <set> [<set> ...]
# Sets: dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500.
# Result: <download dir>/LibriSpeech/<set>/. Nothing is downloaded for a set that is already
# there: one this script unpacked (marker <set>/.complete), or a copy or symbolic link made any
# other way, recognised by its contents (every transcript line has its FLAC and every FLAC its
# line; a count that differs from the official set's is reported). A partial download resumes
# (wget -c) and is checked again before unpacking; an archive of this script's own, present
# without the marker, is unpacked again (an interrupted unpack).
set -euo pipefail

mirror=https://www.openslr.org/resources/12   # base URL of the archives
help_message="Usage: $0 [--mirror URL] <download dir> <set> [<set> ...]"
# shellcheck source=../egs/TEMPLATE/utils/parse_options.sh
. "$(dirname "$0")/../egs/TEMPLATE/utils/parse_options.sh"

if [ $# -lt 2 ]; then
    echo "${help_message}" >&2
    exit 2
fi
dir=$1; shift

official_utts() {  # utterances in the official set
    case "$1" in
        dev-clean) echo 2703 ;; dev-other) echo 2864 ;; test-clean) echo 2620 ;; test-other) echo 2939 ;;
        train-clean-100) echo 28539 ;; train-clean-360) echo 104014 ;; train-other-500) echo 148688 ;;
    esac
}

existing_copy() {  # existing_copy <set dir> <set>: true if a complete unpacked set is there
    local d=$1/ n_lines n_flacs want  # the trailing slash follows a linked set dir
    [ -d "${d}" ] || return 1
    # -L: speaker or chapter dirs may be links too
    n_flacs=$(find -L "${d}" -mindepth 3 -maxdepth 3 -name '*.flac' | wc -l)
    n_lines=$(find -L "${d}" -mindepth 3 -maxdepth 3 -name '*.trans.txt' -exec cat {} + | grep -c . || true)
    [ "${n_flacs}" -gt 0 ] || [ "${n_lines}" -gt 0 ] || return 1
    if [ "${n_flacs}" -ne "${n_lines}" ]; then
        echo "$0: ${1} holds ${n_flacs} FLAC files but ${n_lines} transcript lines: an incomplete copy" \
            "(complete it, or remove it to download the set)" >&2
        exit 1
    fi
    want=$(official_utts "$2")
    if [ -n "${want}" ] && [ "${want}" -ne "${n_flacs}" ]; then
        echo "$0: warning: ${1} holds ${n_flacs} utterances, the official $2 has ${want}" >&2
    fi
    echo "$0: ${1} is already there (${n_flacs} utterances), using it" >&2
}

sha256_of() {
    case "$1" in
        dev-clean) echo 76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3 ;;
        dev-other) echo 12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365 ;;
        test-clean) echo 39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23 ;;
        test-other) echo d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29 ;;
        train-clean-100) echo d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2 ;;
        train-clean-360) echo 146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf ;;
        train-other-500) echo ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2 ;;
        *) return 1 ;;
    esac
}

mkdir -p "${dir}"
for part in "$@"; do
    sum=$(sha256_of "${part}") || { echo "$0: unknown LibriSpeech set '${part}'" >&2; exit 2; }
    if [ -f "${dir}/LibriSpeech/${part}/.complete" ]; then
        echo "$0: ${dir}/LibriSpeech/${part} is already there, skipping" >&2
        continue
    fi
    archive=${dir}/${part}.tar.gz
    if [ ! -f "${archive}" ] && existing_copy "${dir}/LibriSpeech/${part}" "${part}"; then
        continue
    fi
    if [ ! -f "${archive}" ] || ! echo "${sum}  ${archive}" | sha256sum -c --status; then
        echo "$0: downloading ${mirror}/${part}.tar.gz" >&2
        if command -v wget >/dev/null; then
            wget --no-verbose --continue -O "${archive}" "${mirror}/${part}.tar.gz"
        else
            curl --fail --location --continue-at - -o "${archive}" "${mirror}/${part}.tar.gz"
        fi
        if ! echo "${sum}  ${archive}" | sha256sum -c --status; then
            echo "$0: checksum mismatch for ${archive} (expected sha256 ${sum}); delete it and retry" >&2
            exit 1
        fi
    fi
    echo "$0: unpacking ${archive}" >&2
    tar -C "${dir}" -xzf "${archive}"
    [ -d "${dir}/LibriSpeech/${part}" ] || { echo "$0: ${archive} did not contain LibriSpeech/${part}" >&2; exit 1; }
    touch "${dir}/LibriSpeech/${part}/.complete"
done
