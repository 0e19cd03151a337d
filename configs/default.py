r"""The one base config; every variant is an override of it.

Tiny world on CPU (the default: Voting, math, shared policy):

  python launch/train.py --config=configs/default.py --workdir=runs/voting_sp
  python launch/train.py \
    --config=configs/default.py:workflow=eval_opt,task=code,model=tiny_l,policy=isolated,seed=1 \
    --workdir=runs/evalopt_code_ip --config.rl.lr=5e-5

The reference study on accelerators (Qwen3 checkpoints, hyper-parameters of
shared/DESIGN.md), training on DAPO-Math and evaluating on MATH-500, or on
DeepCoder and HumanEval (data files: JSONL, JSONL.gz or Parquet; each one's
format is read from its fields, or named by --config.task.format and
--config.task.eval_format):

  python launch/train.py \
    --config=configs/default.py:study=1,model=qwen3_1_7b,workflow=voting,policy=isolated \
    --config.model.checkpoint=/ckpt/Qwen3-1.7B \
    --config.task.train_path=/data/dapo-math-17k.parquet \
    --config.task.eval_path=/data/math500.jsonl --config.eval.num_problems=500 \
    --workdir=gs://bucket/runs/voting_ip_1.7b
  python launch/train.py \
    --config=configs/default.py:study=1,model=qwen3_1_7b,workflow=eval_opt,task=code \
    --config.model.checkpoint=/ckpt/Qwen3-1.7B \
    --config.task.train_path=/data/deepcoder.parquet --config.task.format=deepcoder \
    --config.task.eval_path=humaneval --config.task.eval_format=humaneval \
    --config.eval.num_problems=164 --workdir=gs://bucket/runs/evalopt_code_sp_1.7b

Arguments (comma-separated key=value): workflow, task (math | code), model
(a preset), policy (shared | isolated | hybrid), kind (lora | full), grouping,
seed, study (0 | 1), agents, import (plug-in modules joined by '+').

The config itself is marl_jax.trainer.config.get_config (the library reads
it too); this file is the name the command line uses.
"""

from marl_jax.trainer.config import get_config  # pylint: disable=unused-import
