#!/usr/bin/env bash
# The GPU figures against flash-kmeans and of the fused search, in one run on one GPU (about 6-7 minutes on one
# H200, compilation included; each step under its own time limit so one slow step cannot eat
# the others'): pytest tests/quant/test_search.py (every tile in use exact, the autotuned
# searches), the peers (bench/gpu_peers.py: ours against flash-kmeans fp16 / fp32 and
# fast_pytorch_kmeans, time per pass and objective, four shapes), the Lloyd pass at the
# paper's shape and the fused kernel tile by tile (bench/gpu_run.py --parts lloyd,tiles), and
# the rehearsal of stages 2-4 on 15 h of audio (--parts rehearsal --hours 15). Results in
# $OUT (gpu_peers.md, gpu_run.md, pytest.txt), progress on stdout.
#
#   bash bench/gpu_figures.sh            # needs CUDA, torch, triton; wheels from ./wheels
#
# Wheels (bench-only: flash-kmeans 0.3.1, fast_pytorch_kmeans; for the rehearsal s3prl,
# soundfile, PyYAML, tqdm) are installed without an index from WHEELS_DIR (default ./wheels;
# fill it with `pip download --no-deps -d wheels flash-kmeans==0.3.1 fast-pytorch-kmeans
# s3prl==0.4.18 soundfile pyyaml tqdm`).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "${here}")
OUT=${OUT:-/tmp/gpu_figures_out}
wheels=${WHEELS_DIR:-${root}/wheels}
python=${PYTHON:-python}
mkdir -p "${OUT}"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" OUT
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
if [ -d "${wheels}" ]; then
    log "installing the wheels in ${wheels}"
    "${python}" -m pip install --no-index --no-deps --quiet "${wheels}"/*.whl || log "wheel install failed"
fi
"${python}" -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
status=0
log "pytest tests/quant/test_search.py"
(cd "${root}" && timeout 150 "${python}" -m pytest -q -p no:cacheprovider tests/quant/test_search.py \
    2>&1 | tail -25 | tee "${OUT}/pytest.txt") || status=1
log "peers"
timeout 150 "${python}" "${here}/gpu_peers.py" --out "${OUT}" || status=1
log "Lloyd pass and tiles"
timeout 120 "${python}" "${here}/gpu_run.py" --out "${OUT}/lloyd_tiles" --parts lloyd,tiles --reps 3 \
    --tile_n 131072 || status=1
log "rehearsal, 15 h"
timeout 200 "${python}" "${here}/gpu_run.py" --out "${OUT}/rehearsal" --parts rehearsal --hours 15 || status=1
cat "${OUT}"/gpu_peers.md "${OUT}"/lloyd_tiles/gpu_run.md "${OUT}"/rehearsal/gpu_run.md 2>/dev/null
log "done (status ${status})"
exit "${status}"
