#!/usr/bin/env bash
# Copy a Kaldi data dir with every utterance, speaker (and recording) id prefixed, so that sets
# from several corpora can be combined without id clashes:
#     prefix_data_dir.sh <prefix> <src-dir> <dst-dir>
# Tables: wav.scp, text, utt2spk, spk2utt, and utt2lang / segments where present. Written to
# <dst-dir>.tmp, then renamed.
set -euo pipefail
export LC_ALL=C

if [ $# -ne 3 ]; then
    echo "Usage: $0 <prefix> <src-dir> <dst-dir>" >&2
    exit 2
fi
p=$1; src=$2; dst=$3
for f in wav.scp text utt2spk spk2utt; do
    [ -f "${src}/${f}" ] || { echo "$0: missing ${src}/${f}" >&2; exit 1; }
done
tmp=${dst}.tmp
rm -rf "${tmp}"
mkdir -p "${tmp}"
for f in wav.scp text utt2lang; do
    if [ -f "${src}/${f}" ]; then
        awk -v p="${p}" '{ print p $0 }' "${src}/${f}" > "${tmp}/${f}"
    fi
done
awk -v p="${p}" '{ print p $1 " " p $2 }' "${src}/utt2spk" > "${tmp}/utt2spk"
awk -v p="${p}" '{ s = p $1; for (i = 2; i <= NF; i++) s = s " " p $i; print s }' \
    "${src}/spk2utt" > "${tmp}/spk2utt"
if [ -f "${src}/segments" ]; then
    awk -v p="${p}" '{ $1 = p $1; $2 = p $2; print }' "${src}/segments" > "${tmp}/segments"
fi
rm -rf "${dst}"
mv "${tmp}" "${dst}"
