"""Math and code tasks: problems, answer checking, data sources, the sandbox.

    task = marl_jax.tasks.get("files", train_path="train.jsonl", eval_path="test.parquet")
    batch = task.sample("train", n=64, seed=0, step=step)
    scores = task.verify_batch(batch, final_texts)  # Score(reward, status, detail)

`available()` lists the task names; each name's options are its factory's
keyword arguments. A run's config.task names one (`from_config`); its data
fields (train_path, eval_path, format, eval_format) select the `files` task.
"""

import inspect

from marl_jax.tasks import files
from marl_jax.tasks import rewards
from marl_jax.tasks.base import Problem, Score, SPLITS, STATUSES, Task  # pylint: disable=g-importing-member
from marl_jax.tasks.code import sources as code_sources
from marl_jax.tasks.code import tiny_code
from marl_jax.tasks.math import arithmetic
from marl_jax.tasks.math import sources as math_sources

_REGISTRY = {
    "files": files.files,
    "gsm8k_jsonl": math_sources.gsm8k_jsonl,
    "math_jsonl": math_sources.math_jsonl,
    "dapo_jsonl": math_sources.dapo_jsonl,
    "tfds_gsm8k": math_sources.tfds_gsm8k,
    "arithmetic": arithmetic.ArithmeticTask,
    "humaneval": code_sources.humaneval,
    "mbpp_jsonl": code_sources.mbpp_jsonl,
    "deepcoder_jsonl": code_sources.deepcoder_jsonl,
    "tiny_code": tiny_code.TinyCodeTask,
}


def available() -> tuple:
  """Names accepted by `get`."""
  return tuple(sorted(_REGISTRY))


def options(name: str) -> tuple:
  """The option names task `name` accepts."""
  _check_name(name)
  return tuple(inspect.signature(_REGISTRY[name]).parameters)


def _check_name(name: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; available tasks: "
                     f"{', '.join(available())}")


def register(name: str, factory) -> None:
  """Makes `get(name, **options)` call factory(**options), which returns a Task."""
  if not callable(factory):
    raise TypeError(f"tasks.register({name!r}, ...): the factory must be callable, "
                    f"not {type(factory).__name__}.")
  _REGISTRY[name] = factory


# Registered tasks that read one published format from train_path / eval_path
# (the Python API's older names): in a config they are the files task.
FILE_TASK_FORMATS = {"gsm8k_jsonl": "gsm8k", "math_jsonl": "math", "dapo_jsonl": "dapo",
                     "mbpp_jsonl": "mbpp", "deepcoder_jsonl": "deepcoder"}


def _value(section, key: str, default):
  return section[key] if key in section else default


def resolve(section) -> tuple:
  """(task name, options) of a run's config.task.

  With no data file set, the task is config.task.name with config.task.options
  (the tiny world's arithmetic / tiny_code). With task.train_path or
  task.eval_path set, it is the files task over them, whatever task.name:
  a researcher adding a data path to any config trains on that data.
  """
  name = section["name"]
  given = _value(section, "options", None) or {}
  given = dict(given.to_dict() if hasattr(given, "to_dict") else given)
  data = {key: _value(section, key, "") for key in ("train_path", "eval_path",
                                                      "format", "eval_format")}
  data["format"] = data["format"] or files.AUTO
  if not (data["train_path"] or data["eval_path"]) and name != "files":
    if data["format"] != files.AUTO or data["eval_format"]:
      raise ValueError("task.format / task.eval_format name the format of data files, but "
                       "neither task.train_path nor task.eval_path is set")
    return name, given
  if name in FILE_TASK_FORMATS:
    implied = FILE_TASK_FORMATS[name]
    for key in ("format", "eval_format"):
      if data[key] not in ("", files.AUTO, implied):
        raise ValueError(f"task.{key}={data[key]!r} contradicts task.name={name!r}, which "
                         f"reads {implied} files; set task.name=files")
    data["format"], data["eval_format"] = implied, ""
  elif name != "files" and given:
    raise ValueError(f"task.options {sorted(given)} are options of task {name!r}, but "
                     "task.train_path / task.eval_path replace it with the files task; "
                     f"its options are: {', '.join(options('files'))}")
  return "files", {**data, "family": _value(section, "family", ""), **given}


def from_config(section) -> Task:
  """The task of a run's config.task (see `resolve`), rewarded by
  task.reward_fn ('package.module:function', tasks.rewards) when it is set."""
  name, task_options = resolve(section)
  task = get(name, **task_options)
  reward_fn = _value(section, "reward_fn", "")
  return rewards.with_reward(task, reward_fn) if reward_fn else task


def get(name: str, **task_options) -> Task:
  """Builds the task registered as `name` with the given options."""
  accepted = options(name)
  unknown = sorted(set(task_options) - set(accepted))
  if unknown:
    raise ValueError(f"task {name!r} has no option {', '.join(map(repr, unknown))}; "
                     f"its options are: {', '.join(accepted)}")
  return _REGISTRY[name](**task_options)


__all__ = ["Problem", "Score", "SPLITS", "STATUSES", "Task", "available", "rewards",
           "from_config", "get", "options", "register", "resolve"]
