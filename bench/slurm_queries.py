"""How often the waiting jobs of one workflow ask SLURM, with many runs in flight (issue 11, item 6).

Submits ``--jobs`` SLURM jobs that only sleep, then starts one waiting process per job running
exactly what ``dla-repro submit`` runs while it waits (``SlurmExecutor.wait``: the workflow's
shared state file under a lock). ``sacct`` and ``squeue`` are wrapped to log every call. Prints
the calls made, the most in any one poll interval, and what one query per waiter and interval
would have cost. Needs a SLURM cluster (workflow/slurm-local); the jobs are cancelled at the end.

    python bench/slurm_queries.py [--jobs 100] [--poll 2] [--sleep 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAITER = """
import sys
from dlarepro.executors import make_executor
from dlarepro.executors.base import Submission
job, folder, poll = sys.argv[1], sys.argv[2], float(sys.argv[3])
submission = Submission({"job_id": job, "submitit_folder": folder}, None, "PENDING")
make_executor("slurm", {}).wait(submission, lambda text: None, poll)
print(submission.state)
"""


def wrap(tools: Path, log: Path) -> None:
    """sacct and squeue first on PATH: log the call, then run the real command."""
    tools.mkdir()
    for name in ("sacct", "squeue"):
        real = shutil.which(name)
        if real is None:
            sys.exit(f"{name} not found: this benchmark needs a SLURM cluster (workflow/slurm-local/start.sh)")
        (tools / name).write_text(f'#!/bin/bash\necho "$(date +%s.%N) {name}" >> {log}\nexec {real} "$@"\n')
        (tools / name).chmod(0o755)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="runs in flight (default 100)")
    parser.add_argument("--poll", type=float, default=2.0, help="poll interval of every waiter, s (default 2)")
    parser.add_argument("--sleep", type=float, default=2.0, help="what each job does: sleep this long, s")
    parser.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="slurm-queries-"))
    log = work / "calls.log"
    wrap(work / "bin", log)
    sbatch = ["sbatch", "--parsable", "-J", "dla-bench-queries", "-c", "1", "--mem=50M", "-o", "/dev/null"]
    if args.partition:
        sbatch += ["-p", args.partition]
    jobs = [subprocess.run(sbatch + ["--wrap", f"sleep {args.sleep}"], capture_output=True, text=True,
                           check=True).stdout.strip().split(";")[0] for _ in range(args.jobs)]
    env = {**os.environ, "PATH": f"{work / 'bin'}:{os.environ['PATH']}"}
    started = time.time()
    try:
        waiters = [subprocess.Popen([sys.executable, "-c", WAITER, job, str(work / "runs" / job / "submitit"),
                                     str(args.poll)], stdout=subprocess.PIPE, text=True, env=env) for job in jobs]
        states = [w.communicate()[0].strip() for w in waiters]
    finally:
        subprocess.run(["scancel", *jobs], capture_output=True)
    elapsed = time.time() - started
    calls = [(float(t), name) for t, name in (line.split() for line in log.read_text().splitlines())] \
        if log.exists() else []
    times = sorted(t for t, _ in calls)
    gaps = [b - a for a, b in zip(times, times[1:])]
    busiest = max((sum(1 for u in times if t <= u < t + args.poll) for t in times), default=0)
    result = {"jobs": args.jobs, "poll_seconds": args.poll, "job_seconds": args.sleep, "elapsed_seconds": round(elapsed, 1),
              "sacct_calls": sum(n == "sacct" for _, n in calls), "squeue_calls": sum(n == "squeue" for _, n in calls),
              "most_calls_in_one_interval": busiest, "smallest_gap_seconds": round(min(gaps), 3) if gaps else None,
              "one_query_per_waiter_would_be": int(args.jobs * elapsed / args.poll),
              "final_states": {s: states.count(s) for s in sorted(set(states))}}
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.jobs} jobs in flight (each sleeps {args.sleep} s), one waiter per job polling every {args.poll} s, "
              f"{elapsed:.0f} s until all ended ({result['final_states']}):")
        print(f"  sacct calls {result['sacct_calls']}, squeue calls {result['squeue_calls']}, at most "
              f"{busiest} call(s) in any {args.poll} s window, smallest gap {result['smallest_gap_seconds']} s")
        print(f"  (one query per waiter and interval would have been ~{result['one_query_per_waiter_would_be']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
