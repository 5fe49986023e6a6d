#!/usr/bin/env bash
# Start munged, slurmctld and slurmd unless they run already. When slurm.conf differs from the one
# the daemons were started with (a new host name, CPU count or memory), the two SLURM daemons are
# stopped and the controller state is cleared first: saved jobs and nodes would name the old
# configuration. Logs go to $SLURM_DEV_DIR/log.
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=common.sh
source "$here/common.sh"
require_root "start"
[ -s "$SLURM_CONF_PATH" ] || die "$SLURM_CONF_PATH is missing; run slurm/dev-cluster/configure.sh first."

install -d -m 0755 "$SLURM_DEV_STATE" "$SLURM_DEV_SPOOL" "$SLURM_DEV_LOG" "$SLURM_DEV_RUN"

stamp="$SLURM_DEV_RUN/slurm.conf.sha256"
conf_sum="$(sha256sum "$SLURM_CONF_PATH" | cut -d ' ' -f 1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$conf_sum" ]; then
    log "slurm.conf changed since the daemons last started: restarting them with a fresh state"
    bash "$here/stop.sh" --keep-munge
    find "$SLURM_DEV_STATE" "$SLURM_DEV_SPOOL" -mindepth 1 -delete
fi

# munged refuses to run as root; it runs as the munge user once its socket folder belongs to it.
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged is running"
else
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN_DIR"
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged </dev/null >>"$SLURM_DEV_LOG/munged.out" 2>&1 \
        || die "munged failed to start: $(tail -n 20 /var/log/munge/munged.log 2>/dev/null; cat "$SLURM_DEV_LOG/munged.out")"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munge does not answer: $(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
fi

# start_daemon NAME PIDFILE: start /usr/sbin/NAME unless the process in PIDFILE is alive.
start_daemon() {
    local name="$1" pidfile="$2"
    if pid_alive "$pidfile" "$name"; then
        log "$name is running (pid $(read_pid "$pidfile"))"
        return 0
    fi
    if proc_running "$name"; then
        die "a $name runs that this cluster did not start (no live pid in $pidfile); stop it first."
    fi
    log "starting $name"
    "/usr/sbin/$name" </dev/null >>"$SLURM_DEV_LOG/$name.out" 2>&1 \
        || die "$name failed to start; $SLURM_DEV_LOG/$name.log says: $(tail -n 30 "$SLURM_DEV_LOG/$name.log" 2>/dev/null; cat "$SLURM_DEV_LOG/$name.out")"
}

start_daemon slurmctld "$SLURM_DEV_RUN/slurmctld.pid"
start_daemon slurmd "$SLURM_DEV_RUN/slurmd.pid"
echo "$conf_sum" > "$stamp"
