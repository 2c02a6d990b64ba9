# shellcheck shell=bash
# Where the corpora are. ML-SUPERB has no automatic download: unpack it and point MLSUPERB at
# the directory that holds <source>/<lang>/ (or export MLSUPERB=/path before running).
MLSUPERB=${MLSUPERB:-}
