#!/usr/bin/env bash
# All GPU measurements of bench/gpu_run.py in one go (Lloyd pass: fp32 / TF32 / certified fp16 in
# torch / the fused Triton search with rows prepared per call and once per fit, its GEMM + scan
# variant and its uncertified fast mode, with a per-phase breakdown; a streamed fit against an
# in-memory one; the WavLM-Large rehearsal of the recipe's stages 2-4 on 3 h of audio; the fused
# kernel tile by tile, fp16 and bf16, to find the wrong compiled tile), about 6 minutes on one
# H200 (kernel compilation and autotuning included). Writes $OUT/gpu_run.md (markdown tables)
# and $OUT/gpu_run.json; progress with timestamps on stdout.
#
#   bash bench/gpu_run.sh                 # full size, needs CUDA, torch, triton, numpy
#   bash bench/gpu_run.sh --tiny          # CPU smoke test (Triton interpreter), a few minutes
#   bash bench/gpu_run.sh --parts lloyd,stream   # some parts only (of lloyd, stream, rehearsal, tiles;
#                                                # these two: about 45 s plus the start on one H200)
#
# Without this repository's venv, the extra pure-Python / small wheels for the rehearsal are
# installed from WHEELS_DIR (default: ./wheels) when that directory exists.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "${here}")
OUT=${OUT:-/tmp/gpu_run_out}
wheels=${WHEELS_DIR:-${root}/wheels}
python=${PYTHON:-python}

if [ -d "${wheels}" ] && ! "${python}" -c "import s3prl, soundfile, yaml, tqdm" 2>/dev/null; then
    echo "[$(date -u +%H:%M:%S)] installing the wheels in ${wheels}"
    "${python}" -m pip install --no-index --no-deps --quiet "${wheels}"/*.whl
fi
mkdir -p "${OUT}"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
export OUT
echo "[$(date -u +%H:%M:%S)] bench/gpu_run.py $* -> ${OUT}/gpu_run.md"
"${python}" "${here}/gpu_run.py" --out "${OUT}" "$@"
