#!/usr/bin/env bash
# Stop the local SLURM cluster started by start.sh (the daemons whose pid files
# are in the state dir; a munged that start.sh did not start is left alone).
# Installed packages stay.
#
#   sudo workflow/slurm-local/stop.sh          # stop; jobs and accounting are kept
#   sudo workflow/slurm-local/stop.sh --wipe   # also cancel all jobs and delete the
#                                              # state dir (job ids restart at 1!)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

wipe=0
for arg in "$@"; do
  case "$arg" in
  --wipe) wipe=1 ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    die "unknown argument: $arg"
    ;;
  esac
done
require_root "$@"

if [[ ! -d "$STATE" ]]; then
  log "no state dir $STATE: nothing to stop"
  exit 0
fi

if [[ $wipe -eq 1 ]] && live_pid "$RUNDIR/slurmctld.pid" slurmctld >/dev/null; then
  # Cancel the jobs first, so that no slurmstepd outlives the wiped state.
  mapfile -t jobs < <(squeue -h -o %A 2>/dev/null || true)
  if [[ ${#jobs[@]} -gt 0 ]]; then
    log "cancelling ${#jobs[@]} job(s): ${jobs[*]}"
    scancel "${jobs[@]}" 2>/dev/null || true
    no_jobs() { [[ -z "$(squeue -h 2>/dev/null)" ]]; }
    wait_for 30 no_jobs ||
      warn "jobs still listed by squeue after 30 s"
  fi
fi

stopped=0
for d in slurmd slurmctld slurmdbd; do
  if live_pid "$RUNDIR/$d.pid" "$d" >/dev/null; then
    stop_pid "$RUNDIR/$d.pid" "$d"
    stopped=$((stopped + 1))
  fi
  rm -f "$RUNDIR/$d.pid"
done
if live_pid "$DBRUN/mariadbd.pid" mariadbd >/dev/null; then
  stop_pid "$DBRUN/mariadbd.pid" mariadbd
  stopped=$((stopped + 1))
fi
if live_pid "$MUNGE_RUN/munged.pid" munged >/dev/null; then
  stop_pid "$MUNGE_RUN/munged.pid" munged
  stopped=$((stopped + 1))
fi
[[ $stopped -gt 0 ]] || log "no daemon of $STATE was running"

if [[ $wipe -eq 1 ]]; then
  if [[ ! -f "$STATE/.dla-repro-slurm" ]]; then
    die "$STATE has no .dla-repro-slurm marker: not deleting it"
  fi
  for f in "${CONF_FILES[@]}"; do
    dst="$SLURM_ETC/$f"
    if [[ -L "$dst" && "$(readlink "$dst")" == "$ETC/$f" ]]; then
      rm -f "$dst"
    fi
  done
  rm -rf -- "$STATE"
  log "deleted $STATE and its /etc/slurm symlinks (SLURM job ids restart at 1 on the next start)"
fi
