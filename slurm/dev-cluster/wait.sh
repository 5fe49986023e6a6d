#!/usr/bin/env bash
# Wait until sinfo shows the node usable (idle, mixed or allocated). Timeout in seconds from the
# first argument or $SLURM_DEV_TIMEOUT (default 90). When it does not come up, or a daemon dies,
# print what SLURM and the daemon logs say and exit 1.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

timeout_s="${1:-${SLURM_DEV_TIMEOUT:-90}}"
deadline=$(( $(date +%s) + timeout_s ))

fail_with_logs() {
    {
        echo "[slurm-dev] ERROR: $1"
        if controller_listening; then
            echo "----- sinfo -----";               timeout 10 sinfo 2>&1 || true
            echo "----- scontrol show node -----"; timeout 10 scontrol show node 2>&1 || true
        fi
        for f in slurmctld.log slurmd.log slurmctld.out slurmd.out munged.out; do
            [ -s "$SLURM_DEV_LOG/$f" ] || continue
            echo "----- $SLURM_DEV_LOG/$f (last 30 lines) -----"
            tail -n 30 "$SLURM_DEV_LOG/$f"
        done
        if [ -r /var/log/munge/munged.log ]; then
            echo "----- /var/log/munge/munged.log (last 10 lines) -----"
            tail -n 10 /var/log/munge/munged.log
        fi
        echo "[slurm-dev] ERROR: $1 (logs above; config $SLURM_CONF_PATH)"
    } >&2
    exit 1
}

resumed=0
while :; do
    if cluster_usable; then
        log "node is up: $(timeout 10 sinfo -h -o '%P %D %T %c CPUs' | tr '\n' ' ')"
        exit 0
    fi
    for daemon in slurmctld slurmd; do
        pid_alive "$SLURM_DEV_RUN/$daemon.pid" "$daemon" || proc_running "$daemon" \
            || fail_with_logs "$daemon is not running"
    done
    states="$(node_states | tr '\n' ' ')"
    # A node left down or drained by an earlier run (e.g. slurmd killed) is returned to service once.
    if [ "$resumed" -eq 0 ] && [ "$(id -u)" -eq 0 ] && echo "$states" | grep -Eq '(down|drain)'; then
        node="$(timeout 10 sinfo -h -N -o '%N' | head -n 1)"
        log "node $node is '$states'; resuming it"
        timeout 10 scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        resumed=1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        fail_with_logs "no idle node after ${timeout_s}s (sinfo states: '${states:-controller not answering}')"
    fi
    sleep 1
done
