"""Scripted demonstrations of every role of a workflow, produced by `rollout.run` itself.

A demonstrator plays every role of a workflow on real problems with scripted,
deliberately imperfect outputs. It runs through `rollout.run` like any policy,
so a demonstration's prompt and completion tokens are built by exactly the
code that builds them at RL time (workflow prompt table, chat template, left
truncation to max_prompt_len, the stop token, max_new_tokens) and every output
is read back by the workflow's own parser.

    calls = demonstrations(workflows.get("voting"), task, problems, tokenizer,
                           Noise(), seed=0, max_prompt_len=192, max_new_tokens=24)
    # -> [Demonstration(call, trained, correct)], one per role call

What a role is asked for is read from the stage's own parser (its `Parsed.kind`
and `shown` answers), not from role names, so any workflow built from the
standard parsers gets demonstrations:
  answer   the correct answer, or a near miss (math: off by 1, 2 or 10; code:
           the program shifted by a constant), never an accidental hit
  choice   the number of a correct candidate; with none correct, the correct
           answer where the parser accepts an own answer, else any candidate
  verdict  'correct', or 'incorrect: too high' / 'incorrect: too low'
  plan     m short strategy names, one per line
How the demonstrator errs is set by `Noise`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import jax
import numpy as np

from marl_jax.generate.sampler import SamplingParams
from marl_jax.policies.store import ScriptedPolicy
from marl_jax.tasks import Problem, Score, Task
from marl_jax.workflows import Stage, Workflow
from marl_jax.workflows import rollout
from marl_jax.workflows.episodes import Call, Episode

# Strategy names are short: every role shares rollout.max_new_tokens (24 by
# default), and three of them plus newlines must fit.
STRATEGIES = {
    "math": ("split", "carry", "undo", "round", "count", "order", "tens", "ones"),
    "code": ("diff", "ratio", "scale", "shift", "test", "guess", "steps", "table"),
}
_MATH_MISSES = (1, 2, 10)
_CODE_SHIFTS = (1, 2)
_CODE_HEADER = "def f(x): return "
_TRAILING_TERM = re.compile(r"([+-])(\d+)$")
_SHOWN = re.compile(r"^f\((-?\d+)\)=(-?\d+)$", re.M)  # tiny_code's prompt lines
_TESTED = re.compile(r"^assert f\((-?\d+)\) == (-?\d+)$", re.M)  # ... and its tests


@dataclasses.dataclass(frozen=True)
class Noise:
  """How often the demonstrator errs (each a probability in [0, 1]).

  Attributes:
    wrong_answer: share of the trained answer demonstrations (generator,
      worker, refinement, a synthesizer's own answer) that are wrong.
    candidate_wrong: share of wrong answers among those a later role reads
      (voting's generators, workers, eval-opt's answers), so aggregators,
      synthesizers and evaluators see both kinds. Wrong answers beyond the
      `wrong_answer` share are shown to the later roles but left out of the
      loss. Workflows with a single role use `wrong_answer` alone.
    wrong_pick: share of picks (aggregator, synthesizer) made uniformly at
      random among the candidates instead of a correct one.
    rubber_stamp: share of verdicts 'correct' on a wrong answer.
    false_alarm: share of verdicts 'incorrect' on a correct answer.
  """

  wrong_answer: float = 0.15
  candidate_wrong: float = 0.5
  wrong_pick: float = 0.2
  rubber_stamp: float = 0.25
  false_alarm: float = 0.1

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"config.tiny.noise.{field.name} must be in [0, 1], got {value!r}.")

  def train_wrong(self, multi_role: bool) -> tuple[float, float]:
    """(P(an answer is wrong), P(a wrong answer is trained on)) for an answer call."""
    if not multi_role or self.candidate_wrong <= self.wrong_answer:
      return self.wrong_answer, 1.0
    if self.wrong_answer >= 1.0:
      return self.candidate_wrong, 1.0
    # q w / (q w + 1 - w) = wrong_answer: the trained calls keep the wrong_answer share.
    w, a = self.candidate_wrong, self.wrong_answer
    return w, a * (1.0 - w) / (w * (1.0 - a))


@dataclasses.dataclass(frozen=True)
class Demonstration:
  """One scripted role call, exactly as rollout.run recorded it.

  call: the Call (prompt_tokens, completion_tokens with the stop token, parsed).
  trained: whether the call belongs in the warm-start loss.
  correct: for answer calls, whether the demonstrator meant it to be right;
    for verdicts, whether the verdict matches the truth; for picks, whether
    the picked answer is right; None for plans.
  """

  call: Call
  trained: bool
  correct: bool | None


def _point_slope(problem: Problem) -> str | None:
  """`(x-x0)*a+y0` through the first shown example, if every known f(x) = y fits one line.

  The shown and tested pairs must all lie on one line with an integer slope
  a >= 1 (else None). The form asks the model to compute the slope and copy
  x0 and y0 from the prompt's first line (a = 1 needs no computation), one
  form per function instead of many equivalent ones.
  """
  shown = [(int(x), int(y)) for x, y in _SHOWN.findall(problem.prompt)]
  pairs = shown + [(int(x), int(y))
                   for x, y in _TESTED.findall(getattr(problem.reference, "tests", ""))]
  if len({x for x, _ in pairs}) < 2:
    return None
  (x0, y0), (x1, y1) = shown[0], next(p for p in pairs if p[0] != shown[0][0])
  if (y1 - y0) % (x1 - x0):
    return None
  a = (y1 - y0) // (x1 - x0)
  if a < 1 or any(y != a * (x - x0) + y0 for x, y in pairs):
    return None
  line = "x" if x0 == 0 else (f"x-{x0}" if a == 1 else f"(x-{x0})")
  line += "" if a == 1 else f"*{a}"
  return line + ("" if y0 == 0 else f"{'+' if y0 > 0 else '-'}{abs(y0)}")


def right_answer(task: Task, problem: Problem) -> str:
  """The answer text of a correct demonstration (code: point-slope form, see below)."""
  if task.kind == "math":
    return str(problem.reference).strip()
  solution = getattr(problem.reference, "solution", "")
  if task.kind != "code" or not solution.startswith(_CODE_HEADER):
    raise ValueError(f"tiny demonstrations need math problems with a reference answer or "
                     f"one-line code problems whose reference.solution starts with "
                     f"{_CODE_HEADER!r}; task {task.name!r} problem {problem.id!r} has neither.")
  return _point_slope(problem) or solution[len(_CODE_HEADER):].strip()


def wrong_answer(task: Task, problem: Problem, rng: np.random.Generator) -> tuple[str, int]:
  """(a near-miss answer text, the sign of its error): never equal to the right answer.

  Math: the integer reference off by 1, 2 or 10. Code: the program plus or
  minus a constant (its last +/- constant changed, else a term appended),
  which differs from the reference on every input.
  """
  right = right_answer(task, problem)
  if task.kind == "math":
    try:
      value = int(right)
    except ValueError:
      raise ValueError(f"tiny math demonstrations need integer answers; problem {problem.id!r} "
                       f"has reference {right!r}.") from None
    delta = int(rng.choice(_MATH_MISSES)) * int(rng.choice((-1, 1)))
    return str(value + delta), delta
  shift = int(rng.choice(_CODE_SHIFTS)) * int(rng.choice((-1, 1)))
  term = _TRAILING_TERM.search(right)
  if term is None:
    return f"{right}{'+' if shift > 0 else '-'}{abs(shift)}", shift
  head = right[:term.start()]
  value = (1 if term.group(1) == "+" else -1) * int(term.group(2)) + shift
  if value == 0:
    return (head, shift) if head else (f"{right}{'+' if shift > 0 else '-'}{abs(shift)}", shift)
  return f"{head}{'+' if value > 0 else '-'}{abs(value)}", shift


class _RecordingWorkflow(Workflow):
  """The workflow, unchanged, noting which (stage, episode, agent) each prompt is for.

  rollout.run renders a stage's prompts row by row and then makes one
  sampler call with them in that order; the demonstrator reads the rows back
  in the same order (and checks that the texts agree).
  """

  def __init__(self, workflow: Workflow, pending: list):
    super().__init__(**{f.name: getattr(workflow, f.name) for f in dataclasses.fields(workflow)})
    object.__setattr__(self, "_pending", pending)

  def prompt(self, stage: Stage, episode: Episode, agent: int) -> str:
    text = super().prompt(stage, episode, agent)
    self._pending.append((stage, episode, agent, text))
    return text


class _KnownAnswers:
  """The task, except that verification reads the demonstrator's own labels.

  Every answer in a demonstration was written by the demonstrator, which
  knows whether it is right; this spares the code sandbox thousands of runs.
  Answers it did not write go to the real verifier.
  """

  def __init__(self, task: Task, labels: dict[tuple[str, str], bool]):
    self._task, self._labels = task, labels

  def __getattr__(self, name: str) -> Any:
    return getattr(self._task, name)

  def verify_batch(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[Score]:
    out = []
    for problem, text in zip(problems, texts):
      known = self._labels.get((problem.id, self._task.extract(text)))
      if known is None:
        out.append(self._task.verify(problem, text))
      else:
        out.append(Score(float(known), "correct" if known else "wrong", "demonstration"))
    return out


class Demonstrator:
  """Scripts every role call of one rollout; see the module doc for what it says."""

  def __init__(self, task: Task, noise: Noise, rng: np.random.Generator, multi_role: bool):
    self.task, self.noise, self.rng, self.multi_role = task, noise, rng, multi_role
    self.labels: dict[tuple[str, str], bool] = {}  # (problem id, extracted answer) -> right
    self.signs: dict[tuple[str, str], int] = {}  # ... -> sign of its error (0: right)
    self.notes: dict[tuple[int, str, int, int], tuple[bool, bool | None]] = {}
    self.pending: list = []

  def respond(self, role: str, prompt_text: str) -> str:
    stage, episode, agent, rendered = self.pending.pop(0)
    if stage.role != role or not rendered.endswith(prompt_text):
      raise RuntimeError(
          "rollout.run no longer renders a stage's prompts in the order it samples them "
          f"(expected role {stage.role!r}, got {role!r}); marl_jax.tiny.demonstrations "
          "relies on that order to script role calls.")
    text, trained, correct = self._script(stage, episode, agent)
    self.notes[(episode.id, role, agent, stage.turn)] = (trained, correct)
    return text

  def _answer(self, problem: Problem, wrong: bool) -> str:
    """A right or near-miss answer text, labelled for verification and feedback."""
    text, sign = (wrong_answer(self.task, problem, self.rng) if wrong
                  else (right_answer(self.task, problem), 0))
    key = (problem.id, self.task.extract(text))
    self.labels[key], self.signs[key] = not wrong, sign
    return text

  def _right(self, problem: Problem, answer: str | None) -> bool:
    return answer is not None and self.labels.get((problem.id, answer), False)

  def _script(self, stage: Stage, episode: Episode, agent: int) -> tuple[str, bool, bool | None]:
    """(completion text, trained, correct) for one row."""
    problem, noise, rng = episode.problem, self.noise, self.rng
    probe = stage.parse("", episode, agent, self.task)  # what the role reads and must say
    if probe.kind == "answer":
      p_wrong, p_train = noise.train_wrong(self.multi_role)
      wrong = rng.random() < p_wrong
      return self._answer(problem, wrong), not wrong or rng.random() < p_train, not wrong
    if probe.kind == "plan":
      names = STRATEGIES[self.task.kind]
      picks = rng.choice(len(names), size=len(probe.value), replace=len(probe.value) > len(names))
      return "\n".join(names[int(i)] for i in picks), True, None
    if probe.kind == "verdict":
      judged = probe.shown[0]
      right = self._right(problem, judged)
      says_right = rng.random() >= noise.false_alarm if right else rng.random() < noise.rubber_stamp
      if says_right:
        return "correct", True, right
      return f"incorrect: {self._direction(problem, judged)}", True, not right
    if probe.kind == "choice":
      return self._choice(stage, episode, agent, probe.shown)
    raise ValueError(f"tiny demonstrations cannot script role {stage.role!r}: its parser "
                     f"returns kind {probe.kind!r}; scriptable kinds are answer, choice, "
                     "verdict and plan.")

  def _direction(self, problem: Problem, judged: str | None) -> str:
    """Feedback: the judged answer is too high or too low (a coin flip for a right one)."""
    sign = self.signs.get((problem.id, judged), 0) if judged is not None else 0
    if sign == 0:
      sign = int(self.rng.choice((-1, 1)))
    return "too high" if sign > 0 else "too low"

  def _choice(self, stage, episode, agent, shown) -> tuple[str, bool, bool | None]:
    problem, rng = episode.problem, self.rng
    right = [i for i, answer in enumerate(shown) if self._right(problem, answer)]
    if right and rng.random() >= self.noise.wrong_pick:
      return str(int(rng.choice(right)) + 1), True, True
    if not right and rng.random() >= self.noise.wrong_pick:
      own_wrong = rng.random() < self.noise.wrong_answer
      own = self._answer(problem, own_wrong)
      if stage.parse(own, episode, agent, self.task).value is None:  # own answers accepted
        return own, True, not own_wrong
    pick = int(rng.integers(len(shown)))
    return str(pick + 1), True, self._right(problem, shown[pick])


def demonstrations(workflow: Workflow, task: Task, problems: Sequence[Problem], tokenizer: Any,
                   noise: Noise, seed: int | Sequence[int], *, max_prompt_len: int,
                   max_new_tokens: int) -> list[Demonstration]:
  """One scripted episode of `workflow` per problem; every role call, in episode order.

  Deterministic in `seed`. The episodes run through rollout.run with the same
  max_prompt_len and max_new_tokens as RL rollouts, so prompts and
  completions are token for token what the policy will see and produce.
  """
  rng = np.random.default_rng(seed)
  demonstrator = Demonstrator(task, noise, rng, multi_role=len(workflow.roles) > 1)
  recording = _RecordingWorkflow(workflow, demonstrator.pending)
  policy = ScriptedPolicy(demonstrator.respond, tokenizer, workflow.roles)
  episodes = rollout.run(
      recording, policy, _KnownAnswers(task, demonstrator.labels), list(problems), 1,
      jax.random.PRNGKey(0), SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens),
      tokenizer, max_prompt_len=max_prompt_len)
  if demonstrator.pending:
    raise RuntimeError(f"{len(demonstrator.pending)} rendered prompts were never sampled; "
                       "rollout.run's stage order changed (see _RecordingWorkflow).")
  out = []
  for episode in episodes:
    for call in episode.calls:
      trained, correct = demonstrator.notes[(episode.id, call.role, call.agent, call.turn)]
      out.append(Demonstration(call, trained, correct))
  return out
