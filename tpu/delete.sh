#!/usr/bin/env bash
# Deletes the TPU VM / pod slice (its disks and the logs on them go with it; the gs:// workdir stays).
#
#   tpu/delete.sh --name=jepa --zone=us-central2-b
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

parse_common "$@"
((${#EXTRA_ARGS[@]} == 0)) || die "unknown option ${EXTRA_ARGS[0]}; see tpu/delete.sh --help"
location_flags
run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION[@]}" --quiet
