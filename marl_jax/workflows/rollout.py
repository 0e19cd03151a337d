"""Runs a workflow over B problems x G samples in lockstep stages, one sampler call per stage.

    episodes = rollout.run(workflows.get("voting"), store, task, problems,
                           group_size=8, rng=key, sampling=SamplingParams(0.7),
                           tokenizer=tokenizer)
    metrics = rollout.role_metrics(episodes)

Every call of a stage, across the whole batch and every role in it, goes to
the policy as ONE `generate` call (rows carry their roles, the policy routes
them to their slots). Stage i samples with `fold_in(rng, i)`, so a rollout is
a deterministic function of its key. Afterwards every distinct answer that
matters (finals, each generator's / worker's answer, the answers evaluators
judged and aggregators chose among) is verified in one `task.verify_batch`
call, through the text of a call that produced it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping, Protocol, Sequence

import jax

from marl_jax.generate import continuous
from marl_jax.generate.sampler import Generation, SamplingParams
from marl_jax.tasks import Problem, Task
from marl_jax.tasks import rewards
from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import Workflow
from marl_jax.workflows.episodes import Call, Episode, role_metrics

__all__ = ["Policy", "role_metrics", "run"]

DEFAULT_MAX_PROMPT_LEN = 256
# Held-out evaluation samples with fold_in(seed, EVAL_KEY) at every evaluation
# of a run, so accuracy curves compare policies, not draws.
EVAL_KEY = 7919
# A verdict call with one of these failures is scored wrong whatever its fallback did
# (eval_opt's unreadable_verdict decides only what the episode does next).
_SCORED_FAILURES = ("empty", "no_verdict")


class Policy(Protocol):
  """A generator backend: PolicyStore, or a scripted stand-in for tests."""

  def generate(self, prompts: Sequence[Sequence[int]], roles: Sequence[str], rng: jax.Array,
               sampling: SamplingParams) -> Generation: ...

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
  slots, model.enable_thinking); `slots`, where given, replaces rollout.slots
  (the trainer's resolved value: planner.rollout_slots)."""
  rollout = config["rollout"]
  return {"max_prompt_len": rollout["max_prompt_len"],
          "enable_thinking": bool(config["model"].get("enable_thinking", False)),
          "engine": rollout.get("engine", "lockstep"),
          "slots": int(rollout.get("slots", 0) if slots is None else slots)}


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
    timings: dict[str, float] | None = None,
) -> list[Episode]:
  """Runs `group_size` episodes of `workflow` per problem; returns them, problem-major.

  Args:
    policy: the generator backend (a PolicyStore, or anything with its
      `generate(prompts, roles, rng, sampling)` and `slot_of(role)`).
    max_prompt_len: longest prompt in tokens (per role if a map); longer
      prompts keep their last tokens and are counted (prompt_truncated).
    max_new_tokens: per-role completion limit (int or map; default
      sampling.max_new_tokens). A stage samples up to its roles' largest
      limit and cuts each row to its own (equivalent to sampling with it).
    enable_thinking: passed to the chat template (Qwen3's thinking mode).
    engine: the sampler, 'lockstep' (one sampler.generate per stage) or
      'continuous' (continuous.generate: `slots` decode slots, 0 for
      continuous.DEFAULT_SLOTS; the KV cache sized by the largest
      max_prompt_len and max_new_tokens of any role, each row stopping at its
      role's limit). Rows draw with the same keys, so the episodes agree.
    timings: if given, receives generate_s (every stage's sampling, prompt
      building and parsing) and verify_s (the batched verification).
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
  if not problems:
    raise ValueError("rollout.run() got no problems.")
  prompt_limit = _per_role(max_prompt_len, DEFAULT_MAX_PROMPT_LEN, workflow.roles,
                           "max_prompt_len")
  new_limit = _per_role(sampling.max_new_tokens if max_new_tokens is None else max_new_tokens,
                        sampling.max_new_tokens, workflow.roles, "max_new_tokens")
  episodes = [
      Episode(id=g * group_size + s, group=g, sample=s, problem=problem,
              question=problem.prompt, family=prompts_lib.family_of(task))
      for g, problem in enumerate(problems) for s in range(group_size)]
  for index, stages in enumerate(workflow.groups):
    rows = [(episode, stage, agent)
            for episode in episodes if not episode.done
            for stage in stages if stage.when is None or stage.when(episode)
            for agent in range(stage.agents)]
    if not rows:
      continue
    calls = _run_stage(index, rows, workflow, policy, task, rng, sampling, tokenizer,
                       prompt_limit, new_limit, enable_thinking, engine, slots)
    for (episode, stage, _), call in zip(rows, calls):
      episode.calls.append(call)
    for episode, stage, _ in rows:
      if stage.stop is not None and not episode.done and stage.stop(episode):
        episode.done = True
  verify_start = time.perf_counter()
  _verify(episodes, workflow, task, problems)
  if timings is not None:
    timings["verify_s"] = time.perf_counter() - verify_start
    timings["generate_s"] = verify_start - start
  return episodes


def _run_stage(index, rows, workflow, policy, task, rng, sampling, tokenizer, prompt_limit,
               new_limit, enable_thinking, engine="lockstep", slots=0) -> list[Call]:
  """One sampler call for every row of a stage; returns the rows' Calls."""
  prompts, cut = [], []
  for episode, stage, agent in rows:
    message = {"role": "user", "content": workflow.prompt(stage, episode, agent)}
    ids = list(tokenizer.apply_chat_template([message], add_generation_prompt=True,
                                             enable_thinking=enable_thinking))
    limit = prompt_limit[stage.role]
    cut.append(len(ids) > limit)
    prompts.append(ids[-limit:])
  roles = [stage.role for _, stage, _ in rows]
  limits = [new_limit[role] for role in roles]
  stage_sampling = dataclasses.replace(sampling, max_new_tokens=max(limits))
  engine_options = {}
  if engine == "continuous":  # one cache shape (and decode program) for every stage
    stage_sampling = dataclasses.replace(sampling, max_new_tokens=max(new_limit.values()))
    engine_options = dict(engine=engine, slots=slots or continuous.DEFAULT_SLOTS, limits=limits,
                          max_prompt_len=max(prompt_limit.values()))
  out = policy.generate(prompts, roles, jax.random.fold_in(rng, index), stage_sampling,
                        **engine_options)
  calls = []
  for row, (episode, stage, agent) in enumerate(rows):
    length = min(int(out.lengths[row]), limits[row])
    truncated = bool(out.truncated[row]) or int(out.lengths[row]) > limits[row]
    tokens = out.tokens[row, :length].tolist()
    text = tokenizer.decode(tokens if truncated else tokens[:-1])
    parsed = stage.parse(text, episode, agent, task)
    failures = ("truncated",) * truncated + (("empty",) if not text.strip() else parsed.failures)
    calls.append(Call(
        episode=episode.id, group=episode.group, role=stage.role, agent=agent, turn=stage.turn,
        stage=index, slot=policy.slot_of(stage.role), prompt_tokens=prompts[row],
        completion_tokens=tokens, logprobs=out.logprobs[row, :length].copy(),
        truncated=truncated, prompt_truncated=cut[row], text=text,
        parsed=dataclasses.replace(parsed, failures=failures)))
  return calls


def _verify(episodes: list[Episode], workflow: Workflow, task: Task,
            problems: Sequence[Problem]) -> None:
  """Final answers, rewards and per-call correctness, from one batched verify call.

  A task scores raw text by extracting its answer, so each distinct (problem,
  answer) is verified once, through the text of the first call whose own
  text gave that answer (the answer string itself if none did).
  """
  texts: dict[tuple[int, str], str] = {}
  roles: dict[tuple[int, str], str] = {}  # who gave each answer first, for error messages
  for episode in episodes:
    episode.final_answer = workflow.final(episode, task)
    for call in episode.calls:
      if call.answer is not None and call.parsed.kind in ("answer", "choice") and (
          call.parsed.kind == "answer" or call.value is None):
        texts.setdefault((episode.group, call.answer), call.text)
        roles.setdefault((episode.group, call.answer), call.role)
  for episode in episodes:
    answers = [episode.final_answer]
    for call in episode.calls:
      answers += [call.answer, *call.parsed.shown]
    for answer in answers:
      if answer is not None:
        texts.setdefault((episode.group, answer), answer)
        roles.setdefault((episode.group, answer), "final answer")
  keys = list(texts)
  try:
    scores = (task.verify_batch([problems[g] for g, _ in keys], list(texts.values()))
              if keys else [])
  except rewards.RewardError as error:
    group, answer = keys[error.index]
    raise rewards.RewardError(
        f"{error} (problem {problems[group].id!r}, answer {answer!r} of the "
        f"{roles[(group, answer)]}); the step's update and checkpoint were not made.",
        error.index) from error
  reward = {key: float(score.reward) for key, score in zip(keys, scores)}
  verdicts = {key: {"status": score.status, "detail": score.detail}
              for key, score in zip(keys, scores)}
  for episode in episodes:
    group = episode.group
    score = lambda answer: 0.0 if answer is None else reward[(group, answer)]
    # Correct is the verifier's status, not a reward threshold: a reward function
    # of your own may give partial credit or penalties (tasks.rewards).
    ok = lambda answer: answer is not None and verdicts[(group, answer)]["status"] == "correct"
    episode.reward = score(episode.final_answer)
    episode.verdict = (verdicts[(group, episode.final_answer)]
                       if episode.final_answer is not None
                       else {"status": "unparsable", "detail": "the workflow gave no final answer"})
    for call in episode.calls:
      parsed = call.parsed
      if parsed.kind == "answer":
        call.correct = ok(call.answer)
      elif parsed.kind == "choice" and (ok(call.answer) or any(map(ok, parsed.shown))):
        call.correct = ok(call.answer)
      elif parsed.kind == "verdict":
        malformed = (any(f in parsed.failures for f in _SCORED_FAILURES)
                     or not getattr(parsed.value, "readable", True))
        call.correct = not malformed and parsed.value.correct == ok(parsed.shown[0])
