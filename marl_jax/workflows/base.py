"""A workflow is a small declarative program: roles, stages of role calls, a final answer.

Stages run in order, in lockstep over every episode of a rollout; all calls of
one stage (across the whole batch) form one sampler call. A stage entry may be
a tuple of Stages: they run together, in the same sampler call, and see the
episode as it was before the tuple (parallel roles). An episode takes part in
a stage when `when(episode)` holds and it is not done; `stop(episode)` after
the stage ends it early. `final(episode)` gives the answer that is verified.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from marl_jax.tasks import Task
from marl_jax.workflows import parsing, prompts as prompts_lib
from marl_jax.workflows.episodes import Episode, MissingCall

Parse = Callable[[str, Episode, int, Task], parsing.Parsed]
VIEWS = ("full", "answer")


def _no_fields(episode: Episode, agent: int) -> dict[str, Any]:
  del episode, agent
  return {}


@dataclasses.dataclass(frozen=True)
class Stage:
  """The calls of one role in one step.

  Attributes:
    role: the role that answers (one of the workflow's roles).
    parse: (text, episode, agent, task) -> Parsed, using the task's `extract`
      and `same_answer`. See parse_answer / parse_choice / parse_verdict /
      parse_plan / parse_text below.
    fields: (episode, agent) -> template fields; {problem} is always there.
    template: prompt template name (default: the role), looked up as
      ('<workflow>/<template>', family) in the workflow's prompt table.
    agents: parallel calls per episode (agent indices 0..agents-1).
    turn: recorded on the calls (eval-opt rounds).
    when: (episode) -> bool; default: every episode that is not done.
    stop: (episode) -> bool, after the stage: the episode is done.
  """

  role: str
  parse: Parse
  fields: Callable[[Episode, int], Mapping[str, Any]] = _no_fields
  template: str | None = None
  agents: int = 1
  turn: int = 0
  when: Callable[[Episode], bool] | None = None
  stop: Callable[[Episode], bool] | None = None

  def __post_init__(self):
    if self.agents < 1:
      raise ValueError(f"Stage({self.role!r}).agents must be >= 1, got {self.agents}.")


@dataclasses.dataclass(frozen=True)
class Workflow:
  """Roles, stages and the final-answer rule, plus the prompt table and options.

  Attributes:
    name: registry name; prompt keys start with '<name>/'.
    roles: the roles, in PolicyStore slot order.
    stages: Stage or tuple of Stages (run together), in order.
    final: (episode, task) -> the final answer (None: no answer, reward 0).
    prompts: {('<name>/<template>', family): template}.
    options: the options the workflow was built with (for logs).
  """

  name: str
  roles: tuple[str, ...]
  stages: tuple[Stage | tuple[Stage, ...], ...]
  final: Callable[[Episode, Task], str | None]
  prompts: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    object.__setattr__(self, "roles", tuple(self.roles))
    for group in self.groups:
      for stage in group:
        if stage.role not in self.roles:
          raise ValueError(f"workflow {self.name!r}: stage role {stage.role!r} is not one of "
                           f"its roles {self.roles}.")

  @property
  def groups(self) -> tuple[tuple[Stage, ...], ...]:
    """The stages as sampler-call groups."""
    return tuple(s if isinstance(s, tuple) else (s,) for s in self.stages)

  @property
  def calls_per_role(self) -> dict[str, int]:
    """Each role's calls in an episode that runs every stage (its stages' agents
    summed): what each role asks of a rollout's decode slots."""
    out = dict.fromkeys(self.roles, 0)
    for group in self.groups:
      for stage in group:
        out[stage.role] += stage.agents
    return out

  def prompt(self, stage: Stage, episode: Episode, agent: int) -> str:
    try:
      fields = {"problem": episode.question, **stage.fields(episode, agent)}
    except MissingCall as e:
      raise MissingCall(e.role, self.missing(episode, f"the {stage.role!r} stage", e.role)) \
          from None
    return prompts_lib.render(self.prompts, self.name, stage.template or stage.role,
                              episode.family, fields)


  def missing(self, episode: Episode, reader: str, role: str) -> str:
    """The error of a `reader` that needs `role`'s calls, which `episode` lacks."""
    return (f"workflow {self.name!r}, episode {episode.id}: {reader} reads the {role!r} calls, "
            f"which this episode does not have. Put a stage of {role!r} before it, and give "
            f"that stage no narrower `when` than the stage that reads it.")


# --- building blocks shared by the workflows -------------------------------


def check_view(view: str) -> str:
  if view not in VIEWS:
    raise ValueError(f"workflow option view={view!r} is unknown; use one of {VIEWS}.")
  return view


def show(call: Any, view: str) -> str:
  """How a call's output is shown to a later role: its text, or just its answer."""
  if view == "answer":
    return "(no answer)" if call.answer is None else call.answer
  return call.text.strip() or "(empty)"


def candidates(episode: Episode, role: str, view: str) -> str:
  """The role's latest-turn outputs, numbered from 1."""
  calls = episode.require(role)
  turn = calls[-1].turn
  return prompts_lib.numbered([show(c, view) for c in calls if c.turn == turn], episode.family)


def style(episode: Episode) -> str:
  """How the episode's role outputs are read: its family's prompt style (prompts.style_of)."""
  return prompts_lib.style_of(episode.family)


def parse_answer(text: str, episode: Episode, agent: int, task: Task) -> parsing.Parsed:
  del episode, agent
  return parsing.answer(text, task.extract)


def parse_choice(of_role: str, allow_own_answer: bool = False) -> Parse:
  """Parser of a pick among the latest-turn answers of `of_role`."""

  def parse(text, episode, agent, task):
    del agent
    calls = episode.require(of_role)
    latest = [c.answer for c in calls if c.turn == calls[-1].turn]
    return parsing.choice(text, latest, task.extract, allow_own_answer, task.same_answer,
                          style=style(episode))

  return parse


def parse_verdict(of_role: str) -> Parse:
  """Parser of a verdict on the last answer of `of_role`."""

  def parse(text, episode, agent, task):
    del agent
    return parsing.verdict(text, episode.require(of_role)[-1].answer, style=style(episode),
                           same=task.same_answer)

  return parse


def parse_plan(m: int) -> Parse:
  def parse(text, episode, agent, task):
    del agent, task
    return parsing.strategies(text, m, style=style(episode))

  return parse


def parse_text(text: str, episode: Episode, agent: int, task: Task) -> parsing.Parsed:
  del episode, agent, task
  return parsing.text_output(text)


def majority_answer(episode: Episode, role: str, task: Task) -> str | None:
  """The most frequent answer (task.same_answer) of the role's calls; ties: earliest."""
  answers = episode.answers(role)
  index = parsing.majority(answers, task.same_answer)
  return None if index is None else answers[index]


def positive(name: str, value: int) -> int:
  if int(value) < 1:
    raise ValueError(f"workflow option {name} must be >= 1, got {value}.")
  return int(value)
