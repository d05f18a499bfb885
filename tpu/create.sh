#!/usr/bin/env bash
# Creates a TPU VM or pod slice.
#
#   tpu/create.sh --name=jepa --zone=us-central2-b --accelerator=v4-32 [--version=RUNTIME] [--spot]
#
# Options (besides --name, --zone, --project, --dry-run; see common.sh):
#   --accelerator=TYPE   accelerator type, e.g. v4-8 (one host), v4-32 (4 hosts), v5litepod-16, v5p-32
#                        ($ACCELERATOR, default v4-32)
#   --version=RUNTIME    TPU software version ($RUNTIME_VERSION); default: tpu-ubuntu2204-base for v2-v4,
#                        v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e
#   --spot               a Spot VM (cheaper, can be preempted; the training loop checkpoints on SIGTERM)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

parse_common "$@"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
SPOT=0
for arg in "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"; do
  case "$arg" in
    --accelerator=*) ACCELERATOR="${arg#*=}" ;;
    --version=*) RUNTIME_VERSION="${arg#*=}" ;;
    --spot) SPOT=1 ;;
    *) die "unknown option $arg; see tpu/create.sh --help" ;;
  esac
done
if [[ -z "$RUNTIME_VERSION" ]]; then
  case "$ACCELERATOR" in
    v5litepod-*|v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
  esac
fi

location_flags
cmd=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION[@]}" --accelerator-type="$ACCELERATOR"
     --version="$RUNTIME_VERSION")
if ((SPOT)); then
  cmd+=(--spot)
fi
run "${cmd[@]}"
