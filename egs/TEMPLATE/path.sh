# shellcheck shell=bash
# Environment for the recipes: the repository's virtual environment, C collation for the
# Kaldi-style tables, UTF-8 Python I/O.
rpq_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "${rpq_root}/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "${rpq_root}/.venv/bin/activate"
fi
export LC_ALL=C
export PYTHONIOENCODING=UTF-8
export PYTHONUNBUFFERED=1
