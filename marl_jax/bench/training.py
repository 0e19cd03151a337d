"""Our jitted training step against a plain PyTorch eager step of the same model.

Both sides train the same Qwen3-architecture model (our decoder, and
transformers' Qwen3ForCausalLM with the same config) on the same batch: B
rows of L tokens, the policy-gradient loss of marl_jax.rl.update (ratio x
advantage over the completion tokens) with a backward pass over every weight
(full fine-tuning) and one AdamW update. float32 on both sides, torch with one
thread per core. Model FLOPs follow marl_jax.bench.smoke (forward x 3).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from marl_jax.bench import smoke
from marl_jax.bench.generation import torch_model
from marl_jax.models import count_params, get_preset, init_params
from marl_jax.models.config import ModelConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.trainer import distributed

# A 6.3M-parameter model of the tiny world's architecture (character vocabulary):
# the size from which the issue asks for >= 60% of the matmul peak.
MID = dict(hidden_size=384, intermediate_size=1024, num_layers=4, num_heads=6,
           num_kv_heads=2, head_dim=64)


def mid_config() -> ModelConfig:
  return get_preset("tiny_m", **MID)


def torch_step(config: ModelConfig, params: Any, arrays: dict[str, np.ndarray]):
  """An eager forward + backward + AdamW step of transformers' model (a closure)."""
  import torch
  model = torch_model(config, params).train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
  tokens = torch.as_tensor(arrays["tokens"], dtype=torch.long)
  mask = torch.as_tensor(arrays["mask"], dtype=torch.float32)
  old_logp = torch.as_tensor(arrays["old_logp"])
  advantages = torch.as_tensor(arrays["advantages"])[:, None]

  def step():
    logits = model(tokens).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None])[..., 0]
    ratio = torch.exp(logp - old_logp)
    loss = -(ratio * advantages * mask).sum() / mask.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return step


def compare_train_step(name: str, config: ModelConfig, rows: int, length: int,
                       new_tokens: int, repeats: int = 5) -> dict[str, Any]:
  """Our step (marl_jax.rl.update via PolicyStore, full copies) vs torch eager; both
  sides' model GFLOP/s (bench.suite turns them into fractions of the run's peak)."""
  params = init_params(config, jax.random.PRNGKey(0))
  store = PolicyStore.create(config, params, ("generator",), mode="shared", kind="full")
  arrays = smoke.synthetic_rows(config.vocab_size, rows, length, new_tokens)
  # Timed in turn, round by round: this shared machine's speed drifts.
  ours = smoke.train_timing(store, distributed.Parallel(None), arrays, repeats,
                            None, remat=False,  # as marl_jax.trainer.loop
                            alongside={"torch_eager": torch_step(config, params, arrays)})
  theirs = ours["torch_eager_s"]
  return {f"{name}/params": count_params(config),
          f"{name}/ours_s": ours["update_s"], f"{name}/torch_eager_s": theirs,
          f"{name}/speedup_vs_torch": theirs / ours["update_s"],
          f"{name}/gflops": ours["update_gflops"],
          f"{name}/torch_gflops": ours["update_flops"] / theirs / 1e9,
          f"{name}/page_faults_per_step": ours["update_page_faults"]}
