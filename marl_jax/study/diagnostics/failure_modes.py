"""Failure modes read from the sampled rollouts saved during training.

Each saved step (<workdir>/rollouts/step_<N>.jsonl, one episode a line with
its calls' role, agent, turn, text, answer and parse status) gives one rate
per indicator. Over the first and the last `window` saved steps these rates
are averaged (`early`, `late`); an indicator is flagged when `late` crosses
its threshold, and it `emerged` when `early` had not (a collapse during
training rather than a model that never got there).

  parse_failure/<role>    share of the role's calls whose parse status is not
                          'ok', truncation (no stop token) included (format /
                          parse collapse); flag >= parse
  length_collapse/<role>  mean response tokens late / early; flag when the
                          ratio is <= length_ratio or late <= min_tokens
  voter_collapse/<role>   share of episodes whose parallel agents of the role
                          (same turn, >= 2 agents) give one identical answer;
                          flag >= voter (voting degenerates to one voice)
  rubber_stamp/<role>     share of verdicts that let the answer through: 'correct',
                          and an unreadable one when the run's workflow stops on
                          it (eval_opt's unreadable_verdict: 'stop', or 'auto'
                          in the tiny world); flag >= rubber_stamp. detail:
                          approvals of wrong answers
  degenerate_plan/<role>  share of plans with fewer distinct strategies than
                          workers (duplicates or fallback padding); flag >= plan
  constant_plan/<role>    share of the most common plan across problems; flag >= plan
  fixed_index/<role>      share of the most common picked candidate among the
                          informative picks (candidates not all identical; an
                          answer-style pick counts only when it names exactly
                          one candidate); flag >= fixed_index with >= min_count picks
Which role is which kind is by name (CHOICE_OF, VERDICT_ROLES, PLAN_ROLES).
Replies are re-read with the parsers of the prompts the run used
(`run_style`): the tiny world's short replies ('correct', '2') with the tiny
ones, every other run's with the instruct ones.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import math
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from marl_jax.trainer.metrics import read_jsonl
from marl_jax.workflows import parsing
from marl_jax.workflows import prompts

CHOICE_OF = {"aggregator": "generator", "synthesizer": "worker"}  # chooser -> candidates' role
VERDICT_ROLES = ("evaluator",)
PLAN_ROLES = ("orchestrator",)


@dataclasses.dataclass(frozen=True)
class FailureConfig:
  """Thresholds of the indicators (module docstring)."""

  window: int = 2
  parse: float = 0.8
  length_ratio: float = 0.3
  min_tokens: float = 1.0
  voter: float = 0.9
  rubber_stamp: float = 0.95
  plan: float = 0.9
  fixed_index: float = 0.9
  min_count: int = 5


@dataclasses.dataclass(frozen=True)
class FailureMode:
  """One indicator of one role: its early and late value and the verdict."""

  name: str
  role: str
  early: float
  late: float
  flagged: bool
  emerged: bool
  detail: str = ""

  @property
  def key(self) -> str:
    return f"{self.name}/{self.role}"


def rollout_steps(workdir: str) -> list[tuple[int, str]]:
  """(step, path) of the saved rollouts, in step order."""
  found = []
  for path in glob.glob(os.path.join(workdir, "rollouts", "step_*.jsonl")):
    match = re.fullmatch(r"step_(\d+)\.jsonl", os.path.basename(path))
    if match:
      found.append((int(match.group(1)), path))
  return sorted(found)


def _mean(values: Iterable[float]) -> float:
  values = list(values)
  return float(np.mean(values)) if values else math.nan


def run_style(workdir: str) -> tuple[str, bool]:
  """(parsers' style, whether an unreadable verdict lets the answer through) of a run.

  The style is 'tiny' for the tiny world's tasks (prompts.TINY_TASKS), else
  'instruct': reading a tiny reply with the instruct parsers would misread its
  verdicts and picks. An unreadable verdict passes when eval_opt's
  unreadable_verdict is 'stop', or 'auto' in the tiny world (workflows.eval_opt).
  """
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return "instruct", False
  style = "tiny" if config.get("task", {}).get("name") in prompts.TINY_TASKS else "instruct"
  options = config.get("workflow", {}).get("options") or {}
  on_unreadable = options.get("unreadable_verdict", "auto")
  return style, on_unreadable == "stop" or (on_unreadable == "auto" and style == "tiny")


def _chosen_index(call: dict, candidates: Sequence[str | None], style: str) -> int | None:
  """The candidate a chooser picked, when that is unambiguous."""
  parsed = parsing.choice(call.get("text") or "", list(candidates), lambda _: None, style=style)
  if "bad_choice" not in parsed.failures:
    return parsed.value
  answer = call.get("answer")
  matches = [i for i, c in enumerate(candidates) if answer is not None and c == answer]
  return matches[0] if len(matches) == 1 else None


def step_rates(episodes: Sequence[dict], style: str = "instruct",
               unreadable_passes: bool = False) -> dict[str, Any]:
  """Raw per-indicator values of one saved step: {'<indicator>/<role>': value or list}.

  style, unreadable_passes: how the run read its verdicts (run_style)."""
  out: dict[str, Any] = {}
  calls = collections.defaultdict(list)
  for episode in episodes:
    for call in episode.get("calls", []):
      calls[call["role"]].append(call)
  for role, role_calls in calls.items():
    out[f"parse_failure/{role}"] = _mean(c.get("parse") != "ok" for c in role_calls)
    out[f"length_collapse/{role}"] = _mean(c.get("tokens", 0) for c in role_calls)
  identical, stamps, wrong_ok, plans, picks = (collections.defaultdict(list) for _ in range(5))
  for episode in episodes:
    by_turn = collections.defaultdict(list)
    for call in episode.get("calls", []):
      by_turn[(call["role"], call.get("turn", 0))].append(call)
      role = call["role"]
      if role in VERDICT_ROLES:
        said = parsing.verdict(call.get("text") or "", None, style).value
        approve = said.correct or (unreadable_passes and not said.readable)
        stamps[role].append(float(approve))
        if call.get("correct") is not None:  # correct: the verdict matches the truth
          if bool(call["correct"]) != approve:  # so the judged answer was wrong
            wrong_ok[role].append(float(approve))
      if role in PLAN_ROLES:
        workers = sum(1 for c in episode["calls"] if c["role"] == "worker") or 1
        plan = parsing.strategies(call.get("text") or "", workers, style).value
        plans[role].append((tuple(s.lower() for s in plan), episode.get("group")))
      if role in CHOICE_OF:
        source = [c for c in episode["calls"] if c["role"] == CHOICE_OF[role]]
        if source:
          turn = source[-1].get("turn", 0)
          candidates = [c.get("answer") for c in source if c.get("turn", 0) == turn]
          if len(set(candidates)) > 1:
            index = _chosen_index(call, candidates, style)
            if index is not None:
              picks[role].append(index)
    for (role, _), group in by_turn.items():
      if len(group) >= 2 and role not in CHOICE_OF and role not in PLAN_ROLES:
        answers = [c.get("answer") for c in group]
        same = None not in answers and len(set(answers)) == 1
        identical[role].append(float(same))
  for role, values in identical.items():
    out[f"voter_collapse/{role}"] = _mean(values)
  for role, values in stamps.items():
    out[f"rubber_stamp/{role}"] = _mean(values)
    out[f"wrong_approved/{role}"] = _mean(wrong_ok[role])
  for role, values in plans.items():
    out[f"degenerate_plan/{role}"] = _mean(
        float(len(set(p)) < len(p) or parsing.FALLBACK_STRATEGY.lower() in p) for p, _ in values)
    groups = {g for _, g in values}
    common = collections.Counter(p for p, _ in values).most_common(1)[0][1]
    out[f"constant_plan/{role}"] = common / len(values) if len(groups) > 1 else math.nan
  for role, values in picks.items():
    out[f"fixed_index/{role}"] = values  # pooled over the window, not averaged per step
  return out


def _pool(steps: Sequence[dict], key: str) -> Any:
  """Lists (picks) are concatenated over the steps; rates are averaged."""
  values = [s[key] for s in steps if key in s]
  if key.startswith("fixed_index/"):
    return [v for vs in values for v in vs]
  return _mean(v for v in values if not math.isnan(v))


def _fixed_index(picks: list[int], config: FailureConfig) -> tuple[float, str]:
  if len(picks) < config.min_count:
    return math.nan, f"{len(picks)} informative picks"
  index, count = collections.Counter(picks).most_common(1)[0]
  return count / len(picks), f"candidate {index + 1} in {count}/{len(picks)} picks"


def analyze(workdir: str, config: FailureConfig = FailureConfig()) -> list[FailureMode]:
  """Every indicator of every role found in the run's saved rollouts (none: [])."""
  saved = rollout_steps(workdir)
  if not saved:
    return []
  style, passes = run_style(workdir)
  steps = [step_rates(read_jsonl(path), style, passes) for _, path in saved]
  early, late = steps[:config.window], steps[-config.window:]
  keys = sorted({k for s in steps for k in s if not k.startswith("wrong_approved/")})
  modes = []
  for key in keys:
    name, role = key.split("/", 1)
    a, b, detail = _pool(early, key), _pool(late, key), ""
    if name == "fixed_index":
      (a, _), (b, detail) = _fixed_index(a, config), _fixed_index(b, config)
    if name == "length_collapse":
      flag = lambda e, l: l <= config.min_tokens or (e > 0 and l / e <= config.length_ratio)
      flagged = not math.isnan(b) and flag(a, b)
      emerged = flagged and a > config.min_tokens
      detail = f"{a:.1f} -> {b:.1f} tokens"
    else:
      threshold = {"parse_failure": config.parse, "voter_collapse": config.voter,
                   "rubber_stamp": config.rubber_stamp, "degenerate_plan": config.plan,
                   "constant_plan": config.plan, "fixed_index": config.fixed_index}[name]
      flagged = not math.isnan(b) and b >= threshold
      emerged = flagged and not (not math.isnan(a) and a >= threshold)
    if name == "rubber_stamp":
      wrong = _pool(late, f"wrong_approved/{role}")
      detail = f"approves {wrong:.0%} of wrong answers" if not math.isnan(wrong) else ""
    modes.append(FailureMode(name, role, a, b, flagged, emerged, detail))
  return modes


def flagged(modes: Sequence[FailureMode]) -> list[FailureMode]:
  return [m for m in modes if m.flagged]
