"""Jitted generation: prefill and KV-cache decode, sampling, per-token logprobs.

Shapes are bucketed (batch, prompt length) so a run compiles a bounded number
of programs; every new compiled shape is logged and counted
(`compiled_shapes()`). Completions include their stop token (the policy must
be trained on it) and the logprob of every sampled token under the sampling
distribution softmax(logits / temperature) (temperature 1 when greedy),
before top-k / top-p truncation: the same quantity the RL loss recomputes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import weakref
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.generate import draw
from marl_jax.generate.draw import SamplingParams
from marl_jax.models import decoder
from marl_jax.models.config import ModelConfig, as_dtype
from marl_jax.models.cpu_kernels import selection
from marl_jax.parallel import sharding

_COMPILED: set[tuple] = set()


@dataclasses.dataclass
class Generation:
  """A batch of completions (numpy, one row per prompt).

  tokens: [B, N] sampled ids including the stop token, pad_id after it.
  logprobs: [B, N] logprob of each sampled token (0 after the stop token).
  lengths: [B] tokens generated, the stop token included.
  truncated: [B] True where no stop token came within max_new_tokens.
  """

  tokens: np.ndarray
  logprobs: np.ndarray
  lengths: np.ndarray
  truncated: np.ndarray

  def completion(self, i: int) -> list[int]:
    return self.tokens[i, : self.lengths[i]].tolist()


def bucket(n: int, minimum: int = 8) -> int:
  """Smallest power of two >= max(n, minimum): the padded size of a dimension."""
  size = minimum
  while size < n:
    size *= 2
  return size


def compiled_shapes() -> int:
  """Number of distinct generation programs compiled in this process."""
  return len(_COMPILED)


def left_pad(prompts: Sequence[Sequence[int]], length: int, batch: int, pad_id: int):
  """Left-pads token lists into [batch, length] ids and a validity mask."""
  tokens = np.full((batch, length), pad_id, np.int32)
  valid = np.zeros((batch, length), bool)
  for i, prompt in enumerate(prompts):
    if not len(prompt):
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token.")
    if len(prompt) > length:
      raise ValueError(f"prompt {i} has {len(prompt)} tokens, more than the {length} allowed.")
    tokens[i, length - len(prompt):] = prompt
    valid[i, length - len(prompt):] = True
  return tokens, valid


def unroll_default() -> bool:
  """Unstacked layers on CPU, where a scan copies each layer's weights every step."""
  return jax.default_backend() == "cpu"


@functools.partial(jax.jit, static_argnames=("config", "slots", "packed"))
def _decode_layout(config: ModelConfig, params, slots: bool = False, packed: bool = False):
  """decoder.decode_layout (per slot with `slots`) as a program of its own:
  inside the decode program XLA would lay the transposes out in place."""
  layout = functools.partial(decoder.decode_layout, config, packed=packed)
  return (jax.vmap(layout) if slots else layout)(params)


# The decode layouts of the weights last decoded from, most recent first: (key,
# weak references to the weights, layout, token), at most LAYOUTS_KEPT. A
# rollout's stages, and every step of a LoRA run (whose base never changes),
# decode from the same arrays; an entry dies with them. ~0.2-0.3 s of a
# SmolLM2 call at 16 rows. Two are kept so that alternating callers (shared
# and per-slot calls, or an A/B of the CPU kernels) do not rebuild each time.
_LAYOUTS: list = []
LAYOUTS_KEPT = 2


def _forget_layout(token: object) -> None:
  _LAYOUTS[:] = [e for e in _LAYOUTS if e[3] is not token]


def _decode_params(config: ModelConfig, params, rows: int, slots: bool = False):
  """The weights a CPU decode step of `rows` rows reads fastest
  (decoder.decode_layout), or None: the decode step then uses `params`.

  Packed for the hand-written kernels where they run and win (measured once
  per machine and shape, cpu_kernels.selection): on an AVX2 machine, A/B of
  generate (64 new tokens) against XLA's products on the stored kernels,
  tiny_s/m/l at 16-512 rows 1.22-1.73x; on an AVX-512 EPYC, SmolLM2 at 16
  rows ~1.17x, tiny_m at 64 rows 0.92x. Otherwise output-major, which only
  pays for few rows of wide models (decoder.SKINNY_ROWS)."""
  if not unroll_default():
    return None  # an accelerator: the kernels are never built there
  packed = (decoder.packs_for_decode(config)
            and selection.kernels_win(config, rows, _kernel_probe))
  if not packed and (rows > decoder.SKINNY_ROWS
                     or config.hidden_size < decoder.DECODE_LAYOUT_MIN_HIDDEN):
    return None
  leaves = jax.tree_util.tree_leaves(params)
  if not all(isinstance(x, jax.Array) for x in leaves):  # numpy arrays can change in place
    return _decode_layout(config, params, slots, packed)
  # The same jax arrays (identical objects, immutable) hold the same values.
  key = (config, slots, packed, jax.tree_util.tree_structure(params))
  for entry in _LAYOUTS:
    if entry[0] == key and all(r() is x for r, x in zip(entry[1], leaves)):
      _LAYOUTS[:] = [entry] + [e for e in _LAYOUTS if e is not entry]
      return entry[2]
  layout, token = _decode_layout(config, params, slots, packed), object()
  refs = [weakref.ref(x, lambda _, t=token: _forget_layout(t)) for x in leaves]
  _LAYOUTS[:] = [(key, refs, layout, token)] + _LAYOUTS[:LAYOUTS_KEPT - 1]
  return layout


@contextlib.contextmanager
def _kernel_probe(config: ModelConfig, params, rows: int):
  """A call of `rows` rows (16-token prompts, 16 new tokens where the model's
  positions allow) with the CPU kernels and one without, for
  cpu_kernels.selection to time; their programs are not counted in
  compiled_shapes()."""
  length = max(1, min(16, config.max_position_embeddings // 4))
  prompts = [[3 + (i + j) % (config.vocab_size - 3) for j in range(length)] for i in range(rows)]
  sampling = SamplingParams(temperature=1.0, max_new_tokens=length)

  def call(kernels: bool):
    def run():
      with selection.forced(kernels):
        return generate(config.replace(eos_ids=()), params, prompts, jax.random.PRNGKey(0),
                        sampling, min_batch=rows, min_prompt_len=1).tokens
    return run

  counted = set(_COMPILED)
  try:
    yield {"kernels": call(True), "xla": call(False)}
  finally:
    _COMPILED.intersection_update(counted)


def _unstacked(config: ModelConfig, params):
  return {**params, "layers": decoder.unstack(params["layers"], config.num_layers, fuse=True)}


def decode_weights(config: ModelConfig, params, rows: int):
  """The weights a CPU decode step of `rows` rows multiplies by: the decode
  layout, or the stored kernels one array per layer (q/k/v and gate/up fused)."""
  layout = _decode_params(config, params, rows)
  return _unstacked(config, params) if layout is None else layout


@functools.partial(jax.jit, static_argnums=0)
def _unstacked_slots(config: ModelConfig, params):
  return jax.vmap(functools.partial(_unstacked, config))(params)


def program_weights(config: ModelConfig, params, rows: int, slots: bool = False):
  """(prefill, decode) weights of an engine that prefills and decodes in programs
  of their own (marl_jax.generate.continuous), as _generate reads them: on a CPU
  the stored kernels and the decode layout, or the stored kernels one array per
  layer for both (`decode_weights`); elsewhere `params` for both. With `slots`,
  params carry a leading slot axis."""
  if not unroll_default():
    return params, params
  layout = _decode_params(config, params, rows, slots)
  if layout is not None:
    return params, layout
  unstacked = _unstacked_slots(config, params) if slots else _unstacked(config, params)
  return unstacked, unstacked


@functools.partial(jax.jit, static_argnames=("config", "sampling", "spec", "unroll"))
def _generate(config: ModelConfig, sampling: SamplingParams, spec: draw.DrawSpec, params,
              tokens, valid, keys, settings, limits, adapters, adapter_weights,
              decode_params=None, unroll: bool = False):
  """Prefill with `params`, decode with `decode_params` (decoder.decode_layout:
  the prefill's many rows multiply best by the stored kernels) when given;
  with `unroll`, prefill and decode read the stored kernels one array per
  layer: one copy of the weights per call, where a scan copies each layer's
  weights out of the stack at every decode step on CPU. Row b draws with
  keys[b] and its `settings` (draw.sample) and stops after limits[b] tokens
  (<= sampling.max_new_tokens); the loop ends when every row has stopped."""
  # Rows over the mesh's batch axes when one is set (jax.set_mesh); no-ops otherwise.
  tokens, valid, adapter_weights = sharding.constrain_rows(tokens, valid, adapter_weights)
  batch, prompt_len = tokens.shape
  n_new = sampling.max_new_tokens
  total = prompt_len + n_new
  dtype = as_dtype(config.compute_dtype)
  cache_valid = jnp.concatenate([valid, jnp.ones((batch, n_new), bool)], axis=1)
  positions = decoder.left_pad_positions(valid)
  layout, unroll = decode_params is not None, unroll or decode_params is not None
  if unroll:
    decode_adapters = None if adapters is None else {
        "layers": decoder.unstack(adapters["layers"], config.num_layers)}
  if unroll and not layout:
    params = decode_params = _unstacked(config, params)
    adapters = decode_adapters
  hidden, kv = decoder.forward_hidden(config, params, tokens, positions, valid,
                                      adapters=adapters, adapter_weights=adapter_weights)
  logits = decoder.logits_from_hidden(config, params, hidden[:, -1:])[:, 0]
  if unroll:
    if layout:  # the prefill's stacked [L, ...] keys and values, per layer
      kv = [tuple(c[i] for c in kv) for i in range(config.num_layers)]
    params, adapters = decode_params, decode_adapters
    pad = ((0, 0), (0, 0), (0, n_new), (0, 0))
    cache = sharding.constrain_kv_cache(
        [tuple(jnp.pad(c.astype(dtype), pad) for c in layer_kv) for layer_kv in kv])
  else:
    pad = ((0, 0), (0, 0), (0, 0), (0, n_new), (0, 0))
    cache = sharding.constrain_kv_cache(tuple(jnp.pad(c.astype(dtype), pad) for c in kv))
  model = functools.partial(decoder.forward_hidden, config, params,
                            adapters=adapters, adapter_weights=adapter_weights)
  stop_ids = jnp.asarray(tuple(config.eos_ids) + tuple(sampling.stop_ids), jnp.int32)
  first, first_logp = draw.sample(keys, jnp.zeros((batch,), jnp.int32), logits, spec, settings)
  out_tokens = jnp.full((batch, n_new), config.pad_id, jnp.int32).at[:, 0].set(first)
  out_logp = jnp.zeros((batch, n_new), jnp.float32).at[:, 0].set(first_logp)
  stopped = jnp.isin(first, stop_ids)
  lengths = jnp.ones((batch,), jnp.int32)
  next_pos = positions[:, -1] + 1
  # Every decode step's RoPE tables, computed before the loop (forward_hidden's rope).
  rope = decoder.rope_tables(next_pos[:, None] + jnp.arange(max(n_new - 1, 1)),
                             decoder.rope_inv_freq(config))

  def cond(state):
    step, _, _, stopped, _, _, lengths = state
    return (step < n_new) & ~jnp.all(stopped | (lengths >= limits))

  def body(state):
    step, cache, last, stopped, out_tokens, out_logp, lengths = state
    done = stopped | (lengths >= limits)
    slot = prompt_len + step - 1
    step_rope = tuple(jax.lax.dynamic_slice_in_dim(t, step - 1, 1, axis=1) for t in rope)
    hidden, cache = model(last[:, None], (next_pos + step - 1)[:, None],
                          jnp.ones((batch, 1), bool), cache=cache, cache_valid=cache_valid,
                          cache_index=slot, rope=step_rope)
    cache = sharding.constrain_kv_cache(cache)
    logits = decoder.logits_from_hidden(config, params, hidden)[:, 0]
    ids, logp = draw.sample(keys, jnp.full((batch,), step), logits, spec, settings)
    ids = jnp.where(done, config.pad_id, ids)
    out_tokens = out_tokens.at[:, step].set(ids)
    out_logp = out_logp.at[:, step].set(jnp.where(done, 0.0, logp))
    lengths = lengths + (~done).astype(jnp.int32)
    stopped = stopped | (~done & jnp.isin(ids, stop_ids))
    return step + 1, cache, ids, stopped, out_tokens, out_logp, lengths

  state = (jnp.int32(1), cache, first, stopped, out_tokens, out_logp, lengths)
  _, _, _, stopped, out_tokens, out_logp, lengths = jax.lax.while_loop(cond, body, state)
  return out_tokens, out_logp, lengths, ~stopped


def _pad_inputs(caller: str, config: ModelConfig, prompts: Sequence[Sequence[int]],
                sampling: SamplingParams, rows: int, min_prompt_len: int, adapters: Any,
                adapter_weights: np.ndarray | None):
  """Left-padded [rows, P] tokens and mask, adapter weights padded to rows, and P.

  P is the prompt-length bucket, capped so that P + max_new_tokens fits the
  model's positions whenever the longest prompt does.
  """
  n = len(prompts)
  if n == 0:
    raise ValueError(f"{caller}() got no prompts.")
  longest = max(len(p) for p in prompts)
  room = config.max_position_embeddings - sampling.max_new_tokens
  if longest > room:
    raise ValueError(
        f"a prompt of {longest} tokens + max_new_tokens {sampling.max_new_tokens} exceeds "
        f"the model's max_position_embeddings={config.max_position_embeddings}; "
        "shorten the prompts or lower max_new_tokens.")
  prompt_len = min(bucket(longest, min_prompt_len), room)
  tokens, valid = left_pad(prompts, prompt_len, rows, config.pad_id)
  weights = None
  if adapters is not None:
    if adapter_weights is None or len(adapter_weights) != n:
      raise ValueError(f"{caller}(adapters=...) needs adapter_weights with one row per prompt.")
    weights = np.zeros((rows, np.shape(adapter_weights)[1]), np.float32)
    weights[:n] = adapter_weights
  return tokens, valid, weights, prompt_len


def _note_compile(signature: tuple, description: str) -> None:
  """Counts and logs each distinct compiled generation shape."""
  if signature not in _COMPILED:
    _COMPILED.add(signature)
    logging.info("sampler: compiling shape #%d (%s)", len(_COMPILED), description)


def row_inputs(sampling: SamplingParams, rng: jax.Array, n: int, rows: int,
               limits: Sequence[int] | None = None, row_ids: Sequence[int] | None = None):
  """Each of `rows` rows' key (draw.row_keys: row i of the n real ones draws
  with fold_in(rng, row_ids[i]) (default i), or its own key of a per-row [n, 2]
  rng), draw settings and token limit (limits, each <= sampling.max_new_tokens;
  default that)."""
  n_new = sampling.max_new_tokens
  keys = draw.row_keys(rng, n, row_ids)
  keys = jnp.concatenate([keys, jnp.zeros((rows - n, 2), keys.dtype)]) if rows > n else keys
  settings = {k: jnp.asarray(v) for k, v in draw.row_settings([sampling] * rows).items()}
  if limits is None:
    limits = [n_new] * n
  limits = np.asarray(limits, np.int32)
  if len(limits) != n or limits.min(initial=1) < 1 or limits.max(initial=1) > n_new:
    raise ValueError(f"limits must give each of the {n} rows a token limit in [1, "
                     f"max_new_tokens={n_new}], got {limits.tolist()}.")
  return keys, settings, jnp.asarray(np.pad(limits, (0, rows - n), constant_values=1))


def generate(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]],
    rng: jax.Array,
    sampling: SamplingParams = SamplingParams(),
    *,
    adapters: Any = None,
    adapter_weights: np.ndarray | None = None,
    limits: Sequence[int] | None = None,
    row_ids: Sequence[int] | None = None,
    min_batch: int = 8,
    min_prompt_len: int = 16,
) -> Generation:
  """Samples one completion per prompt (token lists of any lengths).

  The batch and the prompt length are padded up to power-of-two buckets;
  padded rows are dropped from the result. `adapter_weights` [B, S] routes
  each row to its LoRA slots (see marl_jax.models.decoder). Row i draws from
  its own key (`row_inputs`: fold_in(rng, row_ids[i]) with row_ids [B]
  defaulting to 0..B-1, or rng[i] for per-row keys [B, 2]), so its tokens do
  not depend on the other rows; `limits` [B] cuts rows at their own token
  limit (truncated there).
  """
  n = len(prompts)
  batch = bucket(n, min_batch)
  tokens, valid, adapter_weights, prompt_len = _pad_inputs(
      "generate", config, prompts, sampling, batch, min_prompt_len, adapters, adapter_weights)
  _note_compile((config, sampling, batch, prompt_len, adapters is not None,
                 None if adapter_weights is None else adapter_weights.shape[1]),
                f"batch {batch}, prompt {prompt_len}, new {sampling.max_new_tokens}")
  adapter_weights = None if adapter_weights is None else jnp.asarray(adapter_weights)
  keys, settings, limits = row_inputs(sampling, rng, n, batch, limits, row_ids)
  out = _generate(config, sampling, draw.DrawSpec.of([sampling]), params, jnp.asarray(tokens),
                  jnp.asarray(valid), keys, settings, limits, adapters, adapter_weights,
                  _decode_params(config, params, batch), unroll=unroll_default())
  out_tokens, out_logp, lengths, truncated = (np.asarray(x)[:n] for x in out)
  return Generation(out_tokens, out_logp, lengths, truncated)


def slot_layout(slots: Sequence[int], num_slots: int,
                min_batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """Groups batch rows by slot for per-slot sub-batches.

  Returns (index, position): index [num_slots, sub] holds the row ids of each
  slot's sub-batch, padded with len(slots) (a dummy row), sub a power-of-two
  bucket of the largest slot's row count; position [n] is each row's place in
  the flattened [num_slots * sub] layout, to scatter results back.
  """
  slots = np.asarray(slots, np.int64)
  n = len(slots)
  if n and (slots.min() < 0 or slots.max() >= num_slots):
    raise ValueError(f"slot ids must lie in [0, {num_slots}), got {sorted(set(slots.tolist()))}.")
  counts = np.bincount(slots, minlength=num_slots)
  sub = bucket(int(counts.max(initial=1)), min_batch)
  order = np.argsort(slots, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  within = np.arange(n) - starts[slots[order]]
  index = np.full((num_slots, sub), n, np.int32)
  index[slots[order], within] = order
  position = np.empty(n, np.int32)
  position[order] = slots[order] * sub + within
  return index, position


@functools.partial(jax.jit, static_argnames=("config", "sampling"))
def _generate_slots(config: ModelConfig, sampling: SamplingParams, params, tokens, valid, keys,
                    settings, limits, adapters, adapter_weights, decode_params=None):
  def one_slot(slot_params, slot_tokens, slot_valid, slot_keys, slot_settings, slot_limits,
               weights, slot_decode):
    return _generate(config, sampling, draw.DrawSpec.of([sampling]), slot_params, slot_tokens,
                     slot_valid, slot_keys, slot_settings, slot_limits, adapters, weights,
                     slot_decode)
  weights_axis = None if adapter_weights is None else 0
  return jax.vmap(one_slot, in_axes=(0, 0, 0, 0, 0, 0, weights_axis, 0),
                  spmd_axis_name=sharding.slot_axis(tokens.shape[0]))(
      params, tokens, valid, keys, settings, limits, adapter_weights, decode_params)


def generate_slots(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]],
    slots: Sequence[int],
    rng: jax.Array,
    sampling: SamplingParams = SamplingParams(),
    *,
    adapters: Any = None,
    adapter_weights: np.ndarray | None = None,
    limits: Sequence[int] | None = None,
    row_ids: Sequence[int] | None = None,
    min_batch: int = 8,
    min_prompt_len: int = 16,
) -> Generation:
  """Like generate(), with params stacked on a leading slot axis and one slot per row.

  Rows are grouped into per-slot sub-batches (`slot_layout`) and one jitted,
  vmapped call runs every slot's sub-batch with that slot's parameters. Row i
  draws with the key generate() gives it, so the tokens equal those of
  generate() on each slot's rows with the same key.
  """
  n = len(prompts)
  if len(slots) != n:
    raise ValueError(f"generate_slots() got {len(slots)} slot ids for {n} prompts.")
  num_slots = jax.tree_util.tree_leaves(params)[0].shape[0]
  index, position = slot_layout(slots, num_slots, min_batch)
  # Row n is padding: slot_layout fills empty sub-batch places with it.
  tokens, valid, weights, prompt_len = _pad_inputs(
      "generate_slots", config, prompts, sampling, n + 1, min_prompt_len, adapters,
      adapter_weights)
  weights = None if weights is None else jnp.asarray(weights[index])
  _note_compile(("slots", config, sampling, num_slots, index.shape[1], prompt_len,
                 adapters is not None, None if weights is None else weights.shape[-1]),
                f"{num_slots} slots x batch {index.shape[1]}, prompt {prompt_len}, "
                f"new {sampling.max_new_tokens}")
  keys, settings, limits = row_inputs(sampling, rng, n, n + 1, limits, row_ids)
  out = _generate_slots(config, sampling, params, jnp.asarray(tokens[index]),
                        jnp.asarray(valid[index]), keys[index],
                        {k: v[index] for k, v in settings.items()}, limits[index],
                        adapters, weights,
                        _decode_params(config, params, index.shape[1], slots=True))
  flat = (np.asarray(x).reshape(-1, *x.shape[2:])[position] for x in out)
  out_tokens, out_logp, lengths, truncated = flat
  return Generation(out_tokens, out_logp, lengths, truncated)
