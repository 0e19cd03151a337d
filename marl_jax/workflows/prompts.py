"""Prompt templates per (workflow/template, task family); overridable per workflow.

Templates are `str.format` strings. Fields: {problem} (the task's problem
text, which carries its own answer-format instruction), and per template
{candidates} (numbered '1) ...' lines), {answer}, {feedback}, {m},
{strategy}. They are short on purpose: tiny models have 512 positions. Roles
that answer the problem themselves (worker, refine) get it last, so their
answer follows the problem exactly as the generator's does: a tiny model's
skill then transfers to them instead of being relearned per role.
Each template becomes one user message of the tokenizer's chat template.
"""

from __future__ import annotations

from typing import Mapping, Sequence

FAMILIES = ("math", "code")
PromptTable = Mapping[tuple[str, str], str]

_SOLVE = "{problem}"
_MATH = {
    "generator": _SOLVE,
    "refine": "Your answer:\n{answer}\nFeedback: {feedback}\nSolve it again.\n{problem}",
    "aggregator": "{problem}\nAnswers:\n{candidates}\nReply with the number of the best answer.",
    "evaluator": "{problem}\nAnswer:\n{answer}\nReply correct, or incorrect: <why>.",
    "orchestrator": "{problem}\nGive {m} different strategies, one per line.",
    "worker": "Strategy: {strategy}\n{problem}",
    "synthesizer": ("{problem}\nSolutions:\n{candidates}\n"
                    "Reply with the number of the best solution, or your own answer."),
}
_CODE = {
    "generator": _SOLVE,
    "refine": "Your program:\n{answer}\nFeedback: {feedback}\nWrite it again.\n{problem}",
    "aggregator": "{problem}\nPrograms:\n{candidates}\nReply with the number of the best program.",
    "evaluator": "{problem}\nProgram:\n{answer}\nReply correct, or incorrect: <why>.",
    "orchestrator": "{problem}\nGive {m} different approaches, one per line.",
    "worker": "Approach: {strategy}\n{problem}",
    "synthesizer": ("{problem}\nPrograms:\n{candidates}\n"
                    "Reply with the number of the best program, or your own program."),
}
_USES = {
    "single": ("generator",),
    "voting": ("generator", "aggregator"),
    "majority_vote": ("generator",),
    "eval_opt": ("generator", "refine", "evaluator"),
    "orch_workers": ("orchestrator", "worker", "synthesizer"),
}

DEFAULT_PROMPTS: dict[tuple[str, str], str] = {
    (f"{workflow}/{template}", family): table[template]
    for family, table in (("math", _MATH), ("code", _CODE))
    for workflow, templates in _USES.items()
    for template in templates
}


def table(workflow: str, overrides: PromptTable | None = None) -> dict[tuple[str, str], str]:
  """The defaults for `workflow` with `overrides` applied (keys checked)."""
  prompts = {k: v for k, v in DEFAULT_PROMPTS.items() if k[0].startswith(f"{workflow}/")}
  for key, template in (overrides or {}).items():
    if (not isinstance(key, tuple) or len(key) != 2 or not str(key[0]).startswith(f"{workflow}/")
        or key[1] not in FAMILIES):
      raise ValueError(
          f"prompt override key {key!r} must be ('{workflow}/<template>', family) with family "
          f"in {FAMILIES}; defaults: {sorted(prompts) or 'none'}.")
    prompts[key] = template
  return prompts


def render(prompts: PromptTable, workflow: str, template: str, family: str,
           fields: Mapping[str, object]) -> str:
  """The filled-in template for (workflow/template, family), with clear errors."""
  key = (f"{workflow}/{template}", family)
  if key not in prompts:
    raise ValueError(f"no prompt for {key}; the workflow's prompt table has {sorted(prompts)}. "
                     "Add it with workflows.get(..., prompts={key: '...'}).")
  try:
    return prompts[key].format(**fields)
  except KeyError as err:
    raise ValueError(f"prompt {key} uses field {err} but the stage provides only "
                     f"{sorted(fields)}.") from None


def numbered(items: Sequence[str]) -> str:
  """'1) a\\n2) b' -- how candidates are shown to aggregators and synthesizers."""
  return "\n".join(f"{i + 1}) {item}" for i, item in enumerate(items))
