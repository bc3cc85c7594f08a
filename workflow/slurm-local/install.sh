#!/usr/bin/env bash
# Install the Debian packages of a one-node SLURM cluster with accounting
# (slurmctld + slurmd + slurmdbd, munge, MariaDB). Idempotent: does nothing
# when every package is already installed. Needs root (or sudo) and apt.
#
#   workflow/slurm-local/install.sh            # quiet, log in $SLURM_LOCAL_INSTALL_LOG
#   SLURM_LOCAL_VERBOSE=1 workflow/slurm-local/install.sh
#
# Services are NOT started by the packages (a temporary policy-rc.d blocks
# invoke-rc.d during the install); start.sh starts the daemons itself.
set -euo pipefail

readonly PACKAGES=(
  slurm-wlm      # slurmctld, slurmd, client commands (sbatch, sinfo, squeue, scancel)
  slurm-client   # sacct, sacctmgr (pulled in by slurm-wlm, listed to be explicit)
  slurmdbd       # accounting daemon: sacct needs it, submitit polls sacct
  munge          # authentication between the daemons and the clients
  mariadb-server # storage for slurmdbd (brings mariadb-client)
  procps         # pgrep/pkill-free process checks (ps) used by the scripts
  hostname       # hostname -s names the node
)
LOG="${SLURM_LOCAL_INSTALL_LOG:-/tmp/dla-repro-slurm-install.log}"

die() {
  echo "slurm-local/install.sh: ERROR: $*" >&2
  if [[ -s "$LOG" ]]; then
    echo "--- last lines of $LOG ---" >&2
    tail -n 25 "$LOG" >&2
  fi
  exit 1
}

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo)"
  SUDO=(sudo)
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian/Ubuntu only"

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == installed ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "slurm-local: packages already installed ($(dpkg-query -W -f='${Version}' slurm-wlm) slurm-wlm); nothing to do"
  exit 0
fi

: >"$LOG"
if [[ -n "${SLURM_LOCAL_VERBOSE:-}" ]]; then
  exec > >(tee -a "$LOG") 2>&1
fi
echo "slurm-local: installing ${missing[*]} (log: $LOG)"

run() { # run a command, output to the log
  echo "+ $*" >>"$LOG"
  "${SUDO[@]}" "$@" >>"$LOG" 2>&1
}

apt_update() {
  echo "slurm-local: apt-get update"
  run apt-get update -q || die "apt-get update failed"
}

# apt-get update only if apt does not know one of the packages (empty or stale lists).
need_update=0
for pkg in "${missing[@]}"; do
  cand="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [[ -z "$cand" || "$cand" == "(none)" ]]; then
    need_update=1
    break
  fi
done
updated=0
if [[ $need_update -eq 1 ]]; then
  apt_update
  updated=1
fi

# Keep maintainer scripts from starting services (no systemd in containers/CI,
# and start.sh runs its own daemons). Only if no policy-rc.d exists already.
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
  if [[ $own_policy -eq 1 ]]; then
    "${SUDO[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\n# temporary, from dla-repro slurm-local/install.sh\nexit 101\n' |
    "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  own_policy=1
fi

install_pkgs() {
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}

if ! install_pkgs; then
  # A stale package list can point at versions the mirror no longer has.
  if [[ $updated -eq 0 ]]; then
    echo "slurm-local: install failed with the current package lists; retrying after apt-get update"
    apt_update
    install_pkgs || die "apt-get install ${missing[*]} failed"
  else
    die "apt-get install ${missing[*]} failed"
  fi
fi

for bin in slurmctld slurmd slurmdbd sacct sacctmgr sbatch munged mariadbd; do
  command -v "$bin" >/dev/null 2>&1 || [[ -x "/usr/sbin/$bin" ]] || die "$bin not found after install"
done
echo "slurm-local: installed slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm)"
