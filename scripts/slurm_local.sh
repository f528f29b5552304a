#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try `hydra/launcher=slurm` locally and to test it.
#   sudo scripts/slurm_local.sh up     # install slurm-wlm + munge if missing, configure, start, wait for an idle node
#   sudo scripts/slurm_local.sh down   # stop only the daemons `up` started
#   scripts/slurm_local.sh status      # sinfo, or why there is no cluster
# Needs root (apt, /etc/slurm, the daemons). Process tracking without cgroups (proctrack/linuxproc, task/none),
# so it also runs inside a container. State: /tmp/seg-slurm (pids of the daemons started here, logs, spool).
set -euo pipefail

STATE=/tmp/seg-slurm
CONF=/etc/slurm/slurm.conf

die() { echo "slurm_local: $*" >&2; exit 1; }

install_if_missing() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and this is not root: cannot install them"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and there is no apt-get"
    echo "slurm_local: installing slurm-wlm and munge (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$STATE/apt.log" 2>&1 \
        || die "apt-get install slurm-wlm munge failed: see $STATE/apt.log"
}

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MiB, 1 GiB left to the system
    mkdir -p /etc/slurm "$STATE/spool/ctld" "$STATE/spool/d"
    [ -f "$CONF" ] && [ ! -f "$STATE/slurm.conf.orig" ] && cp "$CONF" "$STATE/slurm.conf.orig"
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
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    echo munged >>"$STATE/started"
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
    start_daemon slurmctld
    start_daemon slurmd
    wait_idle
}

down() {
    [ -f "$STATE/started" ] || { echo "slurm_local: nothing started by this script"; return; }
    for name in $(tac "$STATE/started"); do
        pkill -x "$name" && echo "slurm_local: stopped $name" || true
    done
    rm -f "$STATE/started"
    if [ -f "$STATE/slurm.conf.orig" ]; then cp "$STATE/slurm.conf.orig" "$CONF"; else rm -f "$CONF"; fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) command -v sinfo >/dev/null || die "slurm is not installed"; sinfo ;;
    *) die "usage: $0 up|down|status" ;;
esac
