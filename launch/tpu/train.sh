#!/usr/bin/env bash
# Trains on the TPU VM until the run is complete, surviving preemptions.
#   BUCKET=my-bucket SPOT=1 launch/tpu/train.sh voting_ip_1.7b \
#     --config=configs/default.py:study=1,model=qwen3_1_7b,workflow=voting,policy=isolated \
#     --config.model.checkpoint=/mnt/gcs/my-bucket/ckpt/Qwen3-1.7B \
#     --config.task.train_path=/mnt/gcs/my-bucket/data/dapo-math-17k.parquet \
#     --config.task.eval_path=/mnt/gcs/my-bucket/data/math500.jsonl --config.eval.num_problems=500
# Each attempt makes sure the VM exists and is READY (re-creating a preempted
# one and running setup.sh), then runs launch/train.py on every worker with the
# same --workdir on the bucket: the trainer resumes from its last checkpoint.
# A preemption notice makes every worker save at the same step and exit
# non-zero (marl_jax.trainer.distributed.Preempted); exit 0 means the run is complete.
set -uo pipefail
source "$(dirname "$0")/env.sh"
name="${1:?usage: train.sh RUN_NAME [train.py flags...]}"; shift
workdir="$GCS_MOUNT/$BUCKET/runs/$name"
max_attempts="${MAX_ATTEMPTS:-50}"
here="$(dirname "$0")"

tpu_state() {
  gcloud compute tpus tpu-vm describe "$TPU_NAME" "${TPU_ARGS[@]}" \
    --format='value(state)' 2>/dev/null || echo MISSING
}

for attempt in $(seq 1 "$max_attempts"); do
  state="$(tpu_state)"
  echo "[train.sh] attempt $attempt: $TPU_NAME is $state"
  case "$state" in
    READY) ;;
    CREATING|STARTING|RESTARTING|REPAIRING) sleep 60; continue ;;
    MISSING) "$here/create.sh" && "$here/setup.sh" || { sleep 120; continue; } ;;
    *)  # PREEMPTED, TERMINATED, STOPPED...: a spot VM cannot be restarted, re-create it
      gcloud compute tpus tpu-vm delete "$TPU_NAME" "${TPU_ARGS[@]}" --quiet
      "$here/create.sh" && "$here/setup.sh" || { sleep 120; continue; } ;;
  esac
  # The pid file lets a retry stop a trainer left running by a dropped ssh session
  # (SIGKILL: under jax.distributed, SIGTERM is a preemption notice that waits for peers).
  "$here/run.sh" "if [ -f ~/train.pid ]; then kill -9 \$(cat ~/train.pid) 2>/dev/null; sleep 5; fi;" \
    "echo \$\$ > ~/train.pid;" \
    "exec python launch/train.py --workdir=$workdir --config.mesh.distributed=on $*"
  rc=$?
  if [[ $rc == 0 ]]; then
    echo "[train.sh] $name complete in $workdir"
    exit 0
  fi
  echo "[train.sh] attempt $attempt ended with status $rc; resuming"
  sleep 30
done
echo "[train.sh] gave up after $max_attempts attempts" >&2
exit 1
