#!/usr/bin/env bash
# Installs this repository's committed HEAD on every worker of a TPU VM / pod slice.
#
#   tpu/setup.sh --name=jepa --zone=us-central2-b
#
# Packs `git archive HEAD` (uncommitted changes are not shipped: commit first), copies it to every worker,
# and on every worker (--worker=all) creates a Python 3.11 virtualenv with uv and installs the package with
# jax[tpu]. Run it again after a new commit to update the workers.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

parse_common "$@"
((${#EXTRA_ARGS[@]} == 0)) || die "unknown option ${EXTRA_ARGS[0]}; see tpu/setup.sh --help"

ARCHIVE="${TMPDIR:-/tmp}/jepa-${TPU_NAME}.tar.gz"
location_flags
run git -C "$REPO_ROOT" archive --format=tar.gz --output="$ARCHIVE" HEAD
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME:~/jepa.tar.gz" "${LOCATION[@]}" --worker=all
# uv fetches a standalone Python 3.11 (the images ship 3.10, below the package's floor).
ssh_workers all "set -e; rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR; tar -xzf ~/jepa.tar.gz -C $REMOTE_DIR; \
python3 -m pip install --user --quiet uv; ~/.local/bin/uv venv --allow-existing --python 3.11 $REMOTE_VENV; \
~/.local/bin/uv pip install --python $REMOTE_VENV/bin/python -e $REMOTE_DIR 'jax[tpu]>=0.10.2'; \
echo \$(hostname): jax \$($REMOTE_VENV/bin/python -c 'import jax, jepa; print(jax.__version__)')"
