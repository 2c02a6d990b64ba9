"""Several ESPnet decodes in one process.

An ESPnet inference process spends 10-40 s importing espnet2 and its dependencies on a 2-core
CPU before it decodes a test set of a few hundred short utterances in seconds; the engine makes
one decode per (model, test set, LM or not, split of the keys), so starting one process per
decode spent most of stage 9 starting processes. This module runs a list of decodes, each one a
complete command line of ``espnet2.bin.mt_inference`` or ``espnet2.bin.asr_inference``, through
that module's own ``main()`` one after the other in a single process: the decoding itself is
ESPnet's, unchanged (the same options, the same ``<output_dir>/1best_recog/text``); only the
start-up is paid once. ESPnet offers no multi-set entry point, hence this small runner.

A failing decode is logged with its traceback and the runner goes on with the next one, so one
bad model does not cost the others' decodes; the exit status is 1 when any failed. The caller
checks each decode's output file.

Usage (one decode per line of the jobs file, the arguments shell-quoted)::

    python -m rpq_units.pipeline.espnet_decode --bin mt_inference --jobs jobs.1.txt
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import time
import traceback

BINARIES = ("mt_inference", "asr_inference")


def read_jobs(path: str) -> list[list[str]]:
    """The decodes of a jobs file: one shell-quoted argument list per non-empty line."""
    with open(path, encoding="utf-8") as f:
        return [shlex.split(line) for line in f if line.strip()]


def run_decodes(binary: str, jobs: list[list[str]]) -> int:
    """Run each argument list through ``espnet2.bin.<binary>.main``; the number that failed."""
    if binary not in BINARIES:
        raise ValueError(f"binary must be one of {BINARIES}, got {binary!r}")
    main = importlib.import_module(f"espnet2.bin.{binary}").main
    failed = 0
    for i, argv in enumerate(jobs, 1):
        start = time.perf_counter()
        print(f"# decode {i}/{len(jobs)}: {binary} {shlex.join(argv)}", file=sys.stderr, flush=True)
        try:
            main(argv)
        except SystemExit as e:  # argparse's usage errors
            if e.code not in (0, None):
                failed += 1
                print(f"# decode {i}/{len(jobs)} failed: exit {e.code}", file=sys.stderr, flush=True)
                continue
        except Exception:  # noqa: BLE001 - logged with its traceback; the next decode still runs
            failed += 1
            traceback.print_exc()
            print(f"# decode {i}/{len(jobs)} failed", file=sys.stderr, flush=True)
            continue
        print(f"# decode {i}/{len(jobs)} done in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rpq_units.pipeline.espnet_decode",
        description="Run several ESPnet decodes (one command line each) in one process.",
    )
    parser.add_argument("--bin", required=True, choices=BINARIES, help="the espnet2.bin module")
    parser.add_argument("--jobs", required=True, help="file with one decode's arguments per line")
    args = parser.parse_args(argv)
    jobs = read_jobs(args.jobs)
    if not jobs:
        logging.info("%s: no decode", args.jobs)
        return 0
    return 1 if run_decodes(args.bin, jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
