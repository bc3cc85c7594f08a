# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings and helpers of workflow/slurm-local/*.sh (sourced, not run).
#
# Environment overrides:
#   SLURM_LOCAL_STATE     state dir: configs, spool, database, pid and log files
#                         (default /var/lib/dla-repro-slurm)
#   SLURM_LOCAL_CLUSTER   ClusterName (default dlarepro)
#   SLURM_LOCAL_DB_PORT   port of the private MariaDB on 127.0.0.1 (default 3307,
#                         so that it does not clash with a system MariaDB on 3306)
#   SLURM_LOCAL_TIMEOUT   seconds to wait for each daemon (default 60)

STATE="${SLURM_LOCAL_STATE:-/var/lib/dla-repro-slurm}"
CLUSTER="${SLURM_LOCAL_CLUSTER:-dlarepro}"
DB_PORT="${SLURM_LOCAL_DB_PORT:-3307}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-60}"
CTLD_PORT=6817
SLURMD_PORT=6818
DBD_PORT=6819
DB_NAME=slurm_acct_db
DB_USER=slurm

# Debian's SLURM (daemons and the sbatch/sinfo/sacct clients) reads
# /etc/slurm/slurm.conf, and gres.conf, cgroup.conf and slurmdbd.conf from the
# same folder. start.sh symlinks these names to the generated files in
# $STATE/etc, so every client works without SLURM_CONF.
SLURM_ETC=/etc/slurm
CONF_FILES=(slurm.conf slurmdbd.conf gres.conf)
MARKER="workflow/slurm-local"

ETC="$STATE/etc"
LOGDIR="$STATE/log"
RUNDIR="$STATE/run"
DBDIR="$STATE/mysql"
DBRUN="$STATE/mysql-run"
DB_SOCKET="$DBRUN/mysqld.sock"
MUNGE_RUN="$STATE/munge"
MUNGE_SOCKET=/run/munge/munge.socket.2

SCRIPT_NAME="slurm-local/$(basename "$0")"

log() { echo "$SCRIPT_NAME: $*"; }
warn() { echo "$SCRIPT_NAME: WARNING: $*" >&2; }
die() {
  echo "$SCRIPT_NAME: ERROR: $*" >&2
  exit 1
}

# die, showing the tail of a log file first
die_log() {
  local file="$1"
  shift
  echo "$SCRIPT_NAME: ERROR: $*" >&2
  if [[ -s "$file" ]]; then
    echo "--- last lines of $file ---" >&2
    tail -n 30 "$file" >&2
    echo "---" >&2
  fi
  exit 1
}

require_root() {
  [[ "$(id -u)" -eq 0 ]] || die "must run as root (try: sudo $0 $*)"
}

# pid_file -> pid of a live process whose name starts with $2, or nothing
live_pid() {
  local pidfile="$1" name="$2" pid comm
  [[ -r "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  [[ "$comm" == "$name"* ]] || return 1
  echo "$pid"
}

# wait_for SECONDS COMMAND...: retry COMMAND every second, fail after SECONDS
wait_for() {
  local secs="$1" i
  shift
  for ((i = 0; i < secs; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  return 1
}

# stop_pid PIDFILE NAME: SIGTERM, wait up to 30 s, then SIGKILL
stop_pid() {
  local pidfile="$1" name="$2" pid i
  if ! pid="$(live_pid "$pidfile" "$name")"; then
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    [[ -d "/proc/$pid" ]] || break
    sleep 1
  done
  if [[ -d "/proc/$pid" ]]; then
    warn "$name (pid $pid) did not stop after 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$pidfile"
  log "stopped $name (pid $pid)"
}

munge_ok() { munge -n -S "$MUNGE_SOCKET" </dev/null 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
db_ok() { mariadb-admin --socket="$DB_SOCKET" -u root ping >/dev/null 2>&1; }
