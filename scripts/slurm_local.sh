#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try `hydra/launcher=slurm` locally and to test it.
#   sudo scripts/slurm_local.sh up     # install slurm-wlm, slurmdbd, munge, mariadb-server if missing; start; wait
#   sudo scripts/slurm_local.sh down   # stop only the daemons `up` started, restore /etc/slurm
#   scripts/slurm_local.sh status      # sinfo, or why there is no cluster
# Needs root (apt, /etc/slurm, the daemons). Process tracking without cgroups (proctrack/linuxproc, task/none),
# so it also runs inside a container. Job accounting is on (slurmdbd on a private MariaDB): submitit, and so the
# Hydra launcher, learns from `sacct` that a job was cancelled; without accounting it waits for ever.
# State: /tmp/seg-slurm (the names of the daemons started here, logs, spool, the accounting database).
set -euo pipefail

STATE=/tmp/seg-slurm
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
SOCKET=/run/mysqld/mysqld.sock # MariaDB's default socket: where slurmdbd's client library looks
PACKAGES="slurm-wlm slurmdbd munge mariadb-server"

die() { echo "slurm_local: $*" >&2; exit 1; }

install_if_missing() {
    local cmd missing=0
    for cmd in slurmctld slurmd slurmdbd munged mariadbd; do command -v "$cmd" >/dev/null || missing=1; done
    [ "$missing" = 0 ] && return
    [ "$(id -u)" = 0 ] || die "$PACKAGES are not all installed and this is not root: cannot install them"
    command -v apt-get >/dev/null || die "$PACKAGES are not all installed and there is no apt-get"
    echo "slurm_local: installing $PACKAGES (apt)"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $PACKAGES >"$STATE/apt.log" 2>&1 \
        || die "apt-get install $PACKAGES failed: see $STATE/apt.log"
}

keep_original() {  # a config file that was there before `up` is put back by `down`
    [ -f "$1" ] && [ ! -f "$STATE/$(basename "$1").orig" ] && cp "$1" "$STATE/$(basename "$1").orig"
    return 0
}

restore_original() {
    if [ -f "$STATE/$(basename "$1").orig" ]; then mv "$STATE/$(basename "$1").orig" "$1"; else rm -f "$1"; fi
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MiB, 1 GiB left to the system
    mkdir -p /etc/slurm "$STATE/spool/ctld" "$STATE/spool/d"
    keep_original "$CONF"
    cat >"$CONF" <<EOF
# written by seg's scripts/slurm_local.sh: one node, this machine
ClusterName=seg-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    keep_original "$DBD_CONF"
    cat >"$DBD_CONF" <<EOF
# written by seg's scripts/slurm_local.sh: accounting for the one-node cluster, in a private MariaDB
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
EOF
    chmod 600 "$DBD_CONF"
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    echo munged >>"$STATE/started"
}

start_mariadb() {  # data and log in $STATE/mysql (the mysql user's), socket only (no TCP), root logs in by socket
    if pgrep -x mariadbd >/dev/null; then return; fi
    if [ ! -d "$STATE/mysql/mysql" ]; then
        mariadb-install-db --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
            >"$STATE/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $STATE/mariadb-install.log"
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    mariadbd --user=mysql --datadir="$STATE/mysql" --socket="$SOCKET" --skip-networking \
        --log-error="$STATE/mysql/mariadbd.log" --pid-file=/run/mysqld/mariadbd.pid >/dev/null 2>&1 &
    echo mariadbd >>"$STATE/started"
    for _ in $(seq 30); do mariadb-admin --socket="$SOCKET" ping >/dev/null 2>&1 && return; sleep 1; done
    die "MariaDB did not answer within 30 s: see $STATE/mysql/mariadbd.log"
}

start_slurmdbd() {  # then register the cluster, which slurmctld needs before it sends job records
    if ! pgrep -x slurmdbd >/dev/null; then
        slurmdbd
        echo slurmdbd >>"$STATE/started"
    fi
    for _ in $(seq 30); do
        if sacctmgr -n list cluster format=cluster >"$STATE/clusters" 2>/dev/null; then
            grep -qw seg-local "$STATE/clusters" || sacctmgr -i add cluster seg-local >/dev/null
            return
        fi
        sleep 1
    done
    die "slurmdbd did not answer within 30 s: see $STATE/slurmdbd.log"
}

start_daemon() {  # name: slurmctld or slurmd
    local name=$1
    if pgrep -x "$name" >/dev/null; then return; fi
    "$name" -f "$CONF"
    echo "$name" >>"$STATE/started"
}

wait_idle() {
    for _ in $(seq 60); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        case "$state" in
            idle*) echo "slurm_local: node $(hostname -s) is $state"; return ;;
        esac
        sleep 1
    done
    die "the node did not become idle within 60 s (sinfo: ${state:-no answer}); logs in $STATE"
}

up() {
    [ "$(id -u)" = 0 ] || die "run as root: the daemons, /etc/slurm and apt need it"
    mkdir -p "$STATE"
    install_if_missing
    write_conf
    start_munge
    start_mariadb
    start_slurmdbd
    start_daemon slurmctld
    start_daemon slurmd
    wait_idle
}

down() {
    [ -f "$STATE/started" ] || { echo "slurm_local: nothing started by this script"; return; }
    local name
    for name in $(tac "$STATE/started"); do
        pkill -x "$name" && echo "slurm_local: stopped $name" || true
        for _ in $(seq 30); do pgrep -x "$name" >/dev/null || break; sleep 1; done
    done
    rm -f "$STATE/started"
    restore_original "$CONF"
    restore_original "$DBD_CONF"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) command -v sinfo >/dev/null || die "slurm is not installed"; sinfo ;;
    *) die "usage: $0 up|down|status" ;;
esac
