"""Math and code tasks: problems, answer checking, data sources, the sandbox.

    task = marl_jax.tasks.get("gsm8k_jsonl", train_path="train.jsonl")
    batch = task.sample("train", n=64, seed=0, step=step)
    scores = task.verify_batch(batch, final_texts)  # Score(reward, status, detail)

`available()` lists the task names; each name's options are its factory's
keyword arguments.
"""

import inspect

from marl_jax.tasks.base import Problem, Score, SPLITS, STATUSES, Task  # pylint: disable=g-importing-member
from marl_jax.tasks.code import sources as code_sources
from marl_jax.tasks.code import tiny_code
from marl_jax.tasks.math import arithmetic
from marl_jax.tasks.math import sources as math_sources

_REGISTRY = {
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


def from_config(section) -> Task:
  """The task of a run's config.task (its name and options)."""
  options = section["options"]
  return get(section["name"], **(options.to_dict() if hasattr(options, "to_dict") else options))


def get(name: str, **task_options) -> Task:
  """Builds the task registered as `name` with the given options."""
  accepted = options(name)
  unknown = sorted(set(task_options) - set(accepted))
  if unknown:
    raise ValueError(f"task {name!r} has no option {', '.join(map(repr, unknown))}; "
                     f"its options are: {', '.join(accepted)}")
  return _REGISTRY[name](**task_options)


__all__ = ["Problem", "Score", "SPLITS", "STATUSES", "Task", "available",
           "from_config", "get", "options", "register"]
