"""A user-defined workflow in under 100 lines: 'second_opinion'.

Two roles answer in parallel, in ONE sampler call (a tuple of Stages): n
'solver' agents, and a 'skeptic' told to solve the problem another way. A
'referee' then reads all n + 1 answers and picks one, which is final. Its
prompts are its own table; a custom parser reuses parsing.choice (so an
unusable pick falls back to the majority vote and is counted).

    import marl_jax.workflows.examples.second_opinion  # registers "second_opinion"
    workflow = workflows.get("second_opinion", n=2)
    store = PolicyStore.create(config, params, workflow.roles, mode="isolated")
    episodes = rollout.run(workflow, store, task, problems, ...)
"""

from __future__ import annotations

from marl_jax import workflows
from marl_jax.tasks import Task
from marl_jax.workflows import parsing
from marl_jax.workflows import prompts as prompts_lib
from marl_jax.workflows.base import Stage, Workflow, parse_answer, positive, show
from marl_jax.workflows.episodes import Call, Episode

PROMPTS = {
    ("second_opinion/solver", "math"): "{problem}",
    ("second_opinion/skeptic", "math"): "{problem}\nSolve it another way.",
    ("second_opinion/referee", "math"):
        "{problem}\nAnswers:\n{candidates}\nReply with the number of the best answer.",
}


def _answers(episode: Episode) -> list[Call]:
  """What the referee chooses among: the solvers' answers, then the skeptic's."""
  return episode.of("solver") + episode.of("skeptic")


def _referee_fields(episode: Episode, agent: int) -> dict[str, str]:
  del agent
  return {"candidates": prompts_lib.numbered([show(c, "answer") for c in _answers(episode)])}


def _parse_referee(text: str, episode: Episode, agent: int, task: Task) -> parsing.Parsed:
  del agent
  answers = [c.answer for c in _answers(episode)]
  return parsing.choice(text, answers, task.extract, same=task.same_answer)


def second_opinion(n: int = 2, prompts: prompts_lib.PromptTable | None = None) -> Workflow:
  """n solvers and a skeptic in parallel, then a referee's pick.

  Args:
    n: number of solver agents.
    prompts: replacements for PROMPTS entries (or entries for another family).
  """
  n = positive("n", n)
  return Workflow(
      name="second_opinion", roles=("solver", "skeptic", "referee"),
      stages=(
          (Stage("solver", parse_answer, agents=n), Stage("skeptic", parse_answer)),
          Stage("referee", _parse_referee, fields=_referee_fields),
      ),
      # require: a clear error (workflows.MissingCall) if the referee's stage never ran.
      final=lambda episode, task: episode.require("referee")[-1].answer,
      prompts={**PROMPTS, **(prompts or {})},
      options={"n": n})


# Importing this module makes the workflow selectable by name, from Python and
# from the command line (configs/default.py:workflow=second_opinion,
# import=marl_jax.workflows.examples.second_opinion; agents=N sets n).
workflows.register("second_opinion", second_opinion, agents_option="n")
