"""One decoder for Qwen3, Qwen2 and Llama, as pure functions over a param pytree.

Parameters are a plain dict; per-layer tensors are stacked on a leading layer
axis so the layer loop is one `lax.scan` (compile time independent of depth):

  embed [V, D]; final_norm [D]; lm_head [D, V] (untied only)
  layers/attn_norm [L, D], q [L, D, H*hd], k, v [L, D, K*hd], o [L, H*hd, D],
         q_bias [L, H*hd], k_bias, v_bias [L, K*hd] (Qwen2),
         q_norm, k_norm [L, hd] (Qwen3),
         mlp_norm [L, D], gate, up [L, D, F], down [L, F, D]

Projections run on flattened [B*S, D] activations (XLA:CPU's backward of a
batched [B, S, D] @ W is several times slower than the flat matmul).

Adapters (LoRA, any number of slots) ride along: `adapters['layers'][name]`
holds `a` [L, D_in, S*r] and `b` [L, S*r, D_out] for S slots of rank r, and
`adapter_weights` [B, S] says how much of each slot's low-rank update every
batch row receives (alpha/r for the row's slots, 0 elsewhere). Rows of
different roles thus share one matmul: x @ A_all, mask to the row's slots,
@ B_all -- no gather, no Python loop over roles.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.models import cpu_kernels
from marl_jax.models.config import ModelConfig, as_dtype

Params = dict[str, Any]
LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")
UNROLL_MAX_LAYERS = 4  # deeper stacks scan: compile time independent of depth
# Activation recompute in the backward pass (config.rl.remat): 'none' keeps
# every layer's activations; 'layer' keeps only each layer's input and
# recomputes the layer (jax.checkpoint of the layer body); 'dots' keeps the
# layer's projection outputs too and recomputes the attention and elementwise
# work (jax.checkpoint_policies.dots_with_no_batch_dims_saveable).
REMAT_POLICIES = ("none", "layer", "dots")
_NEG_INF = -1e30


def linear_shapes(config: ModelConfig) -> dict[str, tuple[int, int]]:
  """(in, out) features of every linear layer, by name."""
  d, f = config.hidden_size, config.intermediate_size
  hq, hk = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  return {"q": (d, hq), "k": (d, hk), "v": (d, hk), "o": (hq, d),
          "gate": (d, f), "up": (d, f), "down": (f, d)}


def init_params(config: ModelConfig, rng: jax.Array) -> Params:
  """Random parameters (normal, std 0.02; norms at one), in config.param_dtype."""
  dtype = as_dtype(config.param_dtype)
  n_layers, d = config.num_layers, config.hidden_size
  shapes = {name: (n_layers, *io) for name, io in linear_shapes(config).items()}
  shapes["embed"] = (config.vocab_size, d)
  if not config.tie_embeddings:
    shapes["lm_head"] = (d, config.vocab_size)
  keys = dict(zip(sorted(shapes), jax.random.split(rng, len(shapes))))

  def normal(name):
    return (0.02 * jax.random.normal(keys[name], shapes[name], jnp.float32)).astype(dtype)

  layers = {name: normal(name) for name in LINEAR_NAMES}
  layers["attn_norm"] = jnp.ones((n_layers, d), dtype)
  layers["mlp_norm"] = jnp.ones((n_layers, d), dtype)
  if config.qk_norm:
    layers["q_norm"] = jnp.ones((n_layers, config.head_dim), dtype)
    layers["k_norm"] = jnp.ones((n_layers, config.head_dim), dtype)
  if config.attention_bias:
    for name in ("q", "k", "v"):
      layers[f"{name}_bias"] = jnp.zeros((n_layers, shapes[name][-1]), dtype)
  params = {"embed": normal("embed"), "layers": layers,
            "final_norm": jnp.ones((d,), dtype)}
  if not config.tie_embeddings:
    params["lm_head"] = normal("lm_head")
  return params


def param_shapes(config: ModelConfig) -> Params:
  """ShapeDtypeStructs of the parameters, computed without allocating them."""
  return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))


def count_params(config: ModelConfig) -> int:
  """Number of parameters, from `jax.eval_shape` (no allocation)."""
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(param_shapes(config)))


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return (x32 * weight.astype(jnp.float32)).astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> jax.Array:
  """Inverse RoPE frequencies [hd/2], with the config's rope_theta and scaling."""
  hd = config.head_dim
  inv = 1.0 / (config.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  scaling = config.rope_scaling_dict
  kind = scaling.get("rope_type", scaling.get("type"))
  if kind == "linear":
    inv = inv / scaling["factor"]
  elif kind == "llama3":
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv / factor + smooth * inv
    inv = jnp.where(wavelen > old_len / low, inv / factor, inv)
    is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    inv = jnp.where(is_medium, smoothed, inv)
  return inv


def rope_tables(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
  """cos and sin [B, S, 1, hd/2] of positions [B, S] times the frequencies."""
  angles = positions.astype(jnp.float32)[..., None, None] * inv_freq
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotates x [B, S, heads, hd] by `rope_tables` (rotate-half convention, as HF)."""
  cos, sin = tables
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Transposed:
  """A kernel stored output-major, t [..., D_out, D_in]: the decode layout.

  XLA:CPU multiplies a few rows by a weight 1.3-1.8x faster as W [out, in]
  @ x^T (output [out, rows]) than as x @ W [in, out]: [16, 576] @ the
  [576, 49152] LM head takes 14-24 ms one way and 8 ms the other. XLA
  rewrites the product and a transpose back into the slow form, and it lays a
  transpose out in place of a copy, so the kernels are transposed by a
  separate program before decoding (`decode_layout`).
  """
  t: jax.Array

  @classmethod
  def of(cls, w: jax.Array) -> "Transposed":
    """The output-major copy of a stored [..., D_in, D_out] kernel."""
    return cls(jnp.swapaxes(w, -1, -2))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Packed:
  """A kernel packed for `cpu_kernels.skinny_matmul`, p [..., panels, D_in, 6]:
  the CPU decode layout where the hand-written kernel runs (decode_layout)."""
  p: jax.Array
  d_out: int = dataclasses.field(metadata=dict(static=True))

  @classmethod
  def of(cls, w: jax.Array) -> "Packed":
    """The packed copy of a stored [..., D_in, D_out] kernel."""
    return cls(cpu_kernels.pack(w), w.shape[-1])


# Up to this many rows, products by a Transposed kernel take the [out, rows]
# form, and, where the CPU kernels do not run (packs_for_decode), a CPU decode
# step reads the output-major layout from models this wide. Interleaved A/B of generate (64 new tokens), layout over stored kernels:
# 16 rows 0.93x at hidden 128, 1.16x at 256, 1.2-1.3x at 384-576 (SmolLM2
# 1.37x); 64 rows 0.91-1.10x.
SKINNY_ROWS = 32
DECODE_LAYOUT_MIN_HIDDEN = 256


def project(x: jax.Array, w: Any, dtype: Any = None) -> jax.Array:
  """x [N, D_in] @ w, where w is [D_in, D_out], Transposed or Packed (float32).

  Few rows by an output-major kernel (a decode step on a CPU) run as
  (W x^T)^T, with a barrier that keeps XLA from rewriting them back.
  """
  if isinstance(w, Packed):
    return cpu_kernels.skinny_matmul(x, w.p, w.d_out)
  if not isinstance(w, Transposed):
    return x @ (w if dtype is None else w.astype(dtype))
  wt = w.t if dtype is None else w.t.astype(dtype)
  if x.shape[0] > SKINNY_ROWS:
    return x @ wt.T
  return jax.lax.optimization_barrier(wt @ x.T).T


def _dense(x, w, adapter, route, dtype):
  """x [B, S, D_in] @ w, plus the routed low-rank update of every adapter slot."""
  b, s, d_in = x.shape
  flat = x.reshape(b * s, d_in)
  y = 0.0 if w is None else project(flat, w, dtype)
  if adapter is not None:
    xa = (flat @ adapter["a"].astype(dtype)).reshape(b, s, -1) * route[:, None, :]
    y = y + xa.reshape(b * s, -1) @ adapter["b"].astype(dtype)
  return y.reshape(b, s, -1)


def _attend(q, k, v, mask, config: ModelConfig, kernel: bool = False):
  """Grouped-query attention of q [B,S,H,hd] over k/v [B,K,T,hd] (mask [B,S,T]).

  Keys and values are head-major ([B,K,T,hd]), the layout of the KV cache,
  so decoding attends to the cache without a per-step transpose. With
  `kernel`, one query per row runs as cpu_kernels.decode_attention.
  """
  b, s, _, hd = q.shape
  n_kv, group = config.num_kv_heads, config.group_size
  if kernel and s == 1:
    q = q.reshape(b, n_kv, group, hd) * (1.0 / math.sqrt(hd))
    return cpu_kernels.decode_attention(q, k, v, mask[:, 0]).reshape(b, 1, -1)
  # Batched matmuls over (batch, kv head), the query heads of a group stacked
  # along the query axis: the 5-D einsum with a separate group axis ran
  # through XLA:CPU's slow generic loops (4x slower forward). Keys and values
  # are not reshaped to (batch x kv head): a reshape of the freshly written
  # cache made XLA fuse (and so duplicate) the cache write into two
  # consumers, which cost two copies of every layer's cache per token.
  q = q.reshape(b, s, n_kv, group, hd).transpose(0, 2, 3, 1, 4) * (1.0 / math.sqrt(hd))
  q = q.reshape(b, n_kv, group * s, hd)
  scores = jnp.einsum("bkqd,bktd->bkqt", q, k.astype(q.dtype),
                      preferred_element_type=jnp.float32).reshape(b, n_kv, group, s, -1)
  logits = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(b, n_kv, group * s, -1)
  out = jnp.einsum("bkqt,bktd->bkqd", probs, v.astype(v.dtype))
  out = out.reshape(b, n_kv, group, s, hd)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, s, n_kv * group * hd)


def _write_cache(cache, kv, cache_index, layer_index):
  """Writes a layer's new k/v [B,K,S,hd] at slot cache_index; returns (the
  written cache, the layer's keys and values to attend to).

  A per-layer cache is written and read whole. A stacked [L, ...] cache (the
  scan's carry) is written in place at [layer_index] and only that layer's
  slice is read. Writing before attending (instead of attending to the old
  cache and the new tokens apart) leaves no reader of the old buffer, so XLA
  updates it in place: the other order made XLA:CPU copy every layer's cache
  twice per decoded token.
  """
  stacked = layer_index is not None
  if jnp.ndim(cache_index):  # a slot per row [B] (continuous batching): one scatter
    start = (layer_index,) * stacked + (0, 0, 0)
    write = lambda c, n, i: jax.lax.dynamic_update_slice(c, n[(None,) * stacked],
                                                         start[:-2] + (i, 0))
    new = tuple(jax.vmap(write, in_axes=(int(stacked), 0, 0), out_axes=int(stacked))(
        c, n.astype(c.dtype), cache_index) for c, n in zip(cache, kv))
  else:
    start = (layer_index,) * stacked + (0, 0, cache_index, 0)
    new = tuple(jax.lax.dynamic_update_slice(c, n.astype(c.dtype)[(None,) * stacked], start)
                for c, n in zip(cache, kv))
  return new, tuple(c[layer_index] for c in new) if stacked else new


def _layer(config, h, layer, adapters, *, route, rope, mask, cache,
           cache_index=0, layer_index=None):
  dtype = as_dtype(config.compute_dtype)
  b, s, _ = h.shape
  eps = config.rms_norm_eps
  lora = adapters or {}

  def dense(x, name):
    return _dense(x, layer[name], lora.get(name), route, dtype)

  def dense_group(x, names):
    """Projections of one input; a single matmul when the layer holds them fused."""
    fused = "+".join(names)
    if fused not in layer:
      return [dense(x, name) for name in names]
    outs = jnp.split(_dense(x, layer[fused], None, route, dtype),
                     np.cumsum([layer_sizes[n] for n in names])[:-1].tolist(), axis=-1)
    return [y if name not in lora else y + _dense(x, None, lora[name], route, dtype)
            for y, name in zip(outs, names)]

  layer_sizes = {name: io[1] for name, io in linear_shapes(config).items()}
  x = rms_norm(h, layer["attn_norm"], eps)
  q, k, v = dense_group(x, ("q", "k", "v"))
  if config.attention_bias:
    q = q + layer["q_bias"].astype(dtype)
    k = k + layer["k_bias"].astype(dtype)
    v = v + layer["v_bias"].astype(dtype)
  q = q.reshape(b, s, config.num_heads, config.head_dim)
  k = k.reshape(b, s, config.num_kv_heads, config.head_dim)
  v = v.reshape(b, s, config.num_kv_heads, config.head_dim)
  if config.qk_norm:
    q = rms_norm(q, layer["q_norm"], eps)
    k = rms_norm(k, layer["k_norm"], eps)
  q, k = apply_rope(q, rope), apply_rope(k, rope)
  kv = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # head-major [B, K, S, hd]
  if cache is not None:
    kv, (k, v) = _write_cache(cache, kv, cache_index, layer_index)
  else:
    k, v = kv
  # The decode layout's Packed kernels mean the CPU kernels are built and run.
  attention = _attend(q, k, v, mask, config, kernel=isinstance(layer["o"], Packed))
  h = h + dense(attention, "o")
  x = rms_norm(h, layer["mlp_norm"], eps)
  gate, up = dense_group(x, ("gate", "up"))
  h = h + dense(jax.nn.silu(gate) * up, "down")
  return h, kv


def embed_tokens(config: ModelConfig, params: Params, tokens: jax.Array) -> jax.Array:
  dtype = as_dtype(config.compute_dtype)
  if config.one_hot_embed:
    return jax.nn.one_hot(tokens, config.vocab_size, dtype=dtype) @ params["embed"].astype(dtype)
  return params["embed"][tokens].astype(dtype)


def forward_hidden(
    config: ModelConfig,
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    valid: jax.Array,
    *,
    cache: tuple[jax.Array, jax.Array] | None = None,
    cache_valid: jax.Array | None = None,
    cache_index: jax.Array | int = 0,
    adapters: Params | None = None,
    adapter_weights: jax.Array | None = None,
    remat: bool | str | None = False,
    rope: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  """Runs the decoder; returns (final-normed hidden [B, S, D], keys and values).

  Args:
    tokens, positions: [B, S] token ids and RoPE positions.
    valid: [B, S] which of the tokens are real (False on left padding).
    cache: optional (k, v), each [L, B, K, T, hd], of earlier tokens (a list
      of per-layer (k, v) [B, K, T, hd] when params["layers"] is unstacked).
      The new tokens' keys and values are written at slots cache_index ..
      cache_index + S - 1 first (cache_index: a scalar, or [B]: a slot per
      row); each query then attends to the cache's slots up to its own where
      cache_valid [B, T] (and `valid` at the new slots).
      Without a cache the second result is the new tokens' (k, v), each
      [L, B, K, S, hd] (prefill); with one, it is the written cache (in place
      under jit when the cache is donated or carried by a loop).
    adapters, adapter_weights: LoRA slots and per-row routing (module doc).
    remat: a REMAT_POLICIES name (True: 'layer', False / None: 'none'): what
      of each layer the backward pass recomputes instead of keeping.
    rope: the `rope_tables` of `positions`, when the caller computed them
      (the sampler, once for every decode step: computed inside the step,
      XLA:CPU fuses the cosine and sine into each layer's q and k and
      evaluates them once per element, ~0.1 ms a SmolLM2 layer).
  """
  s = tokens.shape[1]
  if cache is None:
    mask = jnp.tril(jnp.ones((s, s), bool))[None] & valid[:, None, :]
  elif jnp.ndim(cache_index):  # each row at its own slot (continuous batching)
    t = cache_valid.shape[1]
    slots = cache_index[:, None] + jnp.arange(s)  # [B, S]
    cache_valid = cache_valid.at[jnp.arange(tokens.shape[0])[:, None], slots].set(valid)
    mask = (jnp.arange(t) <= slots[..., None]) & cache_valid[:, None, :]
  else:
    t = cache_valid.shape[1]
    cache_valid = jax.lax.dynamic_update_slice(cache_valid, valid, (0, cache_index))
    causal = jnp.arange(t)[None, :] <= cache_index + jnp.arange(s)[:, None]  # [S, T]
    mask = causal[None] & cache_valid[:, None, :]
  if rope is None:
    rope = rope_tables(positions, rope_inv_freq(config))
  h = embed_tokens(config, params, tokens)
  lora_layers = None if adapters is None else adapters["layers"]
  route = None
  if lora_layers is not None:
    first = lora_layers[0] if isinstance(lora_layers, list) else lora_layers
    rank = next(iter(first.values()))["a"].shape[-1] // adapter_weights.shape[-1]
    route = jnp.repeat(adapter_weights.astype(h.dtype), rank, axis=-1)
  layer_fn = functools.partial(_layer, config, route=route, rope=rope, mask=mask,
                               cache_index=cache_index)
  if isinstance(params["layers"], list):
    # Unstacked layers (see `unstack`): a Python loop over separate buffers.
    # XLA:CPU copies a layer's weights out of stacked arrays on every
    # iteration of a scan, which triples the memory traffic of a decode step.
    new_kv = []
    for i, layer in enumerate(params["layers"]):
      h, kv = layer_fn(h, layer, None if lora_layers is None else lora_layers[i],
                       cache=None if cache is None else cache[i])
      new_kv.append(kv)
    return rms_norm(h, params["final_norm"], config.rms_norm_eps), new_kv

  def body(carry, xs):
    # With a cache, the whole stacked cache is the carry, written in place at
    # each layer's index; without one, each layer's (k, v) is an output.
    h, stacked = carry
    layer, lora, index = xs
    h, kv = layer_fn(h, layer, lora, cache=stacked, layer_index=index)
    return ((h, None), kv) if stacked is None else ((h, kv), None)

  body = _remat(body, remat)
  # Shallow stacks are unrolled: a scan's backward pass stacks every layer's
  # residuals into zero-initialised [L, ...] buffers and slices them back out,
  # which cost a 2-layer tiny model's update more than its matmuls.
  (h, written), new_kv = jax.lax.scan(
      body, (h, cache), (params["layers"], lora_layers, jnp.arange(config.num_layers)),
      unroll=config.num_layers <= UNROLL_MAX_LAYERS)
  return rms_norm(h, params["final_norm"], config.rms_norm_eps), (
      new_kv if cache is None else written)


def remat_name(remat: bool | str | None) -> str:
  """The REMAT_POLICIES name of `remat` (a name, or True for 'layer', False / None for 'none')."""
  if remat is None or isinstance(remat, bool):
    return "layer" if remat else "none"
  if remat not in REMAT_POLICIES:
    raise ValueError(f"rl.remat={remat!r} is unknown; valid: {REMAT_POLICIES} ('layer' "
                     "recomputes each layer in the backward pass; 'none' keeps everything).")
  return remat


def _remat(body, remat: bool | str | None):
  name = remat_name(remat)
  if name == "none":
    return body
  policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if name == "dots" else None
  return jax.checkpoint(body, prevent_cse=False, policy=policy)


def unstack(tree: Any, num_layers: int, fuse: bool = False, kernel: Any = None) -> list:
  """Splits a pytree stacked on a leading layer axis into a list of per-layer pytrees.

  With fuse, each layer's q/k/v and gate/up weights are concatenated into one
  'q+k+v' and one 'gate+up' matrix: fewer, larger matmuls for decoding. With
  kernel (`Transposed.of` or `Packed.of`), the linear kernels take that form.
  """
  layers = [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(num_layers)]
  for layer in layers:
    for group in (("q", "k", "v"), ("gate", "up")) if fuse else ():
      layer["+".join(group)] = jnp.concatenate([layer.pop(n) for n in group], axis=-1)
    for name in [n for n in layer if kernel and set(n.split("+")) <= set(LINEAR_NAMES)]:
      layer[name] = kernel(layer[name])
  return layers


def packs_for_decode(config: ModelConfig) -> bool:
  """Whether the CPU decode layout should be `Packed` for cpu_kernels:
  float32 weights and compute, and the kernels built for this CPU."""
  f32 = as_dtype(config.param_dtype) == as_dtype(config.compute_dtype) == jnp.float32
  return f32 and cpu_kernels.available()


def decode_layout(config: ModelConfig, params: Params, packed: bool = False) -> Params:
  """The parameters as a CPU decode step reads them best: unstacked layers,
  fused q/k/v and gate/up, and kernels `Packed` for the hand-written kernels
  (`packed`; see packs_for_decode), else output-major (`Transposed`), the LM
  head too. Run it as its own program: inside the decode program XLA lays
  the transposes out in place and the products stay in the slow form."""
  kernel = Packed.of if packed else Transposed.of
  out = {**params, "layers": unstack(params["layers"], config.num_layers, fuse=True,
                                     kernel=kernel)}
  if "lm_head" in params or packed:
    out["lm_head"] = kernel(params["embed"].T if config.tie_embeddings else params["lm_head"])
  return out


def lm_head(config: ModelConfig, params: Params) -> Any:
  """The output projection: params['lm_head'] ([D, V], or the decode layout's
  form of it), else the tied embedding [V, D] as `Transposed`."""
  return params["lm_head"] if "lm_head" in params else Transposed(params["embed"])


def logits_from_hidden(config: ModelConfig, params: Params, hidden: jax.Array) -> jax.Array:
  dtype = as_dtype(config.compute_dtype)
  shape = hidden.shape
  flat = hidden.reshape(-1, shape[-1]).astype(dtype)
  head = lm_head(config, params)
  if dtype == jnp.float32:
    return project(flat, head, dtype).reshape(*shape[:-1], -1)
  head = head.t.T if isinstance(head, Transposed) else head  # f32 logits of bf16 products
  return jnp.dot(flat, head.astype(dtype), preferred_element_type=jnp.float32).reshape(
      *shape[:-1], -1)


def forward_logits(config: ModelConfig, params: Params, tokens: jax.Array) -> jax.Array:
  """float32 logits [B, S, V] of a full forward over unpadded tokens [B, S]."""
  b, s = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(s), (b, s))
  hidden, _ = forward_hidden(config, params, tokens, positions, jnp.ones((b, s), bool))
  return logits_from_hidden(config, params, hidden)


def left_pad_positions(valid: jax.Array) -> jax.Array:
  """RoPE positions for a left-padded batch: 0 at each row's first real token."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=-1) - 1, 0)
