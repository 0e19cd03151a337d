r"""Sweep presets for launch/sweep.py: the experiment matrices (marl_jax.study.sweep).

  python launch/sweep.py --sweep=configs/sweeps.py:tiny --dir=sweeps/tiny --parallel=2
  python launch/sweep.py --sweep=configs/sweeps.py:study --dir=gs://b/sweeps/study \
      --sweep.axes.task="('math',)" --print_commands \
      --sweep.overrides="('task.train_path=/data/dapo-math-17k.parquet', \
      'task.eval_path=/data/math500.jsonl', 'eval.num_problems=500')"
                                             # one launch/train.py command per run
  python launch/sweep.py --sweep=configs/sweeps.py:tiny --dir=sweeps/tiny --status
  python launch/report.py --dir=sweeps/tiny  # report.md with figures

Presets (the argument):
  tiny    the tiny world: single, voting, eval_opt, orch_workers x math, code x
          tiny_s, tiny_m, tiny_l x SP, IP x seeds 0, 1 (84 runs) on the
          warm-started tiny bases, with the RL settings of configs/demo.py
          (full copies, lr 3e-4) at the published study's budget: 30 steps
          of 8 problems x 8 samples, 256 sampled eval problems every 5 steps
          (1-6 core-minutes a run, 3.1 on average; docs/tiny_study), plus 8
          N = 1 references (voting n = 1, orch_workers m = 1; tiny_m, IP).
  tiny_long  the tiny world's multi-agent workflows x math, code x tiny_m x
          SP, IP, seed 0 (12 runs) at 150 steps, evaluated every 10: long
          enough to look for claim 2's terminal cliffs, which 30 steps may
          end before.
  study   the reference study: the same workflows and tasks x Qwen3 0.6B, 1.7B,
          4B x SP, IP x seeds 0, 1 (84 runs), configs/default.py:study=1 (500
          steps). Checkpoint and data paths go in `overrides`; every run
          of a sweep gets them, so math and code data are two sweeps
          (--sweep.axes.task="('math',)" with DAPO-Math / MATH-500 files,
          then "('code',)" with DeepCoder / HumanEval ones), as above.
  mechanisms_reference, mechanisms_clean, mechanisms_joint
          the mechanism study (docs/mechanisms): voting, orch_workers x math,
          code x tiny_m x SP, IP x seeds 0, 1, 2 at 150 steps, plus the N = 1
          references (voting n = 1, orch_workers m = 1, IP; each warm-started
          on its own workflow options), 36 runs for `reference` and 18 (math
          only, the issue's first trim) for the ablations, under the update
          mechanics of its name (marl_jax.rl.schemes): `reference` the
          reference study's verl trainer with its schedule quirks (per-update
          ticks, cosine that climbs back), `clean` its update with a clamped
          per-iteration schedule, `joint` this library's joint update at a
          constant rate.
  smoke   2 runs (voting, math, tiny_s, SP and IP) on random tiny models,
          4 steps: checks the sweep, train and report pipeline end to end.
Any field can be overridden: --sweep.axes.seed="(0,1,2)".
Under the single workflow SP and IP are the same model, so `exclude` drops
single's IP point (84 = 96 - 12 runs); single's SP cell stays in the matrix as
the control and as the N = 1 reference of same-role gradient amplification
(marl_jax.study.diagnostics.claims). --sweep.exclude="()" runs it anyway.
"""

from __future__ import annotations

import ml_collections

WORKFLOWS = ("single", "voting", "eval_opt", "orch_workers")
MECHANISMS = ("reference", "clean", "joint")
PRESETS = ("tiny", "tiny_long", "study", "smoke") + tuple(f"mechanisms_{m}" for m in MECHANISMS)
# 150 steps of 8 problems x 8 samples, evaluated on 256 held-out problems every 10.
LONG = ("rollout.batch_size=8", "train.steps=150", "train.eval_every=10",
        "train.checkpoint_every=25", "train.save_rollouts_every=10", "eval.num_problems=256")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "tiny"
  if preset not in PRESETS:
    raise ValueError(f"Unknown sweep preset {preset!r}; valid: {PRESETS}.")
  c = ml_collections.ConfigDict()
  c.name = preset
  c.base_config = "configs/default.py"
  c.axes = ml_collections.ConfigDict()
  c.axes.workflow = WORKFLOWS
  c.axes.task = ("math", "code")
  c.axes.model = ("tiny_s", "tiny_m", "tiny_l")
  c.axes.policy = ("shared", "isolated")
  c.axes.seed = (0, 1)
  c.args = ""            # extra get_config arguments for every run, e.g. 'kind=full'
  c.overrides = ()       # 'field=value' for every run
  c.variants = ml_collections.ConfigDict()  # <name>: when, args, overrides (marl_jax.study.sweep)
  # One role: single's isolated run is the same model, data and seed as its
  # shared run, so it would repeat it step for step.
  c.exclude = ("workflow=single,policy=isolated",)
  if preset == "tiny_long":
    # Claim 2 is about terminal cliffs, which the reference study met late in
    # 500-step runs; 30 steps may end before any. Five times longer, one scale.
    c.base_config = "configs/demo.py"
    c.axes.workflow = WORKFLOWS[1:]
    c.axes.model = ("tiny_m",)
    c.axes.seed = (0,)
    c.overrides = LONG
  elif preset == "tiny":
    c.base_config = "configs/demo.py"
    c.overrides = ("rollout.batch_size=8", "train.steps=30", "train.eval_every=5",
                   "train.checkpoint_every=10", "train.save_rollouts_every=5",
                   "eval.num_problems=256")
    # N = 1 references of same-role amplification (claim 3) at the middle scale,
    # from the same base as the N > 1 run they are compared with.
    for workflow in ("voting", "orch_workers"):
      c.variants[f"{workflow}_n1"] = ml_collections.ConfigDict(dict(
          when=f"workflow={workflow},model=tiny_m,policy=isolated", args="agents=1",
          overrides=("tiny.run_workflow_options=False",)))
  elif preset.startswith("mechanisms_"):
    # Issue 22's study: which of the reference's mechanics make claims 2 and 3.
    mechanics = preset[len("mechanisms_"):]
    c.base_config = "configs/demo.py"
    c.axes.workflow = ("voting", "orch_workers")
    c.axes.model = ("tiny_m",)
    c.axes.seed = (0, 1, 2)
    if mechanics != "reference":
      # The ablations run math only: the first trim to fit the study's
      # wall-time budget (code under the reference's mechanics stays, as the
      # check that arm (a)'s verdicts hold on both tasks).
      c.axes.task = ("math",)
    c.args = f"mechanics={mechanics}"
    # A slot's minibatch is a batch's worth of episodes, as the reference's 512
    # rows are 64 prompts x 8 samples: 8 x 8 here. rl.minibatch_rows now follows
    # the batch override by itself; it stays explicit because the first runs were
    # launched when it did not (it was sized from configs/demo.py's 16 prompts).
    c.overrides = LONG + ("rl.minibatch_rows=64",)
    if mechanics == "joint":  # no schedule at all: the rate never decays or climbs
      c.overrides += ("rl.schedule=constant",)
    # N = 1 references, each from a base warm-started on its own options
    # (tiny.run_workflow_options=True), so its roles parse from the start.
    for workflow in ("voting", "orch_workers"):
      c.variants[f"{workflow}_n1"] = ml_collections.ConfigDict(dict(
          when=f"workflow={workflow},policy=isolated", args="agents=1"))
  elif preset == "study":
    c.axes.model = ("qwen3_0_6b", "qwen3_1_7b", "qwen3_4b")
    c.args = "study=1"
  elif preset == "smoke":
    c.axes.workflow = ("voting",)
    c.axes.task = ("math",)
    c.axes.model = ("tiny_s",)
    c.axes.seed = (0,)
    c.overrides = ("model.init=random", "rollout.batch_size=2", "rollout.group_size=2",
                   "rollout.max_new_tokens=6", "policy.lora_rank=2", "train.steps=4",
                   "train.eval_every=2", "train.checkpoint_every=2",
                   "train.save_rollouts_every=1", "eval.num_problems=4", "eval.greedy=False")
  return c
