"""Supervised warm start of a tiny model on scripted demonstrations of every role.

Two phases, because a tiny model learns the task skill several times slower
per step when the long role prompts are mixed in from the start:

  skill  the generator on its plain problem prompt (the `single` workflow),
         short and cheap rows. Every `eval_every` steps its accuracy at
         temperature 1 is measured on held-out problems of every task; a task
         that reaches `target_accuracy` leaves the stream, and the phase ends
         when every task has (accuracy jumps, so a fixed step count would
         over- or undershoot) or at `max_steps`.
  roles  `role_steps` steps on every role of every workflow (the weighted
         sources), which teaches the output formats and the judging, picking
         and planning behaviours on top of the skill.

The demonstration stream cycles over (workflow, task) sources; each chunk is
a batch of scripted episodes (tiny.demonstrations) on fresh train problems.
Trained calls are sorted into length buckets and a step takes a fixed number
of rows from every bucket (static shapes: one compiled step per phase), with
the loss on completion tokens only, the stop token included, averaged per
demonstration.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from marl_jax.generate import sampler as sampling
from marl_jax.models import init_params, scoring
from marl_jax.models.config import ModelConfig
from marl_jax.tasks import Task
from marl_jax.tiny.demonstrations import Noise, demonstrations
from marl_jax.workflows import Workflow
from marl_jax.workflows import rollout

_EVAL_KEY = 104729


@dataclasses.dataclass(frozen=True)
class Settings:
  """Warm-start hyper-parameters (config.tiny; see configs/default.py).

  Attributes:
    lr, warmup_steps, weight_decay, grad_clip: AdamW with linear warmup, then
      constant (the skill phase ends on accuracy, not on a schedule's end).
    batch_size: demonstrations per skill step; role_batch_size: per role
      step. Rows are split over the length buckets in proportion to how often
      each bucket occurs (rounded up).
    bucket_lengths: padded sequence lengths (prompt + completion); one more
      bucket of max_prompt_len + max_new_tokens (the longest possible) is
      always added.
    max_steps: cap on the skill phase. eval_every: skill steps between
      accuracy checks. eval_problems: held-out problems per task per check.
    target_accuracy: a task is held once the generator's T=1 accuracy on its
      held-out problems is at least this; the skill phase ends when all are.
    hold: share of the stream a held task keeps, relative to a learning one.
    role_steps: steps of the roles phase (0: skill only).
    problems_per_chunk: episodes per chunk of the demonstration stream.
    seed: parameters, demonstrations and evaluation draws.
    noise: the demonstrator's imperfection (tiny.demonstrations.Noise).
  """

  lr: float = 3e-3
  warmup_steps: int = 20
  weight_decay: float = 0.01
  grad_clip: float = 1.0
  batch_size: int = 256
  role_batch_size: int = 128
  bucket_lengths: tuple[int, ...] = (16, 32, 64, 80, 128)
  max_steps: int = 2000
  eval_every: int = 40
  eval_problems: int = 128
  target_accuracy: float = 0.3
  hold: float = 0.25
  role_steps: int = 400
  problems_per_chunk: int = 32
  seed: int = 0
  noise: Noise = Noise()

  def __post_init__(self):
    object.__setattr__(self, "bucket_lengths", tuple(int(x) for x in self.bucket_lengths))
    positive = ("lr", "batch_size", "role_batch_size", "max_steps", "eval_every",
                "eval_problems", "problems_per_chunk")
    for name in positive:
      if not getattr(self, name) > 0:
        raise ValueError(f"config.tiny.{name} must be > 0, got {getattr(self, name)!r}.")
    for name in ("warmup_steps", "weight_decay", "grad_clip", "role_steps"):
      if getattr(self, name) < 0:
        raise ValueError(f"config.tiny.{name} must be >= 0, got {getattr(self, name)!r}.")
    for name in ("target_accuracy", "hold"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"config.tiny.{name} must be in [0, 1], got {getattr(self, name)!r}.")
    lengths = self.bucket_lengths
    if not lengths or min(lengths) < 2 or list(lengths) != sorted(set(lengths)):
      raise ValueError(f"config.tiny.bucket_lengths must be increasing lengths >= 2, got "
                       f"{lengths}.")


@dataclasses.dataclass(frozen=True)
class Source:
  """One (workflow, task) pair of the demonstration stream, with its chunks per round."""

  workflow: Workflow
  task: Task
  weight: int = 1

  def __post_init__(self):
    if self.weight < 0:
      raise ValueError(f"config.tiny.workflows.{self.workflow.name} (chunks per round) must be "
                       f">= 0, got {self.weight}.")


@dataclasses.dataclass(frozen=True)
class Limits:
  """The rollout limits the demonstrations are rendered with (as at RL time)."""

  max_prompt_len: int
  max_new_tokens: int


def demonstration_stream(sources: Sequence[Source], tokenizer: Any, settings: Settings,
                         limits: Limits, scale: Mapping[str, float] | None = None,
                         first_chunk: int = 0) -> Iterator[tuple[list[int], int]]:
  """Endless trained demonstrations: (prompt + completion tokens, completion length).

  Chunks go to the sources in proportion to weight * scale[task kind] (a
  smooth weighted round robin; `scale` is read at every chunk, so a caller
  may change it; None: 1 for every kind). Chunk c runs on the task's train
  problems for (seed, step=c), so the stream is a pure function of the
  settings and the scale changes; numbering starts at `first_chunk` (phases
  use disjoint ranges).
  """
  credit = [0.0] * len(sources)
  for chunk in range(first_chunk, 1 << 62):
    weights = [s.weight * (1.0 if scale is None else scale.get(s.task.kind, 1.0))
               for s in sources]
    if sum(weights) <= 0:
      raise ValueError("demonstration_stream: every source has weight 0.")
    credit = [c + w for c, w in zip(credit, weights)]
    index = int(np.argmax(credit))
    credit[index] -= sum(weights)
    source = sources[index]
    problems = source.task.sample("train", settings.problems_per_chunk, seed=settings.seed,
                                  step=chunk)
    for demo in demonstrations(source.workflow, source.task, problems, tokenizer,
                               settings.noise, (settings.seed, chunk),
                               max_prompt_len=limits.max_prompt_len,
                               max_new_tokens=limits.max_new_tokens):
      if scale is not None and not scale.get(source.task.kind, 1.0):
        break  # the kind was switched off mid-chunk
      if demo.trained:
        call = demo.call
        yield list(call.prompt_tokens) + list(call.completion_tokens), len(call.completion_tokens)


class Batcher:
  """Packs a demonstration stream into fixed-shape per-bucket batches.

  Rows per bucket follow the bucket frequencies of the next `probe`
  demonstrations (`rebalance` re-measures them when the stream's mix
  changes); a bucket holding less than `min_share` of them is merged into the
  next longer one, so no step waits on a rare length. A step waits until
  every bucket has its rows; surplus waits for later steps (at most `keep`
  steps' worth per bucket, the oldest dropped beyond that), so the mix
  follows the stream.
  """

  def __init__(self, stream: Iterator[tuple[list[int], int]], lengths: Sequence[int],
               batch_size: int, pad_id: int, probe: int = 4096, keep: int = 4,
               min_share: float = 0.005):
    self.stream, self.lengths, self.pad_id, self.keep = stream, tuple(lengths), pad_id, keep
    self.batch_size, self.probe, self.min_share = batch_size, probe, min_share
    self.rebalance()

  def _fit(self, tokens: list[int]) -> int:
    for bucket, length in enumerate(self.lengths):
      if len(tokens) <= length:
        return bucket
    raise ValueError(f"a demonstration has {len(tokens)} tokens, more than the longest "
                     f"bucket length {self.lengths[-1]}.")

  def rebalance(self) -> None:
    """Empties the queues and sets routes and rows from the stream's next items."""
    items = [next(self.stream) for _ in range(self.probe)]
    counts = np.bincount([self._fit(tokens) for tokens, _ in items],
                         minlength=len(self.lengths)).astype(float)
    self.route = list(range(len(self.lengths)))
    for bucket in range(len(self.lengths) - 2, -1, -1):  # rare buckets ride in longer ones
      if counts[bucket] < self.min_share * len(items):
        self.route[bucket] = self.route[bucket + 1]
        counts[self.route[bucket]] += counts[bucket]
        counts[bucket] = 0
    self.rows = tuple(math.ceil(self.batch_size * c / len(items)) for c in counts)
    self.queues = [collections.deque() for _ in self.lengths]
    for item in items:
      self._push(item)

  def _push(self, item: tuple[list[int], int]) -> None:
    self.queues[self.route[self._fit(item[0])]].append(item)

  def next_batch(self) -> dict[int, dict[str, np.ndarray]]:
    """{length: {'tokens', 'valid', 'mask'}} with mask [R, L - 1] on completion targets."""
    while any(len(q) < r for q, r in zip(self.queues, self.rows)):
      self._push(next(self.stream))
    batch = {}
    for queue, rows, length in zip(self.queues, self.rows, self.lengths):
      if not rows:
        continue
      tokens = np.full((rows, length), self.pad_id, np.int32)
      valid = np.zeros((rows, length), bool)
      mask = np.zeros((rows, length - 1), np.float32)
      for row in range(rows):
        ids, completion = queue.popleft()
        tokens[row, length - len(ids):] = ids
        valid[row, length - len(ids):] = True
        mask[row, length - 1 - completion:] = 1.0  # targets t + 1 of the completion
      while len(queue) > self.keep * rows:
        queue.popleft()
      batch[length] = {"tokens": tokens, "valid": valid, "mask": mask}
    return batch


@functools.lru_cache(maxsize=8)  # one object per settings: jit caches the step by identity
def optimizer(settings: Settings) -> optax.GradientTransformation:
  schedule = optax.linear_schedule(settings.lr / max(1, settings.warmup_steps), settings.lr,
                                   max(1, settings.warmup_steps))
  return optax.chain(optax.clip_by_global_norm(settings.grad_clip or float("inf")),
                     optax.adamw(schedule, b2=0.98, weight_decay=settings.weight_decay))


def completion_loss(model: ModelConfig, params: Any, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(sum over demonstrations of their mean completion-token NLL, number of demonstrations).

  Each demonstration weighs the same whatever its length (sequence mean of
  token means): a 3-token arithmetic answer counts as much as a 20-token
  plan, so the long role outputs do not drown the task skill.
  """
  total, count = jnp.float32(0), jnp.float32(0)
  for part in batch.values():
    tokens, mask = part["tokens"], part["mask"]
    logp, _ = scoring.token_logprobs(model, params, tokens, part["valid"],
                                     chunk_size=tokens.shape[1])
    lengths = jnp.sum(mask, axis=1)
    total = total - jnp.sum(jnp.sum(logp * mask, axis=1) / jnp.maximum(lengths, 1.0))
    count = count + jnp.sum(lengths > 0)
  return total, count


@functools.partial(jax.jit, static_argnames=("model", "opt"), donate_argnums=(0,))
def supervised_step(state: tuple, batch: dict, *, model: ModelConfig,
               opt: optax.GradientTransformation) -> tuple[tuple, dict]:
  """One AdamW step on the completion loss (completion_loss); state = (params, opt_state)."""
  params, opt_state = state

  def loss_fn(p):
    total, count = completion_loss(model, p, batch)
    return total / jnp.maximum(count, 1.0)

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = opt.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state), {
      "loss": loss, "grad_norm": optax.global_norm(grads)}


class ParamsPolicy:
  """Plain parameters behind rollout's Policy interface (every role: the same model)."""

  def __init__(self, model: ModelConfig, params: Any):
    self.model, self.params = model, params

  def slot_of(self, role: str) -> int:
    del role
    return 0

  def generate(self, prompts, roles, rng, sampling_params, **options):
    del roles  # options: rollout's row_ids
    return sampling.generate(self.model, self.params, prompts, rng, sampling_params, **options)


def generator_accuracy(model: ModelConfig, params: Any, skill: Sequence[Source], tokenizer: Any,
                       settings: Settings, limits: Limits) -> dict[str, float]:
  """The generator's accuracy at T=1 on held-out problems, per task kind.

  One call per problem, with the prompt of the skill source's workflow.
  """
  policy = ParamsPolicy(model, params)
  params_t1 = sampling.SamplingParams(temperature=1.0, max_new_tokens=limits.max_new_tokens)
  out = {}
  for source in skill:
    problems = source.task.sample("eval", settings.eval_problems, seed=settings.seed, step=0)
    episodes = rollout.run(source.workflow, policy, source.task, problems, 1,
                           jax.random.PRNGKey(settings.seed + _EVAL_KEY), params_t1, tokenizer,
                           max_prompt_len=limits.max_prompt_len)
    out[source.task.kind] = float(np.mean([e.reward for e in episodes]))
  return out


class _Trainer:
  """The parameters and optimizer state, stepped on batches from a Batcher."""

  def __init__(self, model: ModelConfig, settings: Settings, limits: Limits):
    self.model, self.settings = model, settings
    longest = limits.max_prompt_len + limits.max_new_tokens
    self.lengths = sorted({n for n in settings.bucket_lengths if n < longest} | {longest})
    self.opt = optimizer(settings)
    params = init_params(model, jax.random.PRNGKey(settings.seed))
    self.state, self.step, self.loss = (params, self.opt.init(params)), 0, float("nan")

  def batcher(self, stream: Iterator[tuple[list[int], int]], batch_size: int) -> Batcher:
    return Batcher(stream, self.lengths, batch_size, self.model.pad_id)

  def train(self, batcher: Batcher) -> None:
    batch = jax.tree.map(jnp.asarray, batcher.next_batch())
    self.state, metrics = supervised_step(self.state, batch, model=self.model, opt=self.opt)
    self.step += 1
    self.loss = float(metrics["loss"])
    if not math.isfinite(self.loss):
      raise FloatingPointError(f"tiny warm start: loss is {self.loss} at step {self.step}; "
                               "lower config.tiny.lr.")


def warm_start(model: ModelConfig, skill: Sequence[Source], roles: Sequence[Source],
               tokenizer: Any, settings: Settings, limits: Limits,
               log: Callable[[str], None] = print) -> tuple[Any, dict]:
  """Trains a fresh model, skill phase then roles phase (module doc); returns (params, record).

  Args:
    skill: one source per task with the generator's plain prompt (`single`).
    roles: every (workflow, task) source, weighted, for the roles phase.
  record: skill_steps, stopped ('target' or 'max_steps'), reached (kind ->
  skill step it reached the target), skill_accuracy (at the end of the skill
  phase), role_steps, accuracy (per task kind, after the roles phase), loss,
  seconds, rows (per bucket length, per phase).
  """
  kinds = [source.task.kind for source in skill]
  if not skill or len(set(kinds)) != len(kinds):
    raise ValueError(f"warm_start() needs one skill source per task kind, got {kinds}.")
  trainer, start = _Trainer(model, settings, limits), time.perf_counter()

  def check(phase: str) -> dict[str, float]:
    accuracy = generator_accuracy(model, trainer.state[0], skill, tokenizer, settings, limits)
    shown = " ".join(f"{kind} {value:.2f}" for kind, value in accuracy.items())
    log(f"tiny warm start ({phase}): step {trainer.step} loss {trainer.loss:.3f} held-out "
        f"generator accuracy (T=1) {shown} elapsed {time.perf_counter() - start:.0f}s")
    return accuracy

  scale, reached, rows, accuracy = {kind: 1.0 for kind in kinds}, {}, {}, {}
  batcher = trainer.batcher(
      demonstration_stream(skill, tokenizer, settings, limits, scale), settings.batch_size)
  rows["skill"] = dict(zip(trainer.lengths, batcher.rows))
  while trainer.step < settings.max_steps and len(reached) < len(kinds):
    trainer.train(batcher)
    if trainer.step % settings.eval_every == 0 or trainer.step == settings.max_steps:
      accuracy = check("skill")
      done = {k for k in kinds if k not in reached and accuracy[k] >= settings.target_accuracy}
      reached.update({kind: trainer.step for kind in done})
      if done and len(reached) < len(kinds):
        scale.update({kind: settings.hold for kind in done})
        batcher.rebalance()
  skill_steps, skill_accuracy = trainer.step, accuracy
  if settings.role_steps and roles:
    batcher = trainer.batcher(demonstration_stream(roles, tokenizer, settings, limits,
                                                   first_chunk=1 << 40),
                              settings.role_batch_size)
    rows["roles"] = dict(zip(trainer.lengths, batcher.rows))
    for _ in range(settings.role_steps):
      trainer.train(batcher)
    accuracy = check("roles")
  record = {"skill_steps": skill_steps,
            "stopped": "target" if len(reached) == len(kinds) else "max_steps",
            "reached": reached, "skill_accuracy": skill_accuracy,
            "role_steps": trainer.step - skill_steps, "accuracy": accuracy,
            "loss": trainer.loss, "seconds": round(time.perf_counter() - start, 1),
            "rows": rows}
  return jax.device_get(trainer.state[0]), record
