"""Continuous batching: a fixed number of decode slots kept full from a queue of prompts.

    out = continuous.generate(config, params, prompts, rng, sampling, slots=16)

The KV cache is allocated once for `slots x (max_prompt_len + max_new_tokens)`
tokens, whatever the number of prompts. A host loop alternates two jitted,
static-shaped programs:

  prefill   the next prompts of the queue into the slots that are free: their
            keys and values are written at columns [0, P) of those slots' cache
            rows (P the prompt-length bucket of the refill), their first token
            is drawn; the refill's rows are bucketed to a power of two (padding
            rows write nowhere).
  decode    `chunk` steps of every slot (fewer when all have stopped); each
            row writes its next key and value at its own column and position.
A row stops at a stop token or at its own token limit; its slot is refilled
before the next chunk, so the batch stays full until the queue drains.

Row i draws token j with fold_in(key_i, j), key_i = fold_in(rng, i) (or its
own key: draw.row_keys), whatever slot it lands in, so the tokens equal
sampler.generate's for the same key (logprobs to float rounding: the cache
rows hold the same values at other columns). Per-row temperature, top-k and
top-p (one SamplingParams per row), per-row LoRA routing (adapter_weights)
and per-row full copies (`copies`: params stacked [F, ...], each copy with its
own slots and queue, vmapped) are as in sampler.generate / generate_slots.
Compiled programs: one decode program, and one prefill per (refill rows,
prompt bucket) pair, both powers of two; all are counted by
sampler.compiled_shapes().
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.generate import draw, sampler
from marl_jax.generate.draw import SamplingParams
from marl_jax.models import decoder
from marl_jax.models.config import ModelConfig, as_dtype

ENGINES = ("lockstep", "continuous")  # config.rollout.engine
# Decode slots where nothing sizes them (config.rollout.slots=0 on a device
# that reports no memory, a CPU): SmolLM2-135M's float32 cache is 45 KiB a
# token, 2.9 GiB for 64 slots of 1,024 tokens (`cache_bytes`).
DEFAULT_SLOTS = 64
# Decode steps per program call: a slot that stops mid-chunk idles for the rest
# of it (~chunk / 2 steps a row, 4% of a 100-token answer), fewer steps pay the
# host round trip more often. Not yet measured: chosen, not tuned (a sweep of
# 1-32 is the rollout_long benchmark with this value changed).
DEFAULT_CHUNK = 8


@dataclasses.dataclass
class Stats:
  """What one continuous.generate call did.

  slot_steps counts every (slot, step) the decode programs ran plus one per
  prefilled row (its first token); tokens the rows' real tokens; so
  useful_fraction = tokens / slot_steps.
  """

  rows: int = 0
  slots: int = 0
  chunks: int = 0
  prefills: int = 0
  decode_steps: int = 0
  slot_steps: int = 0
  tokens: int = 0
  cache_bytes: int = 0

  @property
  def useful_fraction(self) -> float:
    return self.tokens / max(self.slot_steps, 1)


def cache_bytes(config: ModelConfig, slots: int, length: int) -> int:
  """Bytes of the KV cache of `slots` rows of `length` tokens (keys and values, all layers)."""
  itemsize = np.dtype(as_dtype(config.compute_dtype)).itemsize
  return (2 * config.num_layers * slots * config.num_kv_heads * length * config.head_dim
          * itemsize)


def _init_state(config: ModelConfig, slots: int, length: int, lora_slots: int | None,
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
           "column": zeros(jnp.int32), "position": zeros(jnp.int32), "last": zeros(jnp.int32),
           "steps": zeros(jnp.int32), "limit": jnp.ones((slots,), jnp.int32),
           "done": jnp.ones((slots,), bool), "stopped": zeros(bool),
           "keys": jnp.zeros((slots, 2), jnp.uint32),
           "settings": {"temperature": zeros(jnp.float32), "top_k": zeros(jnp.int32),
                        "top_p": jnp.ones((slots,), jnp.float32)}}
  if lora_slots is not None:
    state["weights"] = jnp.zeros((slots, lora_slots), jnp.float32)
  return state


def _prefill(config: ModelConfig, spec: draw.DrawSpec, params, adapters, state, tokens, valid,
             slot_ids, keys, settings, limits, weights, stop_ids):
  """Prefills rows [R, P] into slots slot_ids [R] (an id >= slots: a padding row,
  written nowhere) and draws their first tokens; returns (state, ids, done)."""
  dtype = as_dtype(config.compute_dtype)
  positions = decoder.left_pad_positions(valid)
  hidden, kv = decoder.forward_hidden(config, params, tokens, positions, valid,
                                      adapters=adapters, adapter_weights=weights)
  logits = decoder.logits_from_hidden(config, params, hidden[:, -1:])[:, 0]
  ids, logp = draw.sample(keys, jnp.zeros_like(slot_ids), logits, spec, settings)
  prompt_len = tokens.shape[1]
  put = lambda x, new: x.at[slot_ids].set(new, mode="drop")
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
  stopped = jnp.isin(ids, stop_ids)
  done = stopped | (limits <= 1)
  new = {**state, "cache": cache,
         "cache_valid": put(state["cache_valid"],
                            jnp.pad(valid, ((0, 0), (0, length - prompt_len)))),
         "column": put(state["column"], jnp.full_like(slot_ids, prompt_len)),
         "position": put(state["position"], positions[:, -1] + 1),
         "last": put(state["last"], ids.astype(jnp.int32)),
         "steps": put(state["steps"], jnp.ones_like(slot_ids)),
         "limit": put(state["limit"], limits), "done": put(state["done"], done),
         "stopped": put(state["stopped"], stopped), "keys": put(state["keys"], keys),
         "settings": jax.tree.map(put, state["settings"], settings)}
  if weights is not None:
    new["weights"] = put(state["weights"], weights)
  return new, ids, logp, done


def _decode(config: ModelConfig, spec: draw.DrawSpec, chunk: int, params, adapters, state,
            stop_ids):
  """Up to `chunk` decode steps of every slot (stopping early when all are done);
  returns (state, tokens [B, chunk], logprobs [B, chunk], steps run)."""
  slots = state["last"].shape[0]
  rows = jnp.arange(slots)
  model = functools.partial(decoder.forward_hidden, config, params, adapters=adapters,
                            adapter_weights=state.get("weights"))

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
    state = {**state, "cache": cache,
             "cache_valid": state["cache_valid"].at[rows, column].set(True),
             "column": column + live, "position": state["position"] + live,
             "last": jnp.where(done, state["last"], ids.astype(jnp.int32)), "steps": steps,
             "stopped": stopped, "done": done | stopped | (steps >= state["limit"])}
    return i + 1, state, out_tokens, out_logp

  out_tokens = jnp.full((slots, chunk), config.pad_id, jnp.int32)
  out_logp = jnp.zeros((slots, chunk), jnp.float32)
  steps, state, out_tokens, out_logp = jax.lax.while_loop(
      cond, body, (jnp.int32(0), state, out_tokens, out_logp))
  return state, out_tokens, out_logp, steps


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
def _prefill_program(config, spec, copies, params, adapters, state, tokens, valid, slot_ids,
                     keys, settings, limits, weights, stop_ids):
  fn = _vmapped(functools.partial(_prefill, config, spec), copies, shared=(1, 10))
  return fn(params, adapters, state, tokens, valid, slot_ids, keys, settings, limits, weights,
            stop_ids)


@functools.partial(jax.jit, static_argnames=("config", "spec", "chunk", "copies"),
                   donate_argnames=("state",))
def _decode_program(config, spec, chunk, copies, params, adapters, state, stop_ids):
  fn = _vmapped(functools.partial(_decode, config, spec, chunk), copies, shared=(1, 3))
  state, tokens, logp, steps = fn(params, adapters, state, stop_ids)
  return state, tokens, logp, steps if not copies else steps.max()


def _unstacked_adapters(config: ModelConfig, adapters):
  return None if adapters is None else {
      "layers": decoder.unstack(adapters["layers"], config.num_layers)}


def generate(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]],
    rng: jax.Array,
    sampling: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    *,
    slots: int,
    copies: Sequence[int] | None = None,
    adapters: Any = None,
    adapter_weights: np.ndarray | None = None,
    limits: Sequence[int] | None = None,
    max_prompt_len: int | None = None,
    chunk: int | None = None,
    min_prompt_len: int = 16,
    stats: Stats | None = None,
) -> sampler.Generation:
  """Samples one completion per prompt through `slots` decode slots (module doc).

  Args:
    sampling: one SamplingParams for every row, or one per row (their stop_ids
      must agree); a row's token limit is its max_new_tokens, or limits[i].
    slots: decode slots (rows decoded at once); with `copies`, per copy.
    copies: [B] index of each row's full parameter copy; params then carry a
      leading copy axis (as sampler.generate_slots).
    max_prompt_len: the cache's prompt columns (default: the bucket of the
      longest prompt); a longer prompt is an error.
    chunk: decode steps per program call (default DEFAULT_CHUNK, read at the call).
    stats: if given, filled with what the call did (Stats).
  """
  n, chunk = len(prompts), DEFAULT_CHUNK if chunk is None else chunk
  if n == 0:
    raise ValueError("continuous.generate() got no prompts.")
  if slots < 1 or chunk < 1:
    raise ValueError(f"continuous.generate() needs slots >= 1 and chunk >= 1, got slots={slots}, "
                     f"chunk={chunk}.")
  samplings = [sampling] * n if isinstance(sampling, SamplingParams) else list(sampling)
  if len(samplings) != n or len({s.stop_ids for s in samplings}) != 1:
    raise ValueError("continuous.generate() needs one SamplingParams, or one per prompt, all "
                     "with the same stop_ids.")
  limits = np.array([s.max_new_tokens for s in samplings] if limits is None else limits, np.int32)
  n_new = int(max(s.max_new_tokens for s in samplings))
  if len(limits) != n or limits.min() < 1 or limits.max() > n_new:
    raise ValueError(f"limits must give each of the {n} rows a token limit in [1, "
                     f"max_new_tokens={n_new}], got {limits.tolist()}.")
  longest = max(len(p) for p in prompts)
  prompt_cap = max_prompt_len or sampler.bucket(longest, min_prompt_len)
  if longest > prompt_cap:
    raise ValueError(f"a prompt of {longest} tokens is longer than max_prompt_len={prompt_cap}; "
                     "truncate it (rollout does, from the left) or raise max_prompt_len.")
  if longest + n_new > config.max_position_embeddings:
    raise ValueError(
        f"a prompt of {longest} tokens + max_new_tokens {n_new} exceeds the model's "
        f"max_position_embeddings={config.max_position_embeddings}; shorten the prompts or "
        "lower max_new_tokens.")
  if adapters is not None and (adapter_weights is None or len(adapter_weights) != n):
    raise ValueError("continuous.generate(adapters=...) needs adapter_weights with one row per "
                     "prompt.")
  num_copies = 1 if copies is None else jax.tree_util.tree_leaves(params)[0].shape[0]
  copy_of = np.zeros(n, np.int64) if copies is None else np.asarray(copies, np.int64)
  if len(copy_of) != n or copy_of.min() < 0 or copy_of.max() >= num_copies:
    raise ValueError(f"copies must give each of the {n} rows a copy in [0, {num_copies}).")
  engine = _Engine(config, params, slots, num_copies, copies is not None, prompt_cap + n_new,
                   adapters, None if adapters is None else np.asarray(adapter_weights, np.float32),
                   draw.DrawSpec.of(samplings), samplings[0].stop_ids, chunk, min_prompt_len,
                   prompt_cap)
  return engine.run(prompts, draw.row_keys(rng, n), draw.row_settings(samplings), limits,
                    copy_of, n_new, stats)


class _Engine:
  """The slots' state and the host loop of one continuous.generate call."""

  def __init__(self, config, params, slots, num_copies, stacked, length, adapters, weights,
               spec, stop_ids, chunk, min_prompt_len, prompt_cap):
    self.config, self.slots, self.num_copies, self.stacked = config, slots, num_copies, stacked
    self.spec, self.chunk, self.weights = spec, chunk, weights
    self.min_prompt_len, self.prompt_cap, self.length = min_prompt_len, prompt_cap, length
    self.stop_ids = jnp.asarray(tuple(config.eos_ids) + tuple(stop_ids), jnp.int32)
    self.prefill_params, self.decode_params = sampler.program_weights(
        config, params, slots, slots=stacked)
    per_layer = isinstance(self.decode_params["layers"], list)
    self.decode_adapters = _unstacked_adapters(config, adapters) if per_layer else adapters
    self.prefill_adapters = (self.decode_adapters
                             if isinstance(self.prefill_params["layers"], list) else adapters)
    lora = None if weights is None else weights.shape[1]
    state = _init_state(config, slots, length, lora, per_layer)
    if stacked:
      state = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_copies, *x.shape)).copy(), state)
    self.state = state
    self.signature = (config, spec, slots, num_copies, length, lora)

  def _note(self, kind: str, *shape) -> None:
    sampler._note_compile(  # pylint: disable=protected-access
        ("continuous", kind, *self.signature, *shape),
        f"continuous {kind} {shape}, {self.slots} slots x {self.length} tokens")

  def run(self, prompts, keys, settings, limits, copy_of, n_new, stats):
    n, slots, copies = len(prompts), self.slots, self.num_copies
    queues = [collections.deque(np.flatnonzero(copy_of == c).tolist()) for c in range(copies)]
    row_of = np.full((copies, slots), -1)
    free = np.ones((copies, slots), bool)
    tokens = np.full((n, n_new), self.config.pad_id, np.int32)
    logprobs = np.zeros((n, n_new), np.float32)
    lengths = np.zeros(n, np.int32)
    truncated = np.zeros(n, bool)
    stats = Stats() if stats is None else stats
    stats.rows, stats.slots = n, slots * copies
    stats.cache_bytes = cache_bytes(self.config, slots * copies, self.length)
    keys = np.asarray(keys)
    while True:
      taken = [[queue.popleft() for _ in range(min(int(free[c].sum()), len(queue)))]
               for c, queue in enumerate(queues)]
      if any(taken):
        ids, logp, done = self._refill(taken, free, prompts, keys, settings, limits)
        for c, rows in enumerate(taken):
          for j, (row, slot) in enumerate(zip(rows, np.flatnonzero(free[c])[:len(rows)])):
            tokens[row, 0], logprobs[row, 0], lengths[row] = ids[c, j], logp[c, j], 1
            row_of[c, slot] = row
            truncated[row] = not np.isin(ids[c, j], np.asarray(self.stop_ids))
            free[c, slot] = bool(done[c, j])
        stats.prefills += 1
        stats.slot_steps += sum(map(len, taken))
      if free.all() and not any(queues):
        break
      self._note("decode", self.chunk)
      self.state, out_tokens, out_logp, steps = _decode_program(
          self.config, self.spec, self.chunk, self.stacked, self.decode_params,
          self.decode_adapters, self.state, self.stop_ids)
      out_tokens, out_logp = np.asarray(out_tokens), np.asarray(out_logp)
      state = {k: np.asarray(self.state[k]) for k in ("steps", "done", "stopped")}
      if not self.stacked:
        out_tokens, out_logp = out_tokens[None], out_logp[None]
        state = {k: v[None] for k, v in state.items()}
      stats.chunks += 1
      stats.decode_steps += int(steps)
      stats.slot_steps += int(steps) * slots * copies
      for c, slot in zip(*np.nonzero(~free)):
        row = row_of[c, slot]
        new = int(state["steps"][c, slot]) - int(lengths[row])
        tokens[row, lengths[row]:lengths[row] + new] = out_tokens[c, slot, :new]
        logprobs[row, lengths[row]:lengths[row] + new] = out_logp[c, slot, :new]
        lengths[row] += new
        truncated[row] = not state["stopped"][c, slot]
        free[c, slot] = bool(state["done"][c, slot])
    stats.tokens = int(lengths.sum())
    return sampler.Generation(tokens, logprobs, lengths, truncated)

  def _refill(self, taken, free, prompts, keys, settings, limits):
    """One prefill program call for the rows `taken` per copy, into their free slots."""
    copies, slots = self.num_copies, self.slots
    count = max(map(len, taken))
    rows = min(sampler.bucket(count, 1), slots)
    longest = max(len(prompts[r]) for part in taken for r in part)
    prompt_len = min(sampler.bucket(longest, self.min_prompt_len), self.prompt_cap)
    pad_id = self.config.pad_id
    shape = (copies, rows)
    tokens, valid = np.full((*shape, prompt_len), pad_id, np.int32), np.zeros(
        (*shape, prompt_len), bool)
    slot_ids = np.full(shape, slots, np.int32)  # out of range: written nowhere
    row_keys = np.zeros((*shape, 2), np.uint32)
    row_settings = {k: np.zeros(shape, v.dtype) for k, v in settings.items()}
    row_limits = np.ones(shape, np.int32)
    weights = None if self.weights is None else np.zeros((*shape, self.weights.shape[1]),
                                                         np.float32)
    for c, part in enumerate(taken):
      if not part:
        continue
      tokens[c, :len(part)], valid[c, :len(part)] = sampler.left_pad(
          [prompts[r] for r in part], prompt_len, len(part), pad_id)
      slot_ids[c, :len(part)] = np.flatnonzero(free[c])[:len(part)]
      row_keys[c, :len(part)] = keys[part]
      for k, v in settings.items():
        row_settings[k][c, :len(part)] = v[part]
      row_limits[c, :len(part)] = limits[part]
      if weights is not None:
        weights[c, :len(part)] = self.weights[part]
    args = [tokens, valid, slot_ids, row_keys, row_settings, row_limits, weights]
    if not self.stacked:
      args = [None if a is None else jax.tree.map(lambda x: x[0], a) for a in args]
    self._note("prefill", rows, prompt_len)
    self.state, ids, logp, done = _prefill_program(
        self.config, self.spec, self.stacked, self.prefill_params, self.prefill_adapters,
        self.state, *jax.tree.map(jnp.asarray, args), self.stop_ids)
    out = [np.asarray(x) for x in (ids, logp, done)]
    return out if self.stacked else [x[None] for x in out]
