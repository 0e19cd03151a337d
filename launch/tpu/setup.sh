#!/usr/bin/env bash
# Copies this checkout to every worker, installs it with jax[tpu] in ~/venv and
# mounts gs://$BUCKET at $GCS_MOUNT/$BUCKET (run directories live there, so a
# re-created VM finds its checkpoints). Idempotent: safe to rerun.
set -euo pipefail
source "$(dirname "$0")/env.sh"
root="$(cd "$(dirname "$0")/../.." && pwd)"
tar -C "$root" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/marl_jax.tgz .
gcloud compute tpus tpu-vm scp /tmp/marl_jax.tgz "$TPU_NAME":marl_jax.tgz --worker=all \
  "${TPU_ARGS[@]}"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${TPU_ARGS[@]}" --command="
set -e
mkdir -p ~/$REPO_DIR && tar -C ~/$REPO_DIR -xzf ~/marl_jax.tgz
if ! command -v gcsfuse >/dev/null; then
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
  echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" \
    | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse python3-venv
fi
sudo mkdir -p $GCS_MOUNT/$BUCKET && sudo chown \$USER $GCS_MOUNT/$BUCKET
mountpoint -q $GCS_MOUNT/$BUCKET || gcsfuse --implicit-dirs --rename-dir-limit=200000 \
  $BUCKET $GCS_MOUNT/$BUCKET
[ -d ~/venv ] || python3 -m venv ~/venv
~/venv/bin/pip install -q --upgrade pip
~/venv/bin/pip install -q -e ~/$REPO_DIR'[tpu]'
~/venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_devices())'
"
