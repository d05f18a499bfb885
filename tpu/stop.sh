#!/usr/bin/env bash
# Stops the training started by tpu/launch.sh on every worker with SIGTERM: the loop finishes its step,
# saves a checkpoint and exits, so tpu/launch.sh with the same workdir resumes it.
#
#   tpu/stop.sh --name=jepa --zone=us-central2-b
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

parse_common "$@"
((${#EXTRA_ARGS[@]} == 0)) || die "unknown option ${EXTRA_ARGS[0]}; see tpu/stop.sh --help"
ssh_workers all "if [ -f $REMOTE_PID ]; then kill -TERM \$(cat $REMOTE_PID) 2>/dev/null || true; fi"
