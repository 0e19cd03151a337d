"""The RL update under jit with explicit in/out shardings, for a device mesh."""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
from jax.sharding import Mesh, NamedSharding
import numpy as np

from marl_jax.parallel import rules as rules_lib
from marl_jax.parallel.sharding import TRAIN_RULES, put, replicated, rows_sharding, shardings
from marl_jax.rl import update


@functools.lru_cache(maxsize=64)
def _jitted_step(static: tuple, state_sh: "_Hashable", store_sh: "_Hashable",
                 batch_sh: "_Hashable", route_sh: "_Hashable", out_sh: "_Hashable"):
  step = functools.partial(update.minibatch_step, **dict(static))
  in_sh = tuple(x.tree for x in (state_sh, store_sh, batch_sh, route_sh))
  return jax.jit(step, in_shardings=in_sh, out_shardings=out_sh.tree, donate_argnums=0)


class _Hashable:
  """Wraps a pytree of shardings so lru_cache can key on it (by structure and value)."""

  def __init__(self, tree):
    self.tree = tree
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: isinstance(x, NamedSharding))
    self._key = (treedef, tuple(leaves))

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, _Hashable) and self._key == other._key


def apply_minibatch_sharded(mesh: Mesh, state: Any, store: Any, batch: Mapping[str, Any],
                   route: Mapping[str, Any], *, rules: rules_lib.Rules = TRAIN_RULES,
                   **static) -> tuple[Any, ...]:
  """Runs rl.update.minibatch_step under jit with explicit in/out shardings.

  The state (trainable, optimizer state, step) and the store keep their
  sharding by `rules` (the state is donated); batch rows are spread over the
  batch axes; the route and the metrics are replicated. `static` are
  apply_minibatch's keyword arguments. Returns (new state, metrics).
  """
  state_sh = shardings(state, mesh, rules)
  store_sh = shardings(store, mesh, rules)
  batch_sh = {k: rows_sharding(mesh, np.shape(v)) for k, v in batch.items()}
  route_sh = {k: replicated(mesh) for k in route}
  batch, route = put(dict(batch), batch_sh), put(dict(route), route_sh)
  store = put(store, store_sh)
  out_sh = (state_sh, replicated(mesh))
  fn = _jitted_step(tuple(sorted(static.items())), *(
      _Hashable(t) for t in (state_sh, store_sh, batch_sh, route_sh, out_sh)))
  return fn(state, store, batch, route)
