#!/usr/bin/env bash
# utt2spk on stdin (or file) -> spk2utt on stdout, speakers sorted (LC_ALL=C).
set -euo pipefail
export LC_ALL=C
awk '{ if (!($2 in u)) order[n++] = $2; u[$2] = u[$2] " " $1 } END { for (i = 0; i < n; i++) print order[i] u[order[i]] }' "$@" | sort
