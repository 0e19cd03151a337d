#!/usr/bin/env bash
# Creates the TPU VM (or pod slice) named $TPU_NAME; see env.sh for the settings.
#   BUCKET=my-bucket ACCELERATOR_TYPE=v5litepod-8 RUNTIME_VERSION=v2-alpha-tpuv5-lite \
#     launch/tpu/create.sh
set -euo pipefail
source "$(dirname "$0")/env.sh"
extra=()
if [[ "$SPOT" == 1 ]]; then extra+=(--spot); fi
gcloud compute tpus tpu-vm create "$TPU_NAME" "${TPU_ARGS[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
