#!/usr/bin/env bash
# Stop the single-machine SLURM cluster (slurmd, slurmctld, munged). Jobs still running are killed;
# state and logs stay in $SLURM_DEV_DIR (default /var/tmp/slurm-dev-cluster).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"
require_root "down.sh"
# One up/down at a time: parallel test sessions may all try to bring the cluster up.
exec 9>"$SLURM_DEV_LOCK"
flock -w 900 9 || die "another up.sh/down.sh holds $SLURM_DEV_LOCK for 15 minutes"
bash "$here/stop.sh" "$@" 9>&-
