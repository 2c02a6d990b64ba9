#!/usr/bin/env bash
# Merge keyed tables into one sorted (LC_ALL=C) table, refusing duplicate keys:
#     merge_sorted.sh <out> <in.1> [<in.2> ...]
# The output is written via a temp name and renamed, so it is never half-written.
set -euo pipefail
export LC_ALL=C
if [ $# -lt 2 ]; then
    echo "Usage: $0 <out> <in.1> [<in.2> ...]" >&2
    exit 2
fi
out=$1; shift
for f in "$@"; do
    [ -f "${f}" ] || { echo "$0: missing part ${f}" >&2; exit 1; }
done
sort -k1,1 -s "$@" > "${out}.tmp"
dup=$(cut -d' ' -f1 "${out}.tmp" | uniq -d | head -n 1)
if [ -n "${dup}" ]; then
    rm -f "${out}.tmp"
    echo "$0: duplicate key '${dup}' in $*" >&2
    exit 1
fi
mv "${out}.tmp" "${out}"
