"""The RL update under jit with explicit in/out shardings, for a device mesh.

A minibatch whole is one program (`apply_minibatch_sharded`); a minibatch cut
into update chunks (rl.update_rows; each chunk's rows a multiple of the batch
axes' devices) runs one gradient program per chunk shape, sums them, and
applies the sum once (`apply_chunks_sharded`), as rl.update does on one device.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
from jax.sharding import Mesh, NamedSharding
import numpy as np

from marl_jax.parallel import rules as rules_lib
from marl_jax.parallel.sharding import TRAIN_RULES, put, replicated, rows_sharding, shardings
from marl_jax.rl import update


_STATIC = ("cfg", "num_roles", "role_grads", "interventions")
# Chunks arrive placed (rows over the batch axes) and the state keeps its
# sharding, so these follow their inputs' shardings; jit caches per sharding.
_chunk_grads = jax.jit(update.group_grads, static_argnames=_STATIC)
_add = jax.jit(lambda a, b: jax.tree.map(jax.numpy.add, a, b), donate_argnums=0)


@functools.lru_cache(maxsize=64)
def _jitted_apply(static: tuple, out_sh: "_Hashable"):
  apply = functools.partial(update.apply_grads, **dict(static))
  return jax.jit(apply, out_shardings=out_sh.tree, donate_argnums=0)


@functools.lru_cache(maxsize=64)
def _jitted_step(static: tuple, state_sh: "_Hashable", store_sh: "_Hashable",
                 batch_sh: "_Hashable", route_sh: "_Hashable", control_sh: "_Hashable",
                 out_sh: "_Hashable"):
  step = functools.partial(update.minibatch_step, **dict(static))
  in_sh = tuple(x.tree for x in (state_sh, store_sh, batch_sh, route_sh, control_sh))
  return jax.jit(step, in_shardings=in_sh, out_shardings=out_sh.tree, donate_argnums=0)


def _control(mesh: Mesh, control: Mapping[str, Any] | None) -> Any:
  """apply_grads' `control` (which slots a slot_adamw.SlotAdamW steps), replicated."""
  return None if control is None else put(dict(control), replicated(mesh))


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
                   control: Mapping[str, Any] | None = None, **static) -> tuple[Any, ...]:
  """Runs rl.update.minibatch_step under jit with explicit in/out shardings.

  The state (trainable, optimizer state, step) and the store keep their
  sharding by `rules` (the state is donated); batch rows are spread over the
  batch axes; the route, `control` (the slots a slot_adamw.SlotAdamW steps:
  the reference scheme) and the metrics are replicated. `static` are
  apply_minibatch's keyword arguments. Returns (new state, metrics).
  """
  state_sh = shardings(state, mesh, rules)
  store_sh = shardings(store, mesh, rules)
  batch_sh = {k: rows_sharding(mesh, np.shape(v)) for k, v in batch.items()}
  route_sh = {k: replicated(mesh) for k in route}
  batch, route = put(dict(batch), batch_sh), put(dict(route), route_sh)
  store, control = put(store, store_sh), _control(mesh, control)
  control_sh = None if control is None else {k: replicated(mesh) for k in control}
  out_sh = (state_sh, replicated(mesh))
  fn = _jitted_step(tuple(sorted(static.items())), *(
      _Hashable(t) for t in (state_sh, store_sh, batch_sh, route_sh, control_sh, out_sh)))
  return fn(state, store, batch, route, control)


def apply_chunks_sharded(mesh: Mesh, state: Any, store: Any, chunks: Any, routes: Any, *,
                         rules: rules_lib.Rules = TRAIN_RULES, cfg: update.LossConfig,
                         optimizer: Any, num_roles: int, role_grads: bool = False,
                         interventions: Any = None, control: Mapping[str, Any] | None = None
                         ) -> tuple[Any, ...]:
  """One optimizer step over a minibatch given as update chunks (rl.batch.length_chunks):
  each chunk's loss and gradient sums (its rows over the batch axes), their sum, one
  AdamW step with the minibatch's denominator: the numbers of the whole minibatch's
  step, on the slots `control` marks (apply_minibatch_sharded). The state keeps its
  sharding by `rules` (donated). Returns (new state, metrics).
  """
  role_grads = role_grads or bool(interventions and interventions.needs_role_grads)
  store_sh = shardings(store, mesh, rules)
  store = put(store, store_sh)
  sums = None
  for chunk, route in zip(chunks, routes):
    chunk = put(dict(chunk), {k: rows_sharding(mesh, np.shape(v)) for k, v in chunk.items()})
    route = put(dict(route), {k: replicated(mesh) for k in route})
    part = _chunk_grads(state["trainable"], store, chunk, route, cfg=cfg, num_roles=num_roles,
                        role_grads=role_grads, interventions=interventions)
    sums = part if sums is None else _add(sums, part)
  state_sh = shardings(state, mesh, rules)
  static = dict(cfg=cfg, optimizer=optimizer, role_grads=role_grads, interventions=interventions)
  apply = _jitted_apply(tuple(sorted(static.items())), _Hashable((state_sh, replicated(mesh))))
  return apply(state, store, sums, _control(mesh, control))
