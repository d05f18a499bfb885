#!/usr/bin/env bash
# Starts the same training command on every worker of a TPU VM / pod slice, in the background.
#
#   tpu/launch.sh --name=jepa --zone=us-central2-b -- \
#       --config=configs/ijepa_vit.py:in1k_vith14 --workdir=gs://BUCKET/ijepa [--config.KEY=VALUE ...]
#
# Everything after `--` goes to `python -m jepa.main` unchanged; --config and --workdir are required, and the
# workdir must be storage every worker sees (a gs:// bucket on a pod slice: all hosts write one checkpoint).
# Each worker joins the run with jax.distributed.initialize() (JAX finds the pod's hosts itself), reads only
# its shard of every batch, and logs to ~/jepa-train.log; metrics and results are written by worker 0.
# Running the same command again resumes from the latest checkpoint in the workdir. Stop with tpu/stop.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

parse_common "$@"
TRAIN_ARGS=()
seen_dashes=0
for arg in "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"; do
  if ((seen_dashes)); then
    TRAIN_ARGS+=("$arg")
  elif [[ "$arg" == "--" ]]; then
    seen_dashes=1
  else
    die "unknown option $arg; put jepa.main's flags after -- (see tpu/launch.sh --help)"
  fi
done
printf '%s\n' "${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}" | grep -q '^--config=' \
  || die "no --config=... after --; e.g. -- --config=configs/ijepa_vit.py:in1k_vith14 --workdir=gs://B/run"
printf '%s\n' "${TRAIN_ARGS[@]}" | grep -q '^--workdir=' \
  || die "no --workdir=... after --; use a gs:// path that every worker can write"

printf -v train_args '%q ' "${TRAIN_ARGS[@]}"
# nohup with all three streams redirected lets ssh return while training goes on; the pid file is for stop.sh.
ssh_workers all "cd $REMOTE_DIR && nohup $REMOTE_VENV/bin/python -m jepa.main ${train_args}\
--config.distributed.initialize=True > $REMOTE_LOG 2>&1 < /dev/null & echo \$! > $REMOTE_PID"
