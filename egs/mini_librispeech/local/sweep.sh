#!/usr/bin/env bash
# RPQ trade-off sweep on the demo (README, "The RPQ paper's claims"): the demo's RPQ 4 x 128 at
# two more dims ratios p (1/8, 1/2), and M = 2, 4, 8 at 24 bits/frame (2 x 4096, 4 x 64,
# 8 x 8, p = 1/M), trained and scored beside the demo's K-means, PQ and RPQ by the shared
# engine (stages 3-12; already fitted, trained or decoded models are skipped). Run from the
# recipe dir after the demo's stages 1-2 (./run.sh, or ./run.sh --stage 1 --stop_stage 2):
#     local/sweep.sh   # about 65 min on 2 idle cores (estimate: 5 new models, 3 at once)
#     local/sweep.sh -- --asr_args "--max_epoch 1"   # engine options after "--" go to ./run.sh
# The RESULTS.md table gains one row per model and the relative improvement over K-means.
set -euo pipefail

stage=3                # first engine stage (1: also prepare the data and features)
stop_stage=12          # last engine stage
discretizers="kmeans pq rpq rpq_p0125 rpq_p05 rpq_m2_k4096 rpq_m4_k64 rpq_m8_k8"  # conf/units/<name>.yaml
train_jobs=3           # models trained at once in stage 8
help_message="Usage: $0 [sweep options] [-- engine options for ./run.sh]"

. utils/parse_options.sh  # sweep options; engine options (for ./run.sh) follow "--"

for d in ${discretizers}; do
    [ -f "conf/units/${d}.yaml" ] || { echo "$0: no discretizer config conf/units/${d}.yaml" >&2; exit 2; }
done
echo "$(date '+%Y-%m-%dT%H:%M:%S') sweep: stages ${stage}-${stop_stage}, discretizers: ${discretizers}" >&2
./run.sh --stage "${stage}" --stop_stage "${stop_stage}" --discretizers "${discretizers}" \
    --train_jobs "${train_jobs}" "$@"
