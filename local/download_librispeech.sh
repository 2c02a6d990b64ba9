#!/usr/bin/env bash
# Download and unpack LibriSpeech sets from openslr 12, checking each archive's SHA-256:
#     local/download_librispeech.sh [--mirror URL] <download dir> <set> [<set> ...]
# Sets: dev-clean dev-other test-clean test-other train-clean-100 train-clean-360 train-other-500.
# Result: <download dir>/LibriSpeech/<set>/. A set already unpacked (marker
# <download dir>/LibriSpeech/<set>/.complete) is skipped; a partial download resumes (wget -c)
# and is checked again before unpacking.
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
