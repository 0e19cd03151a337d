"""The real path end to end: one voting step of SmolLM2-135M-Instruct on GSM8K-format
word problems (LoRA, per-layer recompute), then restore, export and reload in transformers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.tasks import STATUSES
from marl_jax.trainer import build, restore
from marl_jax.trainer import loop as train
from marl_jax.trainer.config import get_config
from marl_jax.trainer.metrics import read_jsonl
from tests.helpers import REPO

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
DATA = os.path.join(REPO, "marl_jax", "tasks", "math", "data")


def test_one_voting_step_with_smollm2_then_export_and_reload(smollm2_gguf_path, tmp_path):
  config = get_config("workflow=voting,model=smollm2_135m")
  config.model.checkpoint, config.model.tokenizer = smollm2_gguf_path, ""
  config.task.train_path = os.path.join(DATA, "word_problems_train.jsonl")
  config.task.eval_path = os.path.join(DATA, "word_problems_test.jsonl")
  config.task.format = "gsm8k"
  config.rollout.batch_size, config.rollout.group_size = 1, 2
  config.rollout.max_new_tokens, config.rollout.max_prompt_len = 64, 512
  config.policy.lora_rank = 8
  config.rl.remat, config.rl.compile_ahead, config.rl.warmup_steps = "layer", False, 0
  config.train.steps, config.train.eval_every, config.train.checkpoint_every = 1, 1, 1
  config.eval.num_problems, config.eval.greedy = 1, False
  config.workflow.options.n = 2  # 4 generator and 2 aggregator rows: one sampler batch bucket
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)

  last = read_jsonl(os.path.join(workdir, "metrics.jsonl"))[-1]
  assert last["step"] == 1 and np.isfinite(last["loss"])
  assert 0.0 <= last["parse_ok/generator"] <= 1.0 and 0.0 <= last["parse_ok/aggregator"] <= 1.0
  rollouts = read_jsonl(os.path.join(workdir, "rollouts", "step_1.jsonl"))
  assert all(r["verdict"]["status"] in STATUSES for r in rollouts)
  assert all(r["question"] in c["prompt"] for r in rollouts for c in r["calls"])

  run = build.build(restore.load_config(workdir))
  step, trainable = restore.restore_trainable(run, workdir)
  assert step == 1
  paths = restore.export_roles(run, trainable, str(tmp_path / "export"), dtype="float32")
  role = "aggregator"
  tokens = np.asarray([run.tokenizer.encode("Tom has 3 apples and buys 4 more.")])
  store = run.store.replace(trainable=trainable)
  route = jax.tree.map(jnp.asarray, store.route([role]))
  routed, _ = store.token_logprobs(jnp.asarray(tokens), jnp.ones(tokens.shape, bool), route)
  model = transformers.AutoModelForCausalLM.from_pretrained(paths[role], dtype=torch.float32)
  with torch.no_grad():
    logits = model(torch.as_tensor(tokens)).logits[:, :-1].float()
  logp = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(tokens[:, 1:, None]))[..., 0]
  np.testing.assert_allclose(logp.numpy(), np.asarray(routed), atol=2e-3)
  reloaded = transformers.AutoTokenizer.from_pretrained(paths[role])
  assert reloaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
  assert os.path.exists(os.path.join(paths[role], "lora", "adapter_model.safetensors"))
