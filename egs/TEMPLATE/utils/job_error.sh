#!/usr/bin/env bash
# The cause of failed jobs, one line, from their logs (run_jobs.sh logs):
#     job_error.sh <log> [<log> ...]
# For each log that does not end with "# Ended (code 0)": its first "error: " line (the one line
# rpq-units and the step scripts give for bad input), else the last line of a Python traceback
# (e.g. "OSError: [Errno 28] No space left on device"), else its last line of output. Distinct
# causes of up to three logs, joined by spaces; nothing when every log ended well.
set -euo pipefail
for f in "$@"; do
    [ -f "${f}" ] || continue
    ! tail -n 1 "${f}" | grep -q '^# Ended (code 0)' || continue
    grep -m 1 '^error: ' "${f}" \
        || grep -E '^[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt)(:|$)' "${f}" | tail -n 1 \
        || grep -v '^#' "${f}" | tail -n 1 \
        || true
done | awk 'NF && !seen[$0]++' | head -n 3 | paste -sd' ' -
