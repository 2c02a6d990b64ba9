#!/usr/bin/env bash
# Run a command as a numbered job array, Kaldi run.pl/slurm.pl style:
#
#     run_jobs.sh [options] [JOB=1:N] <log> <command> [<args>...]
#
# Every literal "JOB" in <log> and in the command is replaced by the job index. Each job's
# stdout and stderr go to its log, which starts with the command and ends with
# "# Ended (code C) ...". The call succeeds only when every job succeeds; otherwise it names
# each failing job's log and exits 1. Arguments that contain spaces or shell characters are
# quoted; to run a pipeline, pass it as one argument to "bash -c".
#
# Backends (usually chosen once in cmd.sh):
#   local  (default) up to --max_jobs_run processes at once on this machine
#   slurm  a job array through "sbatch --wait" (one job: "srun"; one job on --num_nodes N > 1
#          nodes: "sbatch --wait --nodes N"), each task re-entering this script with the local
#          backend; --gpu N > 0 asks for N GPUs per job (--gpu_opt, default --gres=gpu:{n});
#          --mem, --time, --partition and free-form --slurm_opts are passed on; stopping this script (INT, TERM, HUP) cancels its Slurm
#          jobs.
set -euo pipefail

backend=local     # local or slurm
max_jobs_run=0    # local: most jobs at once (0: number of CPUs)
gpu=0             # GPUs per job (slurm: requested with gpu_opt; local: only recorded)
gpu_opt=${RPQ_SLURM_GPU_OPT:-"--gres=gpu:{n}"}  # slurm: the option that asks for the GPUs, {n} their
                  # number (a site's own form: --gpus={n}, --gres=gpu:a100:{n}; default:
                  # $RPQ_SLURM_GPU_OPT, else --gres=gpu:{n})
mem=""            # slurm --mem
time=""           # slurm --time
partition=""      # slurm --partition
slurm_opts=${RPQ_SLURM_OPTS:-}  # more sbatch/srun options, word-split (default: $RPQ_SLURM_OPTS)
num_threads=0     # threads per job: exported as OMP_NUM_THREADS when > 0 (0: inherit)
num_nodes=1       # nodes for one job (slurm only: the command runs once on the first node of
                  # the allocation and spreads itself, as ESPnet's launcher does with mpirun)

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --backend|--max_jobs_run|--max-jobs-run|--gpu|--gpu_opt|--gpu-opt|--mem|--time|--partition|--slurm_opts|--slurm-opts|--num_threads|--num-threads|--num_nodes|--num-nodes)
            [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }
            name=${1#--}; name=${name//-/_}
            printf -v "${name}" '%s' "$2"
            shift 2 ;;
        --help|-h) usage ;;
        --*) echo "$0: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done

first=1; last=1; has_range=false
if [[ $# -gt 0 && "$1" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
    first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; has_range=true
    shift
    if [ "${first}" -gt "${last}" ]; then
        echo "$0: empty job range JOB=${first}:${last}" >&2
        exit 2
    fi
elif [[ $# -gt 0 && "$1" =~ ^[A-Za-z]+= ]]; then
    echo "$0: bad job range '$1' (expected JOB=1:N)" >&2
    exit 2
fi
[ $# -ge 2 ] || usage
case "${num_nodes}" in ''|*[!0-9]*|0) echo "$0: --num_nodes must be a positive integer" >&2; exit 2 ;; esac
case "${gpu}" in ''|*[!0-9]*) echo "$0: --gpu ${gpu}: must be 0 or a positive integer" >&2; exit 2 ;; esac
if [ "${num_nodes}" -gt 1 ] && { [ "${backend}" != slurm ] || ${has_range}; }; then
    echo "$0: --num_nodes ${num_nodes} needs the slurm backend and a single job" >&2
    exit 2
fi
log_template=$1
shift

# Join the command into one string, quoting arguments that need it.
cmdline=""
for arg in "$@"; do
    if [[ "${arg}" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
        cmdline+="${arg} "
    else
        cmdline+="$(printf '%q' "${arg}") "
    fi
done

run_one() {  # run_one <job index>: one job, logged; returns its exit code
    local id=$1 log cmd start rc
    log=${log_template//JOB/${id}}
    cmd=${cmdline//JOB/${id}}
    mkdir -p "$(dirname "${log}")"
    start=$(date +%s)
    {
        echo "# ${cmd}"
        echo "# Started at $(date)"
    } > "${log}"
    set +e
    if [ "${num_threads}" -gt 0 ]; then
        OMP_NUM_THREADS=${num_threads} bash -c "${cmd}" >> "${log}" 2>&1 < /dev/null
    else
        bash -c "${cmd}" >> "${log}" 2>&1 < /dev/null
    fi
    rc=$?
    set -e
    {
        echo "# Accounting: time=$(( $(date +%s) - start )) threads=${num_threads} gpu=${gpu}"
        echo "# Ended (code ${rc}) at $(date)"
    } >> "${log}"
    return "${rc}"
}

check_logs() {  # fail naming every job whose log does not end with code 0, and its cause
    local id log cause failed=0
    for ((id = first; id <= last; id++)); do
        log=${log_template//JOB/${id}}
        if [ ! -f "${log}" ] || ! tail -n 1 "${log}" | grep -q '^# Ended (code 0)'; then
            cause=""
            [ ! -f "${log}" ] || cause=$("$(dirname "$0")/job_error.sh" "${log}" || true)
            echo "$0: job ${id} of ${first}:${last} failed; see ${log}${cause:+ (${cause})}" >&2
            failed=$((failed + 1))
        fi
    done
    if [ "${failed}" -gt 0 ]; then
        [ "${first}" -eq "${last}" ] && [ -f "${log}" ] && tail -n 20 "${log}" | sed 's/^/  | /' >&2
        return 1
    fi
}

case "${backend}" in
    local)
        # (nproc alone would follow OMP_NUM_THREADS, which is about threads inside a job)
        [ "${max_jobs_run}" -gt 0 ] || max_jobs_run=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)
        pids=()
        for ((id = first; id <= last; id++)); do
            while [ "$(jobs -rp | wc -l)" -ge "${max_jobs_run}" ]; do
                wait -n || true
            done
            run_one "${id}" &
            pids+=("$!")
        done
        for pid in "${pids[@]}"; do
            wait "${pid}" || true
        done
        check_logs || exit 1
        ;;
    slurm)
        command -v sbatch >/dev/null || { echo "$0: backend slurm but sbatch is not on PATH" >&2; exit 1; }
        opts=()
        [ "${gpu}" -gt 0 ] && opts+=("${gpu_opt//\{n\}/${gpu}}")
        [ -n "${mem}" ] && opts+=("--mem=${mem}")
        [ -n "${time}" ] && opts+=("--time=${time}")
        [ -n "${partition}" ] && opts+=("--partition=${partition}")
        [ "${num_threads}" -gt 1 ] && opts+=("--cpus-per-task=${num_threads}")
        # shellcheck disable=SC2206  # slurm_opts is a word list on purpose
        opts+=(${slurm_opts})
        self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
        inner=(bash "${self}" --backend local --gpu "${gpu}" --num_threads "${num_threads}")
        # Stopping this script (Ctrl-C, TERM, HUP of a lost login session) cancels its Slurm
        # jobs: "sbatch --wait" alone leaves the array running, and tasks left behind would
        # write into the same outputs as the tasks of the next run.
        submitted=""; jobid_file=""
        cancel() {
            local id=""
            [ -n "${jobid_file}" ] && [ -s "${jobid_file}" ] && id=$(cut -d';' -f1 "${jobid_file}")
            [ -n "${id}" ] && scancel "${id}" 2>/dev/null
            [ -n "${submitted}" ] && kill -TERM "${submitted}" 2>/dev/null
            echo "$0: stopped by a signal${id:+; cancelled Slurm job ${id}}" >&2
            exit 130
        }
        trap cancel INT TERM HUP
        if [ "${num_nodes}" -gt 1 ]; then
            script=$(dirname "${log_template}")/q/$(basename "${log_template}" .log).sh
            mkdir -p "$(dirname "${script}")"
            {
                echo "#!/usr/bin/env bash"
                echo "cd $(printf '%q' "${PWD}")"
                printf '%q ' "${inner[@]}" "${log_template}" "$@"
                echo
            } > "${script}"
            jobid_file=${script%.sh}.jobid
            sbatch --wait --parsable --nodes="${num_nodes}" --ntasks-per-node=1 --output=/dev/null \
                --job-name="$(basename "${script}" .sh)" "${opts[@]}" "${script}" > "${jobid_file}" &
            submitted=$!
            wait "${submitted}" || true
        elif ! ${has_range}; then
            srun --job-name="$(basename "${log_template}" .log)" "${opts[@]}" "${inner[@]}" "${log_template}" "$@" &
            submitted=$!
            wait "${submitted}" || true
        else
            qdir=$(dirname "${log_template}")/q
            mkdir -p "${qdir}"
            script=${qdir}/$(basename "${log_template//JOB/array}" .log).sh
            {
                echo "#!/usr/bin/env bash"
                echo "cd $(printf '%q' "${PWD}")"
                printf '%q ' "${inner[@]}"
                # shellcheck disable=SC2016  # expanded by the job script, not here
                printf 'JOB=${SLURM_ARRAY_TASK_ID}:${SLURM_ARRAY_TASK_ID} '
                printf '%q ' "${log_template}" "$@"
                echo
            } > "${script}"
            jobid_file=${script%.sh}.jobid
            sbatch --wait --parsable --array="${first}-${last}" --job-name="$(basename "${script}" .sh)" \
                --output=/dev/null "${opts[@]}" "${script}" > "${jobid_file}" &
            submitted=$!
            wait "${submitted}" || true
        fi
        trap - INT TERM HUP
        check_logs || exit 1
        ;;
    *)
        echo "$0: unknown backend '${backend}' (local or slurm)" >&2
        exit 2 ;;
esac
