#!/usr/bin/env bash
# Runs one command on every worker, in the checkout with the venv active.
#   launch/tpu/run.sh python launch/plan.py --models=qwen3_4b --hardware=v4-8
set -euo pipefail
source "$(dirname "$0")/env.sh"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${TPU_ARGS[@]}" \
  --command="cd ~/$REPO_DIR && source ~/venv/bin/activate && $*"
