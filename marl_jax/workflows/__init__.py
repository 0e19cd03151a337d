"""Workflows over roles: single, voting, majority_vote, eval_opt, orch_workers.

  workflow = workflows.get("voting", n=5, view="answer")
  workflows.register("debate", debate)   # a user-defined factory, see examples/

`get` passes options to the factory and rejects unknown ones by name.
"""

from __future__ import annotations

import inspect
from typing import Callable

from marl_jax.workflows.base import Stage, Workflow
from marl_jax.workflows.eval_opt import eval_opt
from marl_jax.workflows.orch_workers import orch_workers
from marl_jax.workflows.single import single
from marl_jax.workflows.voting import majority_vote, voting

_REGISTRY: dict[str, Callable[..., Workflow]] = {
    "single": single,
    "voting": voting,
    "majority_vote": majority_vote,
    "eval_opt": eval_opt,
    "orch_workers": orch_workers,
}


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def register(name: str, factory: Callable[..., Workflow]) -> None:
  """Makes `get(name, **options)` call factory(**options)."""
  _REGISTRY[name] = factory


def get(name: str, **options) -> Workflow:
  """The named workflow built with `options` (see each factory's docstring)."""
  if name not in _REGISTRY:
    raise ValueError(f"Unknown workflow {name!r}; available: {names()}.")
  factory = _REGISTRY[name]
  accepted = tuple(inspect.signature(factory).parameters)
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"workflow {name!r} has no option {', '.join(map(repr, unknown))}; "
                     f"its options are {accepted}.")
  return factory(**options)


__all__ = ["Stage", "Workflow", "get", "names", "register"]
