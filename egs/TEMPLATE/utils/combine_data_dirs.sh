#!/usr/bin/env bash
# Combine Kaldi data dirs (ids already unique across them, e.g. prefixed per corpus):
#     combine_data_dirs.sh <dst-dir> <src-dir> <src-dir> ...
# Each table present in every source is concatenated and sorted (LC_ALL=C); a duplicate id is
# an error. Written to <dst-dir>.tmp, then renamed.
set -euo pipefail
export LC_ALL=C

if [ $# -lt 2 ]; then
    echo "Usage: $0 <dst-dir> <src-dir> [<src-dir> ...]" >&2
    exit 2
fi
dst=$1; shift
tmp=${dst}.tmp
rm -rf "${tmp}"
mkdir -p "${tmp}"
for f in wav.scp text utt2spk spk2utt utt2lang segments; do
    present=()
    for d in "$@"; do
        if [ -f "${d}/${f}" ]; then present+=("${d}/${f}"); fi
    done
    [ "${#present[@]}" -eq $# ] || continue
    sort -k1,1 "${present[@]}" > "${tmp}/${f}"
    dup=$(cut -d' ' -f1 "${tmp}/${f}" | uniq -d | head -n 1)
    if [ -n "${dup}" ]; then
        echo "$0: id '${dup}' is in more than one of $* (${f}); prefix the ids per corpus" >&2
        rm -rf "${tmp}"
        exit 1
    fi
done
rm -rf "${dst}"
mv "${tmp}" "${dst}"
