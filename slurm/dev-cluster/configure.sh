#!/usr/bin/env bash
# Write slurm.conf for one node on this machine: CPUs and memory read from the machine, no cgroup
# plugins, no accounting, state/spool/logs under $SLURM_DEV_DIR. The host name is written at
# configure time, so re-running on another machine rewrites the file. The file is rewritten only
# when its content changes (host name, CPU count, memory); start.sh notices the change and restarts
# the daemons with a fresh state.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_root "configure"

if [ -e "$SLURM_CONF_PATH" ] && ! head -n 1 "$SLURM_CONF_PATH" | grep -qxF "$SLURM_DEV_MARKER"; then
    die "$SLURM_CONF_PATH exists and was not written by this script; move it away to use the dev cluster."
fi

node="$(hostname -s)"
[ -n "$node" ] || die "hostname -s printed nothing; set a host name first."
cpus="$(nproc)"
# Two CPUs at least, so that `srun -n 2` runs on a one-core machine too (config_overrides below
# makes slurmd trust the configured count instead of draining the node).
[ "$cpus" -ge 2 ] || cpus=2
mem_kib="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
# Declare 95% of the memory so small accounting differences never drain the node.
mem_mib=$(( mem_kib * 95 / 100 / 1024 ))
[ "$mem_mib" -ge 256 ] || mem_mib=256

new="$(mktemp)"
trap 'rm -f "$new"' EXIT
cat > "$new" <<CONF
$SLURM_DEV_MARKER
# Host: $node. Re-run slurm/dev-cluster/configure.sh (or up.sh) on a new machine.
ClusterName=devcluster
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime and a fast scheduler loop: a requeued job restarts in seconds
# instead of the default ~150 s hold (cred_expire default 120 s, sched_interval default 60 s).
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=5
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SlurmdParameters=config_overrides
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SLURM_DEV_STATE
SlurmdSpoolDir=$SLURM_DEV_SPOOL/slurmd
SlurmctldPidFile=$SLURM_DEV_RUN/slurmctld.pid
SlurmdPidFile=$SLURM_DEV_RUN/slurmd.pid
SlurmctldLogFile=$SLURM_DEV_LOG/slurmctld.log
SlurmdLogFile=$SLURM_DEV_LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=$SLURM_DEV_PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF

install -d -m 0755 "$SLURM_DEV_DIR" "$SLURM_DEV_STATE" "$SLURM_DEV_SPOOL" "$SLURM_DEV_LOG" "$SLURM_DEV_RUN"
install -d -m 0755 "$(dirname "$SLURM_CONF_PATH")"

if [ -e "$SLURM_CONF_PATH" ] && cmp -s "$new" "$SLURM_CONF_PATH"; then
    log "$SLURM_CONF_PATH is up to date (node $node, $cpus CPUs, ${mem_mib} MiB)"
    exit 0
fi
install -m 0644 "$new" "$SLURM_CONF_PATH"
log "wrote $SLURM_CONF_PATH (node $node, $cpus CPUs, ${mem_mib} MiB, partition $SLURM_DEV_PARTITION)"
