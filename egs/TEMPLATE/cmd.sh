# shellcheck shell=bash
# How every "${cmd} [JOB=1:N] <log> <command>" call runs (see utils/run_jobs.sh).
#   train_cmd   CPU jobs (codebook fitting, statistics)
#   decode_cmd  many small parallel CPU jobs (feature dumps, encoding, decoding)
#   cuda_cmd    jobs that may use GPUs (ESPnet training); recipes pass --gpu N
#
# cmd_backend=local runs jobs as processes on this machine (the default).
# cmd_backend=slurm submits job arrays with "sbatch --wait" (single jobs with srun); add
# partitions, memory and time limits below, or export RPQ_CMD_BACKEND=slurm and
# RPQ_SLURM_OPTS="--partition=... --mem=16G" instead of editing this file. A job that runs on
# GPUs (cuda_cmd --gpu N; the unit steps with --device cuda) asks Slurm for them with
# --gres=gpu:N; a site that names GPUs otherwise sets RPQ_SLURM_GPU_OPT (e.g. "--gpus={n}" or
# "--gres=gpu:a100:{n}", {n} the number) or passes --gpu_opt to run_jobs.sh below.
cmd_backend=${RPQ_CMD_BACKEND:-local}

case "${cmd_backend}" in
    local)
        export train_cmd="utils/run_jobs.sh --backend local"
        export decode_cmd="utils/run_jobs.sh --backend local"
        export cuda_cmd="utils/run_jobs.sh --backend local"
        ;;
    slurm)
        export train_cmd="utils/run_jobs.sh --backend slurm --mem 16G --num_threads 4"
        export decode_cmd="utils/run_jobs.sh --backend slurm --mem 8G"
        export cuda_cmd="utils/run_jobs.sh --backend slurm --mem 32G --num_threads 8"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}' (local or slurm)" >&2
        return 1
        ;;
esac
