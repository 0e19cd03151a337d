# Settings shared by the TPU scripts; override any of them in the environment.
#   source launch/tpu/env.sh   (the other scripts do it themselves)
# Accelerator / runtime pairs (see `gcloud compute tpus tpu-vm versions list`):
#   v5litepod-8  v2-alpha-tpuv5-lite   (v5e: 8 chips x 16 GiB, one host)
#   v4-8         tpu-ubuntu2204-base   (v4: 4 chips x 32 GiB, one host)
#   v4-32        tpu-ubuntu2204-base   (4 hosts: a pod slice, --worker=all runs on each)
: "${PROJECT:=$(gcloud config get-value project 2>/dev/null)}"
: "${ZONE:=us-central2-b}"
: "${TPU_NAME:=marl-jax}"
: "${ACCELERATOR_TYPE:=v4-8}"
: "${RUNTIME_VERSION:=tpu-ubuntu2204-base}"
: "${SPOT:=0}"                       # 1: spot capacity (preemptible; train.sh resumes)
: "${BUCKET:?set BUCKET to a GCS bucket (no gs:// prefix) for run directories}"
: "${REPO_DIR:=marl_jax}"            # checkout on each worker, under the home directory
: "${GCS_MOUNT:=/mnt/gcs}"           # the bucket is mounted here on every worker
export PROJECT ZONE TPU_NAME ACCELERATOR_TYPE RUNTIME_VERSION SPOT BUCKET REPO_DIR GCS_MOUNT
TPU_ARGS=(--zone="$ZONE" --project="$PROJECT")
