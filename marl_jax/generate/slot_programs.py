"""The continuous engine's jitted programs over a fixed set of decode slots.

  prefill  rows into free slots: their keys and values at cache columns [0, P),
           their first token drawn (padding rows, slot id >= slots, write nowhere).
  decode   up to `chunk` steps of slots [0, width); each row writes at its own
           column. A width below the slots decodes that prefix of the state and
           writes it back: the slots past it hold no live row.
  move     live rows from past a narrower prefix into its free slots, in place
           (a copy of the moved rows only).
A prefill or decode given `columns` (the LoRA slots its rows use, an int array
[K]) runs only those slots: its `adapters` are theirs (`select_program`, kept by
the session while its calls use the same slots) and it takes their columns of
the rows' routing weights. Rows of one role pay for one slot however many roles
the session holds (None: every slot).
The host loop that drives them is continuous.Session.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from marl_jax.generate import draw
from marl_jax.models import decoder, lora
from marl_jax.models.config import ModelConfig, as_dtype
from marl_jax.parallel import sharding


def init_state(config: ModelConfig, slots: int, length: int, lora_slots: int | None,
               per_layer: bool) -> dict[str, Any]:
  """Empty engine state: every slot free (done)."""
  dtype = as_dtype(config.compute_dtype)
  shape = (slots, config.num_kv_heads, length, config.head_dim)
  if per_layer:
    cache = [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
             for _ in range(config.num_layers)]
  else:
    cache = tuple(jnp.zeros((config.num_layers, *shape), dtype) for _ in range(2))
  zeros = lambda dtype: jnp.zeros((slots,), dtype)
  state = {"cache": cache, "cache_valid": jnp.zeros((slots, length), bool),
           "hidden": jnp.zeros((slots, config.hidden_size), dtype),  # its prompt's last
           "column": zeros(jnp.int32), "position": zeros(jnp.int32), "last": zeros(jnp.int32),
           "steps": zeros(jnp.int32), "limit": jnp.ones((slots,), jnp.int32),
           "done": jnp.ones((slots,), bool), "stopped": zeros(bool),
           "keys": jnp.zeros((slots, 2), jnp.uint32),
           "settings": {"temperature": zeros(jnp.float32), "top_k": zeros(jnp.int32),
                        "top_p": jnp.ones((slots,), jnp.float32)}}
  if lora_slots is not None:
    state["weights"] = jnp.zeros((slots, lora_slots), jnp.float32)
  return state


def _constrained(state: dict[str, Any]) -> dict[str, Any]:
  """On a mesh (the rollout's, jax.set_mesh), the slots over the batch axes: the KV
  cache as the lockstep sampler's (kv heads over tensor), every per-slot array's
  rows; the identity on one device."""
  rest = {k: v for k, v in state.items() if k != "cache"}
  leaves, tree = jax.tree.flatten(rest)
  return {**jax.tree.unflatten(tree, sharding.constrain_rows(*leaves)),
          "cache": sharding.constrain_kv_cache(state["cache"])}


def _map_slots(fn, *states: dict[str, Any]) -> dict[str, Any]:
  """fn(axis, *leaves) over each per-slot array of the states, `axis` its slot axis
  (1 in a stacked [L, S, ...] cache, else 0)."""
  rests = [{k: v for k, v in s.items() if k != "cache"} for s in states]
  caches = [s["cache"] for s in states]
  axis = 0 if isinstance(caches[0], list) else 1
  return {**jax.tree.map(lambda *xs: fn(0, *xs), *rests),
          "cache": jax.tree.map(lambda *xs: fn(axis, *xs), *caches)}


@functools.partial(jax.jit, static_argnames=("num_slots",))
def select_program(adapters, columns, num_slots: int):
  """The adapters of the LoRA slots `columns` [K] only (lora.select_slots): one
  program per K, a copy of K of the num_slots slots."""
  return lora.select_slots(adapters, columns, num_slots)


class SlotSelection:
  """(adapters, columns [K]) of a call that runs the LoRA slots `columns` (a tuple;
  None: all of them): their copy (select_program) is made once and kept while a
  layout's calls (the prefill's, the decode's adapters) run the same slots, so a
  session copies them when its rows' mix of roles changes, not at every call.
  The last copy is dropped before the next is made: one a layout at most (an
  accelerator's prefill and decode read one layout; on a CPU the decode's own
  layout, one array a layer, holds a second)."""

  def __init__(self, num_slots: int | None):
    self.num_slots = num_slots
    self._kept: dict[int, tuple[Any, ...]] = {}  # id(adapters) -> (columns, theirs, index)

  def __call__(self, adapters, columns: tuple[int, ...] | None) -> tuple[Any, Any]:
    if columns is None:
      return adapters, None
    layout = id(adapters)
    if self._kept.get(layout, (None,))[0] != columns:
      self._kept.pop(layout, None)
      index = jnp.asarray(columns, jnp.int32)
      self._kept[layout] = (columns, select_program(adapters, index, self.num_slots), index)
    return self._kept[layout][1:]


def _used(weights, columns):
  """The routing weights [.., S] of the LoRA slots `columns` [K] only (None: all)."""
  return weights if columns is None or weights is None else jnp.take(weights, columns, axis=-1)


def _prefill(config: ModelConfig, spec: draw.DrawSpec, params, adapters, columns, state, tokens,
             valid, slot_ids, keys, settings, limits, weights, stop_ids):
  """Prefills rows [R, P] into slots slot_ids [R] (an id >= slots: a padding row,
  written nowhere) and draws their first tokens; returns (state, ids, logprobs, done)."""
  dtype = as_dtype(config.compute_dtype)
  positions = decoder.left_pad_positions(valid)
  hidden, kv = decoder.forward_hidden(config, params, tokens, positions, valid,
                                      adapters=adapters, adapter_weights=_used(weights, columns))
  logits = decoder.logits_from_hidden(config, params, hidden[:, -1:])[:, 0]
  ids, logp = draw.sample(keys, jnp.zeros_like(slot_ids), logits, spec, settings)
  prompt_len = tokens.shape[1]
  cache = state["cache"]
  if isinstance(cache, list):
    if not isinstance(kv, list):  # the stacked prefill's [L, ...] keys and values, per layer
      kv = [tuple(c[i] for c in kv) for i in range(config.num_layers)]
    cache = [tuple(c.at[slot_ids, :, :prompt_len].set(n.astype(dtype), mode="drop")
                   for c, n in zip(layer, new)) for layer, new in zip(cache, kv)]
  else:
    cache = tuple(c.at[:, slot_ids, :, :prompt_len].set(n.astype(dtype), mode="drop")
                  for c, n in zip(cache, kv))
  length = state["cache_valid"].shape[1]
  rows = {"cache_valid": jnp.pad(valid, ((0, 0), (0, length - prompt_len))),
          "hidden": hidden[:, -1].astype(dtype), "position": positions[:, -1] + 1}
  new, done = _start_rows(state, cache, slot_ids, prompt_len, rows, ids, keys, settings,
                          limits, weights, stop_ids)
  return new, ids, logp, done


def _start_rows(state, cache, slot_ids, prompt_len: int, rows: dict[str, Any], ids, keys,
                settings, limits, weights, stop_ids):
  """`state` with rows started in slots slot_ids (>= slots: nowhere) at column
  `prompt_len`, their first tokens `ids` drawn: the new `cache`, and per row
  `rows` (cache_valid, hidden, position) and the rest; returns (state, done)."""
  put = lambda x, new: x.at[slot_ids].set(new, mode="drop")
  stopped = jnp.isin(ids, stop_ids)
  done = stopped | (limits <= 1)
  new = {**state, "cache": cache, **{k: put(state[k], v) for k, v in rows.items()},
         "column": put(state["column"], jnp.full_like(slot_ids, prompt_len)),
         "last": put(state["last"], ids.astype(jnp.int32)),
         "steps": put(state["steps"], jnp.ones_like(slot_ids)),
         "limit": put(state["limit"], limits), "done": put(state["done"], done),
         "stopped": put(state["stopped"], stopped), "keys": put(state["keys"], keys),
         "settings": jax.tree.map(put, state["settings"], settings)}
  if weights is not None:
    new["weights"] = put(state["weights"], weights)
  return _constrained(new), done


def _fork(config: ModelConfig, spec: draw.DrawSpec, prompt_len: int, params, state, src, dst,
          keys, settings, limits, weights, stop_ids):
  """Starts rows [M] in slots dst from the prompts slots src hold (a prompt of
  `prompt_len` columns, the same tokens and LoRA routing): copies those columns
  of the cache and draws each row's first token, with its own key, from the
  prompt's last hidden state; no forward pass (a dst >= slots: written nowhere)."""
  logits = decoder.logits_from_hidden(config, params, state["hidden"][src][:, None])[:, 0]
  ids, logp = draw.sample(keys, jnp.zeros_like(dst), logits, spec, settings)
  cache = state["cache"]
  if isinstance(cache, list):
    cache = [tuple(c.at[dst, :, :prompt_len].set(c[src, :, :prompt_len], mode="drop")
                   for c in layer) for layer in cache]
  else:
    cache = tuple(c.at[:, dst, :, :prompt_len].set(c[:, src, :, :prompt_len], mode="drop")
                  for c in cache)
  valid = state["cache_valid"][src].at[:, prompt_len:].set(False)
  rows = {"cache_valid": valid, "hidden": state["hidden"][src],
          "position": valid.sum(1).astype(jnp.int32)}
  new, done = _start_rows(state, cache, dst, prompt_len, rows, ids, keys, settings, limits,
                          weights, stop_ids)
  return new, ids, logp, done


def _decode(config: ModelConfig, spec: draw.DrawSpec, chunk: int, params, adapters, columns,
            state, stop_ids):
  """Up to `chunk` decode steps of every slot (stopping early when all are done);
  returns (state, tokens [B, chunk], logprobs [B, chunk], steps run)."""
  slots = state["last"].shape[0]
  rows = jnp.arange(slots)
  model = functools.partial(decoder.forward_hidden, config, params, adapters=adapters,
                            adapter_weights=_used(state.get("weights"), columns))

  def cond(carry):
    i, state, *_ = carry
    return (i < chunk) & ~jnp.all(state["done"])

  def body(carry):
    i, state, out_tokens, out_logp = carry
    done, column = state["done"], state["column"]
    hidden, cache = model(state["last"][:, None], state["position"][:, None],
                          jnp.ones((slots, 1), bool), cache=state["cache"],
                          cache_valid=state["cache_valid"], cache_index=column)
    logits = decoder.logits_from_hidden(config, params, hidden)[:, 0]
    ids, logp = draw.sample(state["keys"], state["steps"], logits, spec, state["settings"])
    ids = jnp.where(done, config.pad_id, ids)
    out_tokens = out_tokens.at[:, i].set(ids)
    out_logp = out_logp.at[:, i].set(jnp.where(done, 0.0, logp))
    live = (~done).astype(jnp.int32)
    steps = state["steps"] + live
    stopped = state["stopped"] | (~done & jnp.isin(ids, stop_ids))
    state = _constrained({
        **state, "cache": cache,
        "cache_valid": state["cache_valid"].at[rows, column].set(True),
        "column": column + live, "position": state["position"] + live,
        "last": jnp.where(done, state["last"], ids.astype(jnp.int32)), "steps": steps,
        "stopped": stopped, "done": done | stopped | (steps >= state["limit"])})
    return i + 1, state, out_tokens, out_logp

  out_tokens = jnp.full((slots, chunk), config.pad_id, jnp.int32)
  out_logp = jnp.zeros((slots, chunk), jnp.float32)
  steps, state, out_tokens, out_logp = jax.lax.while_loop(
      cond, body, (jnp.int32(0), state, out_tokens, out_logp))
  return state, out_tokens, out_logp, steps


def _decode_window(config: ModelConfig, spec: draw.DrawSpec, chunk: int, width: int,
                   window: int, params, adapters, columns, state, stop_ids):
  """_decode of slots [0, width) over cache columns [0, window) only (the whole
  state when both cover it); tokens and logprobs are [width, chunk]. Every live
  row's columns for the chunk lie in the window (the caller's choice); a finished
  row past it writes at the window's last column of its own slot, which nothing
  reads again before the slot's next prefill rewrites it."""
  slots, length = state["cache_valid"].shape
  if width >= slots and window >= length:
    return _decode(config, spec, chunk, params, adapters, columns, state, stop_ids)
  width, window = min(width, slots), min(window, length)
  part = _map_slots(lambda axis, x: jax.lax.slice_in_dim(x, 0, width, axis=axis), state)
  # the columns: axis 1 of cache_valid [S, T]; axis -2 of each cache [.., S, K, T, hd]
  part["cache_valid"] = part["cache_valid"][:, :window]
  part["cache"] = jax.tree.map(lambda x: jax.lax.slice_in_dim(x, 0, window, axis=x.ndim - 2),
                               part["cache"])
  part, tokens, logp, steps = _decode(config, spec, chunk, params, adapters, columns, part,
                                      stop_ids)
  state = jax.tree.map(lambda x, p: jax.lax.dynamic_update_slice(x, p, (0,) * x.ndim),
                       state, part)
  return _constrained(state), tokens, logp, steps


def _vmapped(fn, copies: bool, shared: tuple[int, ...]):
  """fn over a leading copy axis of every argument but those at `shared`."""
  if not copies:
    return fn

  def call(*args):
    axes = tuple(None if i in shared or args[i] is None else 0 for i in range(len(args)))
    return jax.vmap(fn, in_axes=axes)(*args)

  return call


@functools.partial(jax.jit, static_argnames=("config", "spec", "copies"),
                   donate_argnames=("state",))
def prefill_program(config, spec, copies, params, adapters, columns, state, tokens, valid,
                    slot_ids, keys, settings, limits, weights, stop_ids):
  fn = _vmapped(functools.partial(_prefill, config, spec), copies, shared=(1, 2, 11))
  return fn(params, adapters, columns, state, tokens, valid, slot_ids, keys, settings, limits,
            weights, stop_ids)


@functools.partial(jax.jit, static_argnames=("config", "spec", "prompt_len", "copies"),
                   donate_argnames=("state",))
def fork_program(config, spec, prompt_len, copies, params, state, src, dst, keys, settings, limits,
                 weights, stop_ids):
  fn = _vmapped(functools.partial(_fork, config, spec, prompt_len), copies, shared=(8,))
  return fn(params, state, src, dst, keys, settings, limits, weights, stop_ids)


@functools.partial(jax.jit, static_argnames=("config", "spec", "chunk", "width", "window",
                                             "copies"), donate_argnames=("state",))
def decode_program(config, spec, chunk, width, window, copies, params, adapters, columns,
                   state, stop_ids):
  fn = _vmapped(functools.partial(_decode_window, config, spec, chunk, width, window), copies,
                shared=(1, 2, 4))
  state, tokens, logp, steps = fn(params, adapters, columns, state, stop_ids)
  return state, tokens, logp, steps if not copies else steps.max()


@functools.partial(jax.jit, static_argnames=("copies",), donate_argnames=("state",))
def move_program(copies, state, src, dst):
  """Slot dst[i] takes slot src[i]'s row ([M], or [C, M] per copy; dst >= slots: no
  move). The M rows are copied out, then written in place: a permutation of every
  slot would copy the whole cache."""
  def put(axis, x, src, dst):
    index = (slice(None),) * axis + (dst,)
    return x.at[index].set(jnp.take(x, src, axis=axis), mode="drop")

  def move(state, src, dst):
    return _constrained(_map_slots(lambda axis, x: put(axis, x, src, dst), state))
  return _vmapped(move, copies, shared=())(state, src, dst)


def unstacked_adapters(config: ModelConfig, adapters):
  """Adapters with per-layer leaves, for the decode layout of unstacked layers."""
  return None if adapters is None else {
      "layers": decoder.unstack(adapters["layers"], config.num_layers)}
