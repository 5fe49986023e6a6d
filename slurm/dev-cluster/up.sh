#!/usr/bin/env bash
# Bring the single-machine SLURM cluster up: install, configure, start, wait until the node is idle.
# Idempotent: when everything is installed, configured and running, it returns within a second.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$here/common.sh"
require_root "up.sh"
# One up/down at a time: parallel test sessions may all try to bring the cluster up.
exec 9>"$SLURM_DEV_LOCK"
flock -w 900 9 || die "another up.sh/down.sh holds $SLURM_DEV_LOCK for 15 minutes"

# fd 9 closed for the children: daemons they start must not inherit (and hold) the lock.
bash "$here/install.sh" 9>&-
bash "$here/configure.sh" 9>&-
bash "$here/start.sh" 9>&-
bash "$here/wait.sh" "$@" 9>&-
