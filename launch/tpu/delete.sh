#!/usr/bin/env bash
# Deletes the TPU VM (the run directories stay in the bucket).
set -euo pipefail
source "$(dirname "$0")/env.sh"
gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_ARGS[@]}" --quiet
