#!/usr/bin/env bash
# Show the state of the local SLURM cluster: daemons, sinfo, squeue, recent sacct.
# Exit 0 if the cluster is usable (node idle/mixed/allocated and sacct works),
# 1 otherwise. Runs as any user (root sees every user's jobs).
#
#   workflow/slurm-local/status.sh           # summary
#   workflow/slurm-local/status.sh --quiet   # only the exit code and one line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

quiet=0
case "${1:-}" in
-q | --quiet) quiet=1 ;;
"") ;;
-h | --help)
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
  ;;
*) die "unknown argument: $1" ;;
esac

say() { [[ $quiet -eq 1 ]] || echo "$@"; }
problems=()

say "== daemons (state dir $STATE)"
check_daemon() { # name pidfile
  local pid
  if pid="$(live_pid "$2" "$1")"; then
    say "  $1: running (pid $pid)"
  else
    say "  $1: NOT running"
    problems+=("$1 not running")
  fi
}
if munge_ok; then say "  munge: credentials OK"; else
  say "  munge: NOT working"
  problems+=("munge not working")
fi
check_daemon mariadbd "$DBRUN/mariadbd.pid"
for d in slurmdbd slurmctld slurmd; do
  check_daemon "$d" "$RUNDIR/$d.pid"
done

HOST="$(hostname -s)"
say "== sinfo"
if out="$(sinfo -N -o '%N %P %T %c %m %G' 2>&1)"; then
  say "$out"
  state="$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1)"
  if [[ ! "$state" =~ ^(idle|mixed|allocated|completing)$ ]]; then
    problems+=("node $HOST is '${state:-missing}'")
  fi
else
  say "$out"
  problems+=("sinfo failed")
fi

say "== squeue"
if out="$(squeue -o '%.8i %.9P %.20j %.8u %.2t %.10M %.6D %R' 2>&1)"; then say "$out"; else
  say "$out"
  problems+=("squeue failed")
fi

say "== sacct (last 10 jobs of the past day)"
if out="$(sacct -a -X -S now-1days -o JobID,JobName%20,User,State,Elapsed,ExitCode 2>&1)"; then
  say "$(head -n 2 <<<"$out")"
  say "$(tail -n +3 <<<"$out" | tail -n 10)"
else
  say "$out"
  problems+=("sacct failed (accounting/slurmdbd down?)")
fi

if [[ ${#problems[@]} -eq 0 ]]; then
  echo "slurm-local: cluster usable (state and logs: $STATE, $LOGDIR)"
  exit 0
fi
msg="$(printf '%s; ' "${problems[@]}")"
echo "slurm-local: cluster NOT usable: ${msg%; } (logs: $LOGDIR; start with $HERE/start.sh)" >&2
exit 1
