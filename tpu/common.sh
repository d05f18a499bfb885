# Shared by the tpu/*.sh scripts (sourced, not run): defaults, option parsing and `run`.
#
# Every script takes the same options (environment variables give the defaults):
#   --name=NAME            TPU VM / pod-slice name          ($TPU_NAME, default jepa)
#   --zone=ZONE            Cloud zone                       ($ZONE, default us-central2-b)
#   --project=PROJECT      Cloud project (default: gcloud's configured project)   ($PROJECT)
#   --dry-run              print the commands instead of running them
# and the script's own options (see each script's header). Commands run with `set -e`, so the first failure
# stops the script.

set -euo pipefail

TPU_NAME="${TPU_NAME:-jepa}"
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"
DRY_RUN=0
REMOTE_DIR='~/jepa'           # the package on every worker (a fresh copy of the local git HEAD)
REMOTE_VENV='~/jepa-venv'     # Python 3.11 virtualenv on every worker (TPU VM images ship Python 3.10)
REMOTE_LOG='~/jepa-train.log' # stdout + stderr of the training process on every worker
REMOTE_PID='~/jepa-train.pid'
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "error: $*" >&2
  exit 2
}

# Parses the shared options out of "$@"; leaves the rest in the array EXTRA_ARGS for the script.
parse_common() {
  EXTRA_ARGS=()
  while (($#)); do
    case "$1" in
      --name=*) TPU_NAME="${1#*=}" ;;
      --zone=*) ZONE="${1#*=}" ;;
      --project=*) PROJECT="${1#*=}" ;;
      --dry-run) DRY_RUN=1 ;;
      -h|--help) usage; exit 0 ;;
      *) EXTRA_ARGS+=("$1") ;;
    esac
    shift
  done
  [[ -n "$TPU_NAME" ]] || die "--name is empty; name the TPU VM (e.g. --name=jepa-v4-32)"
  [[ -n "$ZONE" ]] || die "--zone is empty; pick the zone that has your TPU quota (e.g. --zone=us-central2-b)"
}

# Options every `gcloud compute tpus tpu-vm` command takes.
location_flags() {
  LOCATION=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then
    LOCATION+=(--project="$PROJECT")
  fi
}

# One word for a shell: as is when it is plain, else in single quotes (readable, and safe to paste).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Runs a command, or with --dry-run prints it (one line, quoted so that it can be pasted into a shell).
run() {
  if ((DRY_RUN)); then
    local line="" word
    for word in "$@"; do
      line+="$(quote "$word") "
    done
    echo "${line% }"
  else
    "$@"
  fi
}

# Runs a shell command line on TPU workers: ssh_workers WORKER COMMAND (WORKER: all or an index).
ssh_workers() {
  location_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker="$1" --command="$2"
}
