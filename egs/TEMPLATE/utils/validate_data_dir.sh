#!/usr/bin/env bash
# Check a Kaldi-style data dir: wav.scp, utt2spk, spk2utt (and text unless --no-text) exist,
# are UTF-8 text, are sorted (LC_ALL=C) with unique keys, cover the same utterances, and spk2utt
# matches utt2spk. Prints one line naming the file and the problem, and exits 1, on the first failure.
#     validate_data_dir.sh [--no-text] <data-dir>
set -euo pipefail
export LC_ALL=C

need_text=true
if [ "${1:-}" = --no-text ]; then need_text=false; shift; fi
if [ $# -ne 1 ]; then
    echo "Usage: $0 [--no-text] <data-dir>" >&2
    exit 2
fi
d=$1
fail() { echo "$0: $*" >&2; exit 1; }

[ -d "${d}" ] || fail "no such data dir: ${d}"
tables=(wav.scp utt2spk spk2utt)
${need_text} && tables+=(text)
[ -f "${d}/segments" ] && tables+=(segments)
for f in "${tables[@]}"; do
    [ -f "${d}/${f}" ] || fail "missing ${d}/${f}"
    [ -s "${d}/${f}" ] || fail "empty ${d}/${f}"
    if ! iconv -f UTF-8 -t UTF-8 "${d}/${f}" > /dev/null 2>&1; then
        line=$(LC_ALL=C.UTF-8 grep -naxv '.*' "${d}/${f}" 2>/dev/null | head -n 1 | cut -d: -f1 || true)
        fail "${d}/${f}${line:+: line ${line}} is not UTF-8 text (convert it, e.g. iconv -f latin1 -t utf-8)"
    fi
    bad=$(awk 'NF == 0 { print NR; exit }' "${d}/${f}")
    [ -z "${bad}" ] || fail "${d}/${f}: line ${bad} is empty"
    if ! cut -d' ' -f1 "${d}/${f}" | sort -c 2>/dev/null; then
        line=$(cut -d' ' -f1 "${d}/${f}" | sort -c 2>&1 | sed 's/.*disorder: //' || true)
        fail "${d}/${f} is not sorted (LC_ALL=C sort) at key '${line}'"
    fi
    dup=$(cut -d' ' -f1 "${d}/${f}" | uniq -d | head -n 1)
    [ -z "${dup}" ] || fail "${d}/${f}: duplicate key '${dup}'"
done

utts=${d}/utt2spk
[ -f "${d}/segments" ] && recs=${d}/segments || recs=${d}/wav.scp
others=("${recs}")
${need_text} && others+=("${d}/text")
for f in "${others[@]}"; do
    diff_key=$(join -v1 -v2 -o 0 <(cut -d' ' -f1 "${utts}") <(cut -d' ' -f1 "${f}") | head -n 1)
    [ -z "${diff_key}" ] || fail "utterance '${diff_key}' is in only one of ${utts} and ${f}"
done
if [ -f "${d}/segments" ]; then
    missing=$(join -v1 -1 2 -o 1.2 <(sort -k2,2 "${d}/segments") <(cut -d' ' -f1 "${d}/wav.scp") | head -n 1)
    [ -z "${missing}" ] || fail "${d}/segments names recording '${missing}' that is not in ${d}/wav.scp"
fi
expected=$(awk '{ if (!($2 in u)) order[n++] = $2; u[$2] = u[$2] " " $1 } END { for (i = 0; i < n; i++) print order[i] u[order[i]] }' "${utts}" | sort)
if [ "${expected}" != "$(sort "${d}/spk2utt")" ]; then
    fail "${d}/spk2utt does not match ${d}/utt2spk (rebuild it with utils/utt2spk_to_spk2utt.sh)"
fi
echo "$0: ${d} is valid ($(wc -l < "${utts}") utterances)" >&2
