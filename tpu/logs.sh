#!/usr/bin/env bash
# Follows the training log of one worker (worker 0 prints the progress lines and probe results).
#
#   tpu/logs.sh --name=jepa --zone=us-central2-b [--worker=0] [--lines=100] [--no-follow]
#
# --worker=all prints the last lines of every worker's log (no following).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

parse_common "$@"
WORKER=0
LINES=100
FOLLOW=1
for arg in "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"; do
  case "$arg" in
    --worker=*) WORKER="${arg#*=}" ;;
    --lines=*) LINES="${arg#*=}" ;;
    --no-follow) FOLLOW=0 ;;
    *) die "unknown option $arg; see tpu/logs.sh --help" ;;
  esac
done
[[ "$WORKER" == all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker=$WORKER must be a worker index or 'all'"
[[ "$LINES" =~ ^[0-9]+$ ]] || die "--lines=$LINES must be a number"
if [[ "$WORKER" == all ]]; then
  FOLLOW=0
fi
if ((FOLLOW)); then
  ssh_workers "$WORKER" "tail -n $LINES -F $REMOTE_LOG"
else
  ssh_workers "$WORKER" "echo == worker \$(hostname); tail -n $LINES $REMOTE_LOG"
fi
