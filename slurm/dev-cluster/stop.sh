#!/usr/bin/env bash
# Stop slurmd, slurmctld and munged started by start.sh (by their pid files, nothing by name).
# --keep-munge leaves munged running.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
require_root "stop"

# stop_pidfile NAME PIDFILE: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pidfile() {
    local name="$1" pidfile="$2" pid
    pid="$(read_pid "$pidfile")"
    if ! process_is "$pid" "$name"; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # The daemon removes its pid file early in shutdown; wait for the process itself.
    for _ in $(seq 150); do
        process_is "$pid" "$name" || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$name did not exit after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop_pidfile slurmd "$SLURM_DEV_RUN/slurmd.pid"
stop_pidfile slurmctld "$SLURM_DEV_RUN/slurmctld.pid"
if [ "${1:-}" != "--keep-munge" ]; then
    stop_pidfile munged "$MUNGE_PIDFILE"
fi
