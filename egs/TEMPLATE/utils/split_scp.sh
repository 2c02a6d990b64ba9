#!/usr/bin/env bash
# Split a keyed table into N nearly equal, contiguous parts:
#     split_scp.sh <in.scp> <out.1> ... <out.N>
# Lines keep their order; every line lands in exactly one part (the first parts get one extra
# line when the count does not divide). Parts are written via temp names.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "Usage: $0 <in.scp> <out.1> [<out.2> ...]" >&2
    exit 2
fi
in=$1; shift
[ -f "${in}" ] || { echo "$0: no such file: ${in}" >&2; exit 1; }
n=$#
total=$(wc -l < "${in}")
if [ "${total}" -lt "${n}" ]; then
    echo "$0: ${in} has ${total} lines, fewer than the ${n} parts asked for" >&2
    exit 1
fi
start=1
i=0
for out in "$@"; do
    count=$(( total / n + (i < total % n ? 1 : 0) ))
    mkdir -p "$(dirname "${out}")"
    sed -n "${start},$((start + count - 1))p" "${in}" > "${out}.tmp"
    mv "${out}.tmp" "${out}"
    start=$((start + count))
    i=$((i + 1))
done
