"""Runs a workflow over B problems x G samples: stage by stage, or each episode at its own pace.

    episodes = rollout.run(workflows.get("voting"), store, task, problems,
                           group_size=8, rng=key, sampling=SamplingParams(0.7),
                           tokenizer=tokenizer)
    metrics = rollout.role_metrics(episodes)

schedule='stages': every call of a stage group, across the whole batch and
every role in it, goes to the policy as ONE `generate` call (rows carry their
roles, the policy routes them to their slots); then every distinct answer that
matters (finals, each generator's / worker's answer, the answers evaluators
judged and aggregators chose among) is verified in one `task.verify_batch`
call, through the text of a call that produced it (workflows.verify).
schedule='episodes' (continuous engine): one engine session for the rollout;
an episode's calls of group k+1 are submitted as soon as its calls of group k
are done (earlier episodes first), and a GRPO group is verified on a worker
thread as soon as its episodes are done, while decoding goes on.

A call's key is its identity: fold_in(fold_in(rng, k), id) for group k, id =
episode.id * P + the place of its (stage, agent) among the group's P calls,
so the records do not depend on the schedule, the engine or which episodes
share a sampler call: both schedules give the same episodes.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Protocol, Sequence

import jax
import numpy as np

from marl_jax.generate import continuous, draw
from marl_jax.generate.sampler import Generation, SamplingParams
from marl_jax.tasks import Problem, Task
from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import Stage, Workflow
from marl_jax.workflows.episodes import Call, Episode, role_metrics
from marl_jax.workflows.verify import Background, verify

__all__ = ["Policy", "role_metrics", "run"]

DEFAULT_MAX_PROMPT_LEN = 256
# Held-out evaluation samples with fold_in(seed, EVAL_KEY) at every evaluation
# of a run, so accuracy curves compare policies, not draws.
EVAL_KEY = 7919
SCHEDULES = ("stages", "episodes")  # config.rollout.schedule
LONG_PROMPTS = ("truncate", "refuse")  # config.rollout.long_prompts


class Policy(Protocol):
  """A generator backend: PolicyStore, or a scripted stand-in for tests.

  generate's options: row_ids (each row's key is fold_in(rng, row_ids[i])),
  and with engine='continuous' the engine's (slots, limits, max_prompt_len).
  schedule='episodes' also needs `session(roles, sampling, slots=,
  max_prompt_len=, shares=)` (PolicyStore.session; shares: each role's calls per
  episode, Workflow.calls_per_role).
  """

  def generate(self, prompts: Sequence[Sequence[int]], roles: Sequence[str], rng: jax.Array,
               sampling: SamplingParams, **options) -> Generation: ...

  def slot_of(self, role: str) -> int: ...


class Tokenizer(Protocol):
  def apply_chat_template(self, messages, add_generation_prompt: bool = True,
                          enable_thinking: bool = False) -> list[int]: ...

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...


def sampling_params(rollout: Mapping[str, Any], temperature: float) -> SamplingParams:
  """Sampling of a run's calls at `temperature` (config.rollout: top_p, top_k,
  max_new_tokens); greedy (0) ignores top_p and top_k."""
  return SamplingParams(temperature=temperature, top_p=rollout["top_p"] if temperature else 1.0,
                        top_k=rollout["top_k"] if temperature else 0,
                        max_new_tokens=rollout["max_new_tokens"])


def options(config: Mapping[str, Any], slots: int | None = None) -> dict[str, Any]:
  """`run`'s keyword options from a run's config (rollout.max_prompt_len, engine,
  slots, schedule, model.enable_thinking); `slots`, where given, replaces
  rollout.slots (the trainer's resolved value: planner.rollout_slots)."""
  rollout = config["rollout"]
  return {"max_prompt_len": rollout["max_prompt_len"],
          "enable_thinking": bool(config["model"].get("enable_thinking", False)),
          "engine": rollout.get("engine", "lockstep"),
          "slots": int(rollout.get("slots", 0) if slots is None else slots),
          "schedule": rollout.get("schedule", "stages"),
          "long_prompts": rollout.get("long_prompts", "truncate")}


def _per_role(value: int | Mapping[str, int], default: int, roles: Sequence[str],
              name: str) -> dict[str, int]:
  """An int for every role, or a {role: int} map (roles left out get `default`)."""
  if not isinstance(value, Mapping):
    value = {role: value for role in roles}
  unknown = sorted(set(value) - set(roles))
  if unknown:
    raise ValueError(f"{name} names unknown roles {unknown}; the workflow's roles are {roles}.")
  limits = {role: int(value.get(role, default)) for role in roles}
  if min(limits.values()) < 1:
    raise ValueError(f"{name} must be >= 1 for every role, got {limits}.")
  return limits


def run(
    workflow: Workflow,
    policy: Policy,
    task: Task,
    problems: Sequence[Problem],
    group_size: int,
    rng: jax.Array,
    sampling: SamplingParams,
    tokenizer: Tokenizer,
    *,
    max_prompt_len: int | Mapping[str, int] = DEFAULT_MAX_PROMPT_LEN,
    max_new_tokens: int | Mapping[str, int] | None = None,
    enable_thinking: bool = False,
    engine: str = "lockstep",
    slots: int = 0,
    schedule: str = "stages",
    long_prompts: str = "truncate",
    timings: dict[str, float] | None = None,
) -> list[Episode]:
  """Runs `group_size` episodes of `workflow` per problem; returns them, problem-major.

  Args:
    policy: the generator backend (a PolicyStore, or anything with its
      `generate(prompts, roles, rng, sampling, **options)` and `slot_of(role)`;
      schedule='episodes' also needs its `session`).
    max_prompt_len: longest prompt in tokens (per role if a map); longer
      prompts keep their last tokens and are counted (prompt_truncated), or
      with long_prompts='refuse' are an error naming the episode and role.
    max_new_tokens: per-role completion limit (int or map; default
      sampling.max_new_tokens). A stage samples up to its roles' largest
      limit and cuts each row to its own (equivalent to sampling with it).
    enable_thinking: passed to the chat template (Qwen3's thinking mode).
    engine: the sampler, 'lockstep' (one sampler.generate per stage) or
      'continuous' (continuous.generate: `slots` decode slots, 0 for
      continuous.DEFAULT_SLOTS; the KV cache sized by the largest
      max_prompt_len and max_new_tokens of any role, each row stopping at its
      role's limit). Rows draw with the same keys, so the episodes agree.
    schedule: 'stages' (stage group by stage group over the whole batch) or
      'episodes' (engine='continuous' only: each episode moves on as soon as
      its calls of a group are done, GRPO groups verified while decoding goes
      on); the same episodes either way (module doc).
    timings: if given, receives generate_s (sampling, prompt building and
      parsing, until the last call is done), verify_s (verification's own
      time) and verify_overlap_s (the part of verify_s that ran while calls
      were still decoding; 0 for schedule='stages').
  Per-call correctness after verification: answer calls (generator, worker)
  are correct when their answer is; a choice (aggregator, synthesizer) is
  scored only when a shown candidate, or its own answer, is correct; a
  verdict is correct when it matches the truth of the judged answer (an
  empty or unparseable verdict is wrong). A reward of 1 counts as correct.
  """
  start = time.perf_counter()
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}.")
  if engine not in continuous.ENGINES or slots < 0:
    raise ValueError(f"rollout engine={engine!r}, slots={slots}: the engine must be one of "
                     f"{continuous.ENGINES} and slots >= 0 (config.rollout.engine / slots).")
  if schedule not in SCHEDULES or (schedule == "episodes" and engine != "continuous"):
    raise ValueError(f"rollout schedule={schedule!r} with engine={engine!r}: the schedule must "
                     f"be one of {SCHEDULES}, and 'episodes' needs engine='continuous' "
                     "(config.rollout.schedule / engine).")
  if long_prompts not in LONG_PROMPTS:
    raise ValueError(f"rollout long_prompts={long_prompts!r} is unknown; valid: {LONG_PROMPTS} "
                     "(config.rollout.long_prompts).")
  if not problems:
    raise ValueError("rollout.run() got no problems.")
  context = _Context(
      workflow, policy, task, rng, sampling, tokenizer,
      _per_role(max_prompt_len, DEFAULT_MAX_PROMPT_LEN, workflow.roles, "max_prompt_len"),
      _per_role(sampling.max_new_tokens if max_new_tokens is None else max_new_tokens,
                sampling.max_new_tokens, workflow.roles, "max_new_tokens"),
      enable_thinking, long_prompts == "truncate")
  episodes = [
      Episode(id=g * group_size + s, group=g, sample=s, problem=problem,
              question=problem.prompt, family=prompts_lib.family_of(task))
      for g, problem in enumerate(problems) for s in range(group_size)]
  if schedule == "episodes":
    decoded, spans = _run_episodes(context, episodes, problems, slots)
  else:
    for index in range(len(workflow.groups)):
      rows = [row for episode in episodes for row in context.rows(index, episode)]
      if rows:
        context.finish(rows, _run_group(context, index, rows, engine, slots))
    decoded = time.perf_counter()
    verify(episodes, workflow, task, problems)
    spans = [(decoded, time.perf_counter())]
  if timings is not None:
    timings["generate_s"] = decoded - start
    timings["verify_s"] = sum(end - begin for begin, end in spans)
    timings["verify_overlap_s"] = sum(max(0.0, min(end, decoded) - begin) for begin, end in spans)
  return episodes


# (episode, stage, agent, id): one call of an episode in a stage group; id: its identity
# within the group, episode.id * (the group's calls per episode) + its place among them.
Row = tuple[Episode, Stage, int, int]


@dataclasses.dataclass(frozen=True)
class _Context:
  """What every call of one rollout shares, and how a call is asked for and recorded."""

  workflow: Workflow
  policy: Policy
  task: Task
  rng: jax.Array
  sampling: SamplingParams
  tokenizer: Tokenizer
  prompt_limit: dict[str, int]
  new_limit: dict[str, int]
  enable_thinking: bool
  truncate: bool  # long prompts cut from the left, or refused

  def rows(self, index: int, episode: Episode) -> list[Row]:
    """The episode's calls in stage group `index` (none once it is done)."""
    if episode.done:
      return []
    stages = self.workflow.groups[index]
    width, offset, rows = sum(stage.agents for stage in stages), 0, []
    for stage in stages:
      if stage.when is None or stage.when(episode):
        rows += [(episode, stage, agent, episode.id * width + offset + agent)
                 for agent in range(stage.agents)]
      offset += stage.agents
    return rows

  def prompts(self, rows: Sequence[Row]) -> tuple[list[list[int]], list[bool]]:
    """The rows' prompts (cut from the left to their role's limit), and which were cut."""
    prompts, cut = [], []
    for episode, stage, agent, _ in rows:
      message = {"role": "user", "content": self.workflow.prompt(stage, episode, agent)}
      ids = list(self.tokenizer.apply_chat_template([message], add_generation_prompt=True,
                                                    enable_thinking=self.enable_thinking))
      limit = self.prompt_limit[stage.role]
      if len(ids) > limit and not self.truncate:
        raise ValueError(
            f"Episode {episode.id} (problem {episode.problem.id!r}), role {stage.role!r}: its "
            f"prompt is {len(ids)} tokens, longer than max_prompt_len={limit} "
            "(config.rollout.max_prompt_len). Raise it, or set rollout.long_prompts='truncate' "
            "to cut long prompts from the left (counted in prompt_truncated/<role>).")
      cut.append(len(ids) > limit)
      prompts.append(ids[-limit:])
    return prompts, cut

  def call(self, index: int, row: Row, prompt: list[int], cut: bool, tokens: np.ndarray,
           logprobs: np.ndarray, truncated: bool) -> Call:
    """The Call of a sampled row (tokens: all it sampled), cut to its role's limit and parsed."""
    episode, stage, agent, _ = row
    limit = self.new_limit[stage.role]
    length = min(len(tokens), limit)
    truncated = bool(truncated) or len(tokens) > limit
    tokens = np.asarray(tokens[:length]).tolist()
    text = self.tokenizer.decode(tokens if truncated else tokens[:-1])
    parsed = stage.parse(text, episode, agent, self.task)
    failures = ("truncated",) * truncated + (("empty",) if not text.strip() else parsed.failures)
    return Call(
        episode=episode.id, group=episode.group, role=stage.role, agent=agent, turn=stage.turn,
        stage=index, slot=self.policy.slot_of(stage.role), prompt_tokens=prompt,
        completion_tokens=tokens, logprobs=np.array(logprobs[:length]), truncated=truncated,
        prompt_truncated=cut, text=text, parsed=dataclasses.replace(parsed, failures=failures))

  def finish(self, rows: Sequence[Row], calls: Sequence[Call]) -> None:
    """Appends the calls of a group (parsed before any is appended: a tuple group's stages
    see the episode as it was before the group), then applies the stages' `stop`."""
    for (episode, *_), call in zip(rows, calls):
      episode.calls.append(call)
    for episode, stage, *_ in rows:
      if stage.stop is not None and not episode.done and stage.stop(episode):
        episode.done = True

  def row_options(self, rows: Sequence[Row]) -> tuple[list[str], list[int], list[int]]:
    """The rows' roles, token limits and ids."""
    roles = [stage.role for _, stage, _, _ in rows]
    return roles, [self.new_limit[role] for role in roles], [row[3] for row in rows]


def _run_group(context: _Context, index: int, rows: Sequence[Row], engine: str,
               slots: int) -> list[Call]:
  """One sampler call for every row of a stage group; returns the rows' Calls."""
  prompts, cut = context.prompts(rows)
  roles, limits, ids = context.row_options(rows)
  stage_sampling = dataclasses.replace(context.sampling, max_new_tokens=max(limits))
  options: dict[str, Any] = {"row_ids": ids}
  if engine == "continuous":  # one cache shape (and decode program) for every stage
    stage_sampling = dataclasses.replace(context.sampling,
                                         max_new_tokens=max(context.new_limit.values()))
    options.update(engine=engine, slots=slots or continuous.DEFAULT_SLOTS, limits=limits,
                   max_prompt_len=max(context.prompt_limit.values()))
  out = context.policy.generate(prompts, roles, jax.random.fold_in(context.rng, index),
                                stage_sampling, **options)
  return [context.call(index, row, prompts[i], cut[i], out.tokens[i, :out.lengths[i]],
                       out.logprobs[i, :out.lengths[i]], out.truncated[i])
          for i, row in enumerate(rows)]


def _run_episodes(context: _Context, episodes: list[Episode], problems: Sequence[Problem],
                  slots: int) -> tuple[float, list[tuple[float, float]]]:
  """schedule='episodes': one engine session; each episode submits its next group's calls
  when its current group's are done, and each GRPO group is verified on a worker thread
  once its episodes are done. Returns (when decoding ended, the verify jobs' spans)."""
  if not callable(getattr(context.policy, "session", None)):
    raise ValueError("rollout schedule='episodes' needs a policy with session() (a "
                     "PolicyStore); this one has only generate(): use schedule='stages'.")
  groups = context.workflow.groups
  session = context.policy.session(
      context.workflow.roles,
      dataclasses.replace(context.sampling, max_new_tokens=max(context.new_limit.values())),
      slots=slots or continuous.DEFAULT_SLOTS, max_prompt_len=max(context.prompt_limit.values()),
      shares=context.workflow.calls_per_role)
  verifier = Background(context.workflow, context.task, problems)
  members: dict[int, list[Episode]] = {}
  for episode in episodes:
    members.setdefault(episode.group, []).append(episode)
  left = {group: len(of) for group, of in members.items()}
  waiting: dict[int, tuple[int, list[Row], list, list, list]] = {}  # episode id -> its group
  owner: dict[int, tuple[int, int]] = {}  # session row -> (episode id, place in its group)

  def advance(episode: Episode, index: int) -> None:
    """Submits the episode's calls of its next group from `index` on, or ends it."""
    for index in range(index, len(groups)):  # pylint: disable=redefined-argument-from-local
      rows = context.rows(index, episode)
      if rows:
        prompts, cut = context.prompts(rows)
        roles, limits, ids = context.row_options(rows)
        keys = draw.row_keys(jax.random.fold_in(context.rng, index), len(rows), ids)
        handles = session.submit(prompts, roles, keys, limits=limits,
                                 priority=[episode.id] * len(rows))
        waiting[episode.id] = (index, rows, prompts, cut, [None] * len(rows))
        owner.update({handle: (episode.id, i) for i, handle in enumerate(handles)})
        return
    left[episode.group] -= 1
    if not left[episode.group]:
      verifier.submit(members[episode.group])

  try:
    for episode in episodes:
      advance(episode, 0)
    while not session.idle:
      for done in session.step():
        episode_id, place = owner.pop(done.row)
        index, rows, prompts, cut, outputs = waiting[episode_id]
        outputs[place] = done
        if all(out is not None for out in outputs):
          del waiting[episode_id]
          context.finish(rows, [
              context.call(index, row, prompts[i], cut[i], out.tokens, out.logprobs,
                           out.truncated) for i, (row, out) in enumerate(zip(rows, outputs))])
          advance(rows[0][0], index + 1)
    decoded = time.perf_counter()
    return decoded, verifier.wait()
  finally:
    verifier.close()
