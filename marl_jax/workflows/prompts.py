"""Prompt templates per (workflow/template, task family); overridable per workflow.

Two prompt styles, chosen by the task's family (`family_of`):

  tiny      the tiny world's tasks (arithmetic, tiny_code; families
            'tiny_math', 'tiny_code'): short prompts that 512-position
            character models can read and answer ('5', '2', 'correct',
            'incorrect: too high'). The tiny bases are warm-started on exactly
            these prompts, so they do not change.
  instruct  every other task (families 'gsm8k', 'math', 'dapo', 'code'):
            each role is asked for a final line in a stated format that
            workflows.parsing reads first:
              answers      \\boxed{...} (gsm8k, math), 'Answer: ...' (dapo),
                           a ```python block (code)   -- the {answer_format} field
              evaluator    'VERDICT: correct' or 'VERDICT: incorrect'
              aggregator   'CHOICE: k'
              synthesizer  'CHOICE: k', or its own final answer
              orchestrator exactly {m} numbered lines '1. ...'

Lookup: a template is looked up along the family's chain, most specific
first: ('voting/aggregator', 'dapo') then ('voting/aggregator', 'math')
(the family's kind, task.kind). Overrides (workflows.get(..., prompts=...)
or config.workflow.prompts) are searched before the defaults, so an override
keyed by a kind ('math', 'code') applies to every family of that kind that
has no override of its own.

Templates are `str.format` strings. Fields: {problem} (the task's problem
text), {answer_format} (the family's final-answer instruction, ANSWER_FORMATS)
and per template {candidates}, {answer}, {feedback}, {m}, {strategy}. Tiny
templates are short on purpose; roles that answer the problem themselves
(worker, refine) get it last there, so a tiny model's skill transfers to them.
Each template becomes one user message of the tokenizer's chat template.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

FAMILIES = ("math", "code")  # task kinds, the least specific families
TINY_FAMILIES = ("tiny_math", "tiny_code")
PROMPT_FAMILIES = ("gsm8k", "math", "dapo", "code") + TINY_FAMILIES
STYLES = ("tiny", "instruct")
PromptTable = Mapping[tuple[str, str], str]

# Tasks of the tiny world (character models): family 'tiny_<kind>'.
TINY_TASKS = ("arithmetic", "tiny_code")
# Registered task names (and data formats, a task's `format`) -> family.
_FAMILY_OF_NAME = {
    "gsm8k_jsonl": "gsm8k", "tfds_gsm8k": "gsm8k", "gsm8k": "gsm8k",
    "math_jsonl": "math", "math": "math", "dapo_jsonl": "dapo", "dapo": "dapo",
    "humaneval": "code", "mbpp_jsonl": "code", "mbpp": "code", "deepcoder_jsonl": "code",
    "deepcoder": "code",
}
_KIND_OF = {"gsm8k": "math", "math": "math", "dapo": "math", "code": "code",
            "tiny_math": "math", "tiny_code": "code"}

_BOXED = "Put your final answer within \\boxed{}."
ANSWER_FORMATS = {
    "gsm8k": _BOXED,
    "math": _BOXED,
    # DAPO-Math's own instruction (its data strips it by default; see tasks.math.sources).
    "dapo": ('The last line of your response should be of the form Answer: $Answer (without '
             'quotes) where $Answer is the answer to the problem.'),
    "code": "Write your final program in one ```python code block.",
    "tiny_math": "",
    "tiny_code": "",
}

# --- the tiny world's prompts (unchanged: the tiny bases are trained on them) ---
_SOLVE = "{problem}"
_TINY_MATH = {
    "generator": _SOLVE,
    "refine": "Your answer:\n{answer}\nFeedback: {feedback}\nSolve it again.\n{problem}",
    "aggregator": "{problem}\nAnswers:\n{candidates}\nReply with the number of the best answer.",
    "evaluator": "{problem}\nAnswer:\n{answer}\nReply correct, or incorrect: <why>.",
    "orchestrator": "{problem}\nGive {m} different strategies, one per line.",
    "worker": "Strategy: {strategy}\n{problem}",
    "synthesizer": ("{problem}\nSolutions:\n{candidates}\n"
                    "Reply with the number of the best solution, or your own answer."),
}
_TINY_CODE = {
    "generator": _SOLVE,
    "refine": "Your program:\n{answer}\nFeedback: {feedback}\nWrite it again.\n{problem}",
    "aggregator": "{problem}\nPrograms:\n{candidates}\nReply with the number of the best program.",
    "evaluator": "{problem}\nProgram:\n{answer}\nReply correct, or incorrect: <why>.",
    "orchestrator": "{problem}\nGive {m} different approaches, one per line.",
    "worker": "Approach: {strategy}\n{problem}",
    "synthesizer": ("{problem}\nPrograms:\n{candidates}\n"
                    "Reply with the number of the best program, or your own program."),
}

# --- instruct models: a stated final line per role ---
_INSTRUCT_MATH = {
    "generator": "{problem}\n\nSolve the problem step by step. {answer_format}",
    "refine": ("{problem}\n\nYour previous solution:\n{answer}\n\nA reviewer's feedback:\n"
               "{feedback}\n\nSolve the problem again, step by step, fixing any mistake. "
               "{answer_format}"),
    "aggregator": ("{problem}\n\nCandidate solutions:\n\n{candidates}\n\nDecide which candidate "
                   "has the correct final answer. End your reply with a last line of the form "
                   "'CHOICE: k', where k is the number of the best candidate."),
    "evaluator": ("{problem}\n\nProposed solution:\n{answer}\n\nCheck the proposed solution "
                  "step by step. If it is wrong, say what is wrong. End your reply with a last "
                  "line that is exactly 'VERDICT: correct' or 'VERDICT: incorrect'."),
    "orchestrator": ("{problem}\n\nDo not solve the problem. Propose {m} different strategies "
                     "for solving it. Reply with exactly {m} numbered lines ('1. ...' to "
                     "'{m}. ...'), one short strategy per line, and nothing else."),
    "worker": ("{problem}\n\nSolve the problem step by step using this strategy: {strategy}\n"
               "{answer_format}"),
    "synthesizer": ("{problem}\n\nCandidate solutions:\n\n{candidates}\n\nDecide which candidate "
                    "has the correct final answer. End your reply with a last line of the form "
                    "'CHOICE: k', where k is the number of the best candidate. If none is "
                    "correct, solve the problem yourself instead. {answer_format}"),
}
_INSTRUCT_CODE = {
    "generator": "{problem}\n\n{answer_format}",
    "refine": ("{problem}\n\nYour previous program:\n{answer}\n\nA reviewer's feedback:\n"
               "{feedback}\n\nWrite the program again, fixing any mistake. {answer_format}"),
    "aggregator": ("{problem}\n\nCandidate programs:\n\n{candidates}\n\nDecide which candidate "
                   "solves the problem correctly. End your reply with a last line of the form "
                   "'CHOICE: k', where k is the number of the best candidate."),
    "evaluator": ("{problem}\n\nProposed program:\n{answer}\n\nCheck the program against the "
                  "problem. If it is wrong, say what is wrong. End your reply with a last line "
                  "that is exactly 'VERDICT: correct' or 'VERDICT: incorrect'."),
    "orchestrator": ("{problem}\n\nDo not write code. Propose {m} different approaches for "
                     "solving it. Reply with exactly {m} numbered lines ('1. ...' to "
                     "'{m}. ...'), one short approach per line, and nothing else."),
    "worker": "{problem}\n\nUse this approach: {strategy}\n{answer_format}",
    "synthesizer": ("{problem}\n\nCandidate programs:\n\n{candidates}\n\nDecide which candidate "
                    "solves the problem correctly. End your reply with a last line of the form "
                    "'CHOICE: k', where k is the number of the best candidate. If none is "
                    "correct, write the program yourself instead. {answer_format}"),
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
    for family, table in (("tiny_math", _TINY_MATH), ("tiny_code", _TINY_CODE),
                          ("math", _INSTRUCT_MATH), ("code", _INSTRUCT_CODE))
    for workflow, templates in _USES.items()
    for template in templates
}


def family_of(task: Any) -> str:
  """The prompt family of a task (one of PROMPT_FAMILIES).

  A task's own `prompt_family` attribute wins; the tiny world's tasks
  (TINY_TASKS) are 'tiny_<kind>'; data formats (the files task's
  `formats`, its train file's first) and known task names map to theirs;
  any other task gets its kind ('math' or 'code'), so a task of your own
  gets the instruct prompts of its kind.
  """
  own = getattr(task, "prompt_family", None)
  if own:
    if own not in PROMPT_FAMILIES:
      raise ValueError(f"task {task.name!r} has prompt_family={own!r}; use one of "
                       f"{PROMPT_FAMILIES}.")
    return own
  kind = getattr(task, "kind", "")
  if kind not in FAMILIES:
    raise ValueError(f"task {getattr(task, 'name', task)!r} has kind {kind!r}; workflows "
                     f"need a task of kind {FAMILIES} (set Task.kind).")
  if getattr(task, "name", "") in TINY_TASKS:
    return f"tiny_{kind}"
  # The files task records each split's data format; the training format decides, so
  # a run is trained and evaluated with one stated answer format.
  formats = getattr(task, "formats", None)
  formats = [formats.get("train"), formats.get("eval")] if isinstance(formats, Mapping) else []
  for name in (*formats, getattr(task, "format", None), getattr(task, "name", None)):
    family = _FAMILY_OF_NAME.get(name) if isinstance(name, str) else None
    if family is not None and _KIND_OF[family] == kind:
      return family
  return kind


def kind_of(family: str) -> str:
  """The task kind of a family ('dapo' -> 'math'); a kind is its own."""
  return _KIND_OF.get(family, family)


def style_of(family: str) -> str:
  """'tiny' for the tiny world's families, 'instruct' for every other."""
  return "tiny" if family in TINY_FAMILIES else "instruct"


def chain(family: str) -> tuple[str, ...]:
  """The families a lookup tries, most specific first: ('dapo', 'math')."""
  kind = kind_of(family)
  return (family,) if kind == family else (family, kind)


def _flat(workflow: str, overrides: Mapping[Any, Any]) -> dict[Any, Any]:
  """Overrides as {(key, family): template}; also accepts the nested form of configs:
  {'<template>' or '<workflow>/<template>': {family: template}}."""
  flat = {}
  for key, value in overrides.items():
    if isinstance(key, str) and isinstance(value, Mapping):
      name = key if "/" in key else f"{workflow}/{key}"
      flat.update({(name, family): text for family, text in value.items()})
    else:
      flat[key] = value
  return flat


def table(workflow: str, overrides: Mapping[Any, Any] | None = None
          ) -> dict[tuple[str, str], str]:
  """The defaults for `workflow` with `overrides` applied (keys checked).

  Overrides are {('<workflow>/<template>', family): template}, or nested as
  config.workflow.prompts holds them: {'<template>': {family: template}}.
  They are kept apart from the defaults (marked with OVERRIDE) so that a
  lookup prefers any override along the family chain to any default.
  """
  prompts = {k: v for k, v in DEFAULT_PROMPTS.items() if k[0].startswith(f"{workflow}/")}
  for key, template in _flat(workflow, overrides or {}).items():
    if (not isinstance(key, tuple) or len(key) != 2 or not str(key[0]).startswith(f"{workflow}/")
        or key[1] not in PROMPT_FAMILIES):
      raise ValueError(
          f"prompt override key {key!r} must be ('{workflow}/<template>', family) with family "
          f"in {PROMPT_FAMILIES} (or config.workflow.prompts.<template>.<family>); defaults: "
          f"{sorted(prompts) or 'none'}.")
    if not isinstance(template, str):
      raise ValueError(f"prompt override {key!r} must be a str.format template, got "
                       f"{type(template).__name__}.")
    prompts[(OVERRIDE + key[0], key[1])] = template
  return prompts


# Prefix of override entries in a workflow's prompt table (see `table`).
OVERRIDE = "override:"


def lookup(prompts: PromptTable, name: str, family: str) -> str | None:
  """The template for ('<workflow>/<template>', family): overrides first, then defaults,
  each along chain(family)."""
  for prefix in (OVERRIDE, ""):
    for member in chain(family):
      found = prompts.get((prefix + name, member))
      if found is not None:
        return found
  return None


def render(prompts: PromptTable, workflow: str, template: str, family: str,
           fields: Mapping[str, object]) -> str:
  """The filled-in template for (workflow/template, family), with clear errors."""
  name = f"{workflow}/{template}"
  text = lookup(prompts, name, family)
  if text is None:
    raise ValueError(f"no prompt for ({name!r}, {family!r}) (families tried: {chain(family)}); "
                     f"the workflow's prompt table has {sorted(prompts)}. Add it with "
                     f"workflows.get(..., prompts={{({name!r}, {kind_of(family)!r}): '...'}}).")
  fields = {"answer_format": ANSWER_FORMATS.get(family, ""), **fields}
  try:
    return text.format(**fields)
  except KeyError as err:
    raise ValueError(f"prompt ({name!r}, {family!r}) uses field {err} but the stage provides "
                     f"only {sorted(fields)}.") from None


def numbered(items: Sequence[str], family: str = "tiny_math") -> str:
  """How candidates are shown to aggregators and synthesizers: '1) a\\n2) b' (tiny), or
  'Candidate 1:\\n<text>' blocks separated by blank lines (instruct: multi-line solutions)."""
  if style_of(family) == "tiny" or family not in PROMPT_FAMILIES:
    return "\n".join(f"{i + 1}) {item}" for i, item in enumerate(items))
  return "\n\n".join(f"Candidate {i + 1}:\n{item}" for i, item in enumerate(items))
