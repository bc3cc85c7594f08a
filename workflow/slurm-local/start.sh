#!/usr/bin/env bash
# Start a one-node SLURM cluster with accounting on this machine (localhost):
# munged, a private MariaDB on 127.0.0.1, slurmdbd, slurmctld, slurmd.
#
#   sudo workflow/slurm-local/install.sh   # once: Debian packages
#   sudo workflow/slurm-local/start.sh     # idempotent: safe to re-run
#
# Re-running starts only what is not running, and restarts a SLURM daemon whose
# generated config changed. Configs are generated from the *.in templates beside
# this script into $SLURM_LOCAL_STATE/etc (default /var/lib/dla-repro-slurm/etc).
# See README.md in this folder; common.sh lists the environment overrides.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

require_root "$@"
for bin in slurmctld slurmd slurmdbd sacct sacctmgr sinfo munged mariadbd mariadb-install-db; do
  command -v "$bin" >/dev/null 2>&1 ||
    die "$bin not found: run $HERE/install.sh first"
done

# Only one local cluster at a time: /etc/slurm points at one state dir.
if [[ -L "$SLURM_ETC/slurm.conf" ]]; then
  other="$(readlink "$SLURM_ETC/slurm.conf")"
  other="${other%/etc/slurm.conf}"
  if [[ "$other" != "$STATE" ]] && live_pid "$other/run/slurmctld.pid" slurmctld >/dev/null; then
    die "a local cluster with state dir $other is running: stop it first (SLURM_LOCAL_STATE=$other $HERE/stop.sh)"
  fi
fi

mkdir -p "$ETC" "$LOGDIR" "$RUNDIR" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
runuser -u mysql -- test -x "$STATE" ||
  die "user mysql cannot reach $STATE: choose a SLURM_LOCAL_STATE whose parent folders are searchable by all (not under /root)"
chmod 755 "$STATE"
# marker: stop.sh --wipe deletes only a state dir that carries it
echo "state dir of $HERE (see README.md there)" >"$STATE/.dla-repro-slurm"
chmod 700 "$ETC"

# --- node description -------------------------------------------------------
HOST="$(hostname -s)"
[[ -n "$HOST" ]] || die "hostname -s is empty"
CPUS="$(nproc)"
mem_total_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
# "a bit below the machine's": keep 5% (at least 512 MB) for the OS and daemons
margin=$((mem_total_mb / 20))
((margin >= 512)) || margin=512
MEM_MB=$((mem_total_mb - margin))
((MEM_MB > 0)) || die "cannot compute RealMemory from /proc/meminfo (MemTotal ${mem_total_mb} MB)"
DEF_MEM_PER_CPU=$((MEM_MB / CPUS))

# Database password: made once, kept in the state dir (root only).
if [[ ! -s "$ETC/db.pass" ]]; then
  (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$ETC/db.pass")
fi
DB_PASS="$(cat "$ETC/db.pass")"

# --- configs ----------------------------------------------------------------
render() { # template -> stdout
  sed -e "s|@@CLUSTER@@|$CLUSTER|g" -e "s|@@HOST@@|$HOST|g" -e "s|@@STATE@@|$STATE|g" \
    -e "s|@@CPUS@@|$CPUS|g" -e "s|@@MEM_MB@@|$MEM_MB|g" -e "s|@@DEF_MEM_PER_CPU@@|$DEF_MEM_PER_CPU|g" \
    -e "s|@@CTLD_PORT@@|$CTLD_PORT|g" -e "s|@@SLURMD_PORT@@|$SLURMD_PORT|g" \
    -e "s|@@DBD_PORT@@|$DBD_PORT|g" -e "s|@@DB_PORT@@|$DB_PORT|g" -e "s|@@DB_USER@@|$DB_USER|g" \
    -e "s|@@DB_PASS@@|$DB_PASS|g" -e "s|@@DB_NAME@@|$DB_NAME|g" "$1"
}
for f in "${CONF_FILES[@]}"; do
  tmp="$ETC/.$f.new"
  render "$HERE/$f.in" >"$tmp"
  # a placeholder left over (outside comments) means the template and render() disagree
  if grep -v '^#' "$tmp" | grep -q '@@[A-Z_]*@@'; then
    die "unknown placeholder in $HERE/$f.in: $(grep -v '^#' "$tmp" | grep -o '@@[A-Z_]*@@' | head -n1)"
  fi
  if [[ "$f" == slurmdbd.conf ]]; then
    chmod 600 "$tmp" # slurmdbd refuses a readable slurmdbd.conf (it holds the password)
  else
    chmod 644 "$tmp"
  fi
  if cmp -s "$tmp" "$ETC/$f"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$ETC/$f"
    log "wrote $ETC/$f"
  fi
done
chmod 755 "$ETC" # clients (any user) read slurm.conf; slurmdbd.conf stays 600

# Debian's SLURM reads /etc/slurm/slurm.conf (and gres.conf, slurmdbd.conf from
# the same folder): point those names at the generated files by symlinks.
mkdir -p "$SLURM_ETC"
for f in "${CONF_FILES[@]}"; do
  dst="$SLURM_ETC/$f"
  if [[ -L "$dst" ]]; then
    [[ "$(readlink "$dst")" == "$ETC/$f" ]] && continue
    rm -f "$dst"
  elif [[ -e "$dst" ]]; then
    if grep -q "$MARKER" "$dst" 2>/dev/null || [[ "${SLURM_LOCAL_FORCE:-}" == 1 ]]; then
      backup="$dst.before-dla-repro"
      mv -f "$dst" "$backup"
      warn "moved the existing $dst to $backup"
    else
      die "$dst exists and was not written by this script; move it away or set SLURM_LOCAL_FORCE=1 (it is then renamed to $dst.before-dla-repro)"
    fi
  fi
  ln -s "$ETC/$f" "$dst"
done

# sha256 of the configs a daemon reads, to restart it when they change
confsum() {
  case "$1" in
  slurmdbd) cat "$ETC/slurmdbd.conf" ;;
  *) cat "$ETC/slurm.conf" "$ETC/gres.conf" ;;
  esac | sha256sum | cut -d' ' -f1
}

# start_slurm_daemon NAME WAIT_DESCRIPTION CHECK_COMMAND...
start_slurm_daemon() {
  local name="$1" what="$2" pidfile="$RUNDIR/$1.pid" sumfile="$RUNDIR/$1.confsum" sum
  shift 2
  sum="$(confsum "$name")"
  if live_pid "$pidfile" "$name" >/dev/null; then
    if [[ "$(cat "$sumfile" 2>/dev/null || true)" == "$sum" ]]; then
      log "$name already running (pid $(cat "$pidfile"))"
      return 0
    fi
    log "$name: config changed, restarting"
    stop_pid "$pidfile" "$name"
  fi
  log "starting $name"
  # Daemon mode: the daemon forks, writes its pid file and logs to the state dir.
  if ! "$name" >>"$LOGDIR/$name.out" 2>&1; then
    cat "$LOGDIR/$name.out" >>"$LOGDIR/$name.log"
    die_log "$LOGDIR/$name.log" "$name failed to start"
  fi
  echo "$sum" >"$sumfile"
  if ! wait_for "$TIMEOUT" "$@"; then
    die_log "$LOGDIR/$name.log" "$name: $what not reached within ${TIMEOUT}s"
  fi
  live_pid "$pidfile" "$name" >/dev/null || die_log "$LOGDIR/$name.log" "$name exited after starting"
}

# --- munge ------------------------------------------------------------------
if munge_ok; then
  if live_pid "$MUNGE_RUN/munged.pid" munged >/dev/null; then
    log "munged already running (pid $(cat "$MUNGE_RUN/munged.pid"))"
  else
    log "munged already running (not started by this script; left alone)"
  fi
else
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating the munge key /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 700 /etc/munge
  chmod 600 /etc/munge/munge.key
  install -d -o munge -g munge -m 755 /run/munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
  touch "$LOGDIR/munged.log"
  chown munge:munge "$LOGDIR/munged.log"
  log "starting munged"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_RUN/munged.pid" \
    --log-file="$LOGDIR/munged.log" >>"$LOGDIR/munged.log" 2>&1 ||
    die_log "$LOGDIR/munged.log" "munged failed to start"
  wait_for "$TIMEOUT" munge_ok ||
    die_log "$LOGDIR/munged.log" "munge does not answer on $MUNGE_SOCKET"
fi

# --- MariaDB (private instance: own datadir, 127.0.0.1:$DB_PORT) --------------
install -d -o mysql -g mysql -m 750 "$DBDIR"
install -d -o mysql -g mysql -m 755 "$DBRUN"
touch "$LOGDIR/mariadb.log"
chown mysql:mysql "$LOGDIR/mariadb.log"
if [[ ! -d "$DBDIR/mysql" ]]; then
  log "initialising MariaDB in $DBDIR"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DBDIR" \
    --auth-root-authentication-method=socket --skip-test-db >>"$LOGDIR/mariadb.log" 2>&1 ||
    die_log "$LOGDIR/mariadb.log" "mariadb-install-db failed"
fi
if live_pid "$DBRUN/mariadbd.pid" mariadbd >/dev/null; then
  log "mariadbd already running (pid $(cat "$DBRUN/mariadbd.pid"))"
else
  log "starting mariadbd on 127.0.0.1:$DB_PORT"
  # --no-defaults: ignore /etc/mysql (a system MariaDB may use other settings).
  # innodb_lock_wait_timeout=900 is what the slurmdbd docs recommend.
  setsid nohup mariadbd --no-defaults --user=mysql --datadir="$DBDIR" \
    --socket="$DB_SOCKET" --pid-file="$DBRUN/mariadbd.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$LOGDIR/mariadb.log" \
    --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
    </dev/null >>"$LOGDIR/mariadb.log" 2>&1 &
  wait_for "$TIMEOUT" db_ok ||
    die_log "$LOGDIR/mariadb.log" "MariaDB does not answer on $DB_SOCKET (port $DB_PORT in use?)"
fi
# database and user of slurmdbd (idempotent; the password follows $ETC/db.pass)
mariadb --socket="$DB_SOCKET" -u root <<SQL || die_log "$LOGDIR/mariadb.log" "creating the slurmdbd database/user failed"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

# --- slurmdbd, cluster and account --------------------------------------------
start_slurm_daemon slurmdbd "slurmdbd answering sacctmgr" sacctmgr -n show cluster

if [[ -z "$(sacctmgr -n -P show cluster "$CLUSTER" format=cluster 2>/dev/null)" ]]; then
  log "registering cluster $CLUSTER in slurmdbd"
  sacctmgr -i add cluster "$CLUSTER" >>"$LOGDIR/sacctmgr.log" 2>&1 ||
    die_log "$LOGDIR/sacctmgr.log" "sacctmgr add cluster $CLUSTER failed"
fi
if [[ -z "$(sacctmgr -n -P show account "$CLUSTER" format=account 2>/dev/null)" ]]; then
  log "adding account $CLUSTER"
  sacctmgr -i add account "$CLUSTER" cluster="$CLUSTER" description="local runs" organization=local \
    >>"$LOGDIR/sacctmgr.log" 2>&1 || die_log "$LOGDIR/sacctmgr.log" "sacctmgr add account failed"
fi
users=(root)
if [[ -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]]; then
  users+=("$SUDO_USER")
fi
for u in "${users[@]}"; do
  if [[ -z "$(sacctmgr -n -P show assoc where user="$u" account="$CLUSTER" format=user 2>/dev/null)" ]]; then
    log "adding user $u to account $CLUSTER"
    sacctmgr -i add user "$u" account="$CLUSTER" cluster="$CLUSTER" defaultaccount="$CLUSTER" \
      >>"$LOGDIR/sacctmgr.log" 2>&1 || die_log "$LOGDIR/sacctmgr.log" "sacctmgr add user $u failed"
  fi
done

# --- slurmctld, slurmd ----------------------------------------------------------
start_slurm_daemon slurmctld "slurmctld answering scontrol ping" \
  bash -c 'scontrol ping | grep -q UP'

node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }
node_idle() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing) ]]; }
start_slurm_daemon slurmd "node $HOST registered" bash -c "sinfo -h -N -n '$HOST' -o %T | grep -qv -e unknown -e '^down\*\$'"

# A node left drained/down by an earlier crash: ReturnToService=2 usually heals
# it; resume it explicitly if not.
state="$(node_state)"
if [[ "$state" =~ (drain|down|fail) ]]; then
  log "node $HOST is $state: resuming it"
  scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
fi
wait_for "$TIMEOUT" node_idle ||
  die_log "$LOGDIR/slurmd.log" "node $HOST is '$(node_state)', not idle, after ${TIMEOUT}s (slurmctld log: $LOGDIR/slurmctld.log)"
wait_for "$TIMEOUT" sacct -n -X ||
  die_log "$LOGDIR/slurmdbd.log" "sacct does not work after ${TIMEOUT}s"

log "cluster '$CLUSTER' up: node $HOST ($CPUS CPUs, ${MEM_MB} MB, gpu:fake:1), partition debug; state in $STATE, logs in $LOGDIR"
