"""Workflows over roles: single, voting, majority_vote, eval_opt, orch_workers.

  workflow = workflows.get("voting", n=5, view="answer")
  workflows.register("debate", debate)   # a user-defined factory, see examples/

`get` passes options to the factory and rejects unknown ones by name.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from marl_jax.workflows.base import Stage, Workflow
from marl_jax.workflows.episodes import MissingCall
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
# The option that sets a workflow's number of parallel same-role agents
# (the config argument agents=N); workflows without one are absent.
_AGENT_OPTIONS: dict[str, str] = {"voting": "n", "majority_vote": "n", "orch_workers": "m"}


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def register(name: str, factory: Callable[..., Workflow], *,
             agents_option: str | None = None) -> None:
  """Makes `get(name, **options)` call factory(**options).

  agents_option names the factory's option for its number of parallel
  same-role agents, so `agents=N` in a config argument can set it.
  """
  if agents_option is not None and agents_option not in inspect.signature(factory).parameters:
    raise ValueError(f"workflow {name!r}: agents_option={agents_option!r} is not an option of "
                     f"its factory {factory.__name__}.")
  if agents_option is not None:
    _AGENT_OPTIONS[name] = agents_option
  elif _REGISTRY.get(name) is not factory:  # a new factory: the old one's option is not its
    _AGENT_OPTIONS.pop(name, None)
  _REGISTRY[name] = factory


def agents_option(name: str) -> str | None:
  """The option of workflow `name` that sets its parallel agents, or None."""
  _check_name(name)
  return _AGENT_OPTIONS.get(name)


def _check_name(name: str) -> None:
  if name not in _REGISTRY:
    raise ValueError(f"Unknown workflow {name!r}; available: {names()}. A workflow of your own "
                     "must be registered (workflows.register) by a module the run imports "
                     "(launch/train.py --import=my_package.my_flow).")


def get(name: str, **options) -> Workflow:
  """The named workflow built with `options` (see each factory's docstring)."""
  _check_name(name)
  factory = _REGISTRY[name]
  accepted = tuple(inspect.signature(factory).parameters)
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ValueError(f"workflow {name!r} has no option {', '.join(map(repr, unknown))}; "
                     f"its options are {accepted}.")
  return factory(**options)


def _plain(options: Any) -> dict:
  return options.to_dict() if hasattr(options, "to_dict") else dict(options)


def from_config(section: Mapping[str, Any]) -> Workflow:
  """The workflow of a run's config.workflow (name, options, prompt overrides)."""
  options = _plain(section["options"])
  prompts = _plain(section["prompts"])
  if prompts:
    options["prompts"] = prompts
  return get(section["name"], **options)


__all__ = ["MissingCall", "Stage", "Workflow", "agents_option", "from_config", "get", "names", "register"]
