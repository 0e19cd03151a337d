"""Records of a rollout: Call (one role call), Episode (one workflow run), per-role metrics."""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # workflows import this module; avoid the cycle at runtime
  from marl_jax.workflows.parsing import Parsed


@dataclasses.dataclass
class Call:
  """One role call: what the policy saw and sampled, and what it meant.

  episode, group: the episode id and its group (problem index, the GRPO group).
  role, agent, turn: who answered (agent: index among the role's parallel
    calls, e.g. generator 0..N-1; turn: eval-opt round, else 0).
  stage: index of the workflow stage (one sampler call) that made it.
  slot: the role's policy slot (PolicyStore.slot_of; hybrid: the per-role slot).
  prompt_tokens: the prompt as fed to the model (after left truncation).
  completion_tokens: sampled ids, the stop token included unless truncated.
  logprobs: float32 [len(completion_tokens)], sampled logprobs.
  truncated: no stop token within the role's max_new_tokens.
  prompt_truncated: the prompt was cut from the left to max_prompt_len.
  text: the decoded completion, stop token excluded.
  parsed: the role output after parsing and fallbacks (workflows.parsing).
  correct: per-role correctness, filled after verification (None where
    undefined): see rollout.run.
  """

  episode: int
  group: int
  role: str
  agent: int
  turn: int
  stage: int
  slot: int
  prompt_tokens: list[int]
  completion_tokens: list[int]
  logprobs: np.ndarray
  truncated: bool
  prompt_truncated: bool
  text: str
  parsed: Parsed
  correct: bool | None = None

  @property
  def answer(self) -> str | None:
    return self.parsed.answer

  @property
  def value(self) -> Any:
    return self.parsed.value

  @property
  def parse_status(self) -> str:
    return self.parsed.status


class MissingCall(ValueError):
  """A stage, or the final-answer rule, read the calls of a role the episode lacks."""

  def __init__(self, role: str, message: str):
    super().__init__(message)
    self.role = role


@dataclasses.dataclass
class Episode:
  """One run of a workflow on one problem; also the state workflows read while it runs.

  id: index in the rollout's list (problem-major: group * group_size + sample).
  group, sample: problem index and sample index within the group.
  problem: the task's problem object; question: its text shown to roles.
  family: the task's prompt family (workflows.prompts.family_of: 'gsm8k',
    'math', 'dapo', 'code', or the tiny world's 'tiny_math' / 'tiny_code').
  calls: every call, in order. final_answer: the workflow's answer.
  reward: the task's verdict on final_answer (0 when there is none).
  verdict: the verifier's status and detail for final_answer (tasks.Score).
  done: the workflow stopped early (e.g. an evaluator said 'correct').
  """

  id: int
  group: int
  sample: int
  problem: Any
  question: str
  family: str
  calls: list[Call] = dataclasses.field(default_factory=list)
  final_answer: str | None = None
  reward: float = 0.0
  done: bool = False
  verdict: dict[str, str] | None = None

  @property
  def correct(self) -> bool:
    """The verifier judged the final answer correct."""
    return bool(self.verdict and self.verdict["status"] == "correct")

  def of(self, role: str, turn: int | None = None) -> list[Call]:
    """The calls of a role (of one turn), in agent order."""
    return [c for c in self.calls if c.role == role and (turn is None or c.turn == turn)]

  def last(self, role: str) -> Call | None:
    calls = self.of(role)
    return calls[-1] if calls else None

  def require(self, role: str) -> list[Call]:
    """The role's calls, which a later stage reads; none is a MissingCall."""
    calls = self.of(role)
    if not calls:
      raise MissingCall(role, f"episode {self.id} has no {role!r} call")
    return calls

  def answers(self, role: str, turn: int | None = None) -> list[str | None]:
    return [c.answer for c in self.of(role, turn)]


def role_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
  """Per-role metrics of a rollout.

  Keys: episodes, reward/mean, accuracy/mean (share of episodes whose final
  answer the verifier judged correct), and per role: calls/<role>,
  completion_tokens/<role>, prompt_tokens/<role>, response_length/<role>
  (mean completion tokens), reward/<role> (mean episode reward over the role's
  calls), accuracy/<role> (mean correctness where defined), parse/<role>/<failure>
  (counts), parse_rate/<role>/<failure> and parse_ok/<role> (shares of the
  role's calls), prompt_truncated/<role> (counts).
  """
  metrics: dict[str, float] = collections.defaultdict(float)
  metrics["episodes"] = len(episodes)
  metrics["reward/mean"] = float(np.mean([e.reward for e in episodes])) if episodes else 0.0
  # The verifier's verdict, which a reward function of your own may not equal.
  metrics["accuracy/mean"] = float(np.mean([e.correct for e in episodes])) if episodes else 0.0
  rewards, accuracy = collections.defaultdict(list), collections.defaultdict(list)
  for episode in episodes:
    for call in episode.calls:
      role = call.role
      metrics[f"calls/{role}"] += 1
      metrics[f"completion_tokens/{role}"] += len(call.completion_tokens)
      metrics[f"prompt_tokens/{role}"] += len(call.prompt_tokens)
      metrics[f"prompt_truncated/{role}"] += call.prompt_truncated
      for failure in call.parsed.failures:
        metrics[f"parse/{role}/{failure}"] += 1
      rewards[role].append(episode.reward)
      if call.correct is not None:
        accuracy[role].append(float(call.correct))
  failed = collections.Counter(c.role for e in episodes for c in e.calls if c.parsed.failures)
  for key in [k for k in metrics if k.startswith("parse/")]:
    _, role, failure = key.split("/", 2)
    metrics[f"parse_rate/{role}/{failure}"] = metrics[key] / metrics[f"calls/{role}"]
  for role, values in rewards.items():
    metrics[f"parse_ok/{role}"] = 1.0 - failed[role] / len(values)
    metrics[f"reward/{role}"] = float(np.mean(values))
    metrics[f"response_length/{role}"] = metrics[f"completion_tokens/{role}"] / len(values)
  for role, values in accuracy.items():
    metrics[f"accuracy/{role}"] = float(np.mean(values))
  return dict(metrics)
