"""The one declarative map between checkpoint tensors and decoder parameters.

A `Table` is a list of `Rule`s: checkpoint key pattern ('{layer}' stands for
the layer index) -> param path ('layers/q'), a condition on the config, and the
transforms that turn the stored tensor into our layout (module docstring of
`decoder.py`: linear weights [in, out], layers stacked on a leading axis).
`load_params` reads any table through a `TensorSource` (safetensors shards or a
GGUF file); `export_tensors` inverts a table for saving. Nothing else knows a
checkpoint key name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Protocol

import jax.numpy as jnp
import numpy as np

from marl_jax.models.config import ModelConfig
from marl_jax.models.decoder import Params, param_shapes

Shape = tuple[int, ...]


class CheckpointError(ValueError):
  """A checkpoint does not match what the config and the table expect."""


class TensorSource(Protocol):
  """Read access to a checkpoint's named tensors, without loading all of them."""

  where: str  # the file or directory, for error messages

  def keys(self) -> Iterable[str]: ...

  def shape(self, key: str) -> Shape: ...

  def read(self, key: str) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Transform:
  """A reversible map from a stored tensor to our layout.

  to_param / to_checkpoint take (array, config); checkpoint_shape maps our
  (per-layer) shape to the stored one, so shapes are checked before reading.
  """

  to_param: Callable[[np.ndarray, ModelConfig], np.ndarray]
  to_checkpoint: Callable[[np.ndarray, ModelConfig], np.ndarray]
  checkpoint_shape: Callable[[Shape], Shape] = lambda shape: shape


def _gguf_unpermute(rows_of: str) -> Transform:
  """llama.cpp's q/k row permutation of *llama* models, undone (and redone).

  convert_hf_to_gguf.py reorders each head's rows from rotate-half to
  interleaved pairs; transformers' LlamaTensorProcessor reverses it the same
  way. Qwen2/Qwen3 GGUFs are not permuted, so this is the identity for them.
  """

  def heads(config):
    return config.num_heads if rows_of == "q" else config.num_kv_heads

  def unpermute(w, config):
    if config.architecture != "llama":
      return w
    n = heads(config)
    return w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

  def permute(w, config):
    if config.architecture != "llama":
      return w
    n = heads(config)
    return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

  return Transform(unpermute, permute)


TRANSFORMS: dict[str, Transform] = {
    # torch nn.Linear and GGUF store [out, in]; we store [in, out].
    "transpose": Transform(lambda w, c: w.T, lambda w, c: w.T, lambda s: s[::-1]),
    "gguf_unpermute_q": _gguf_unpermute("q"),
    "gguf_unpermute_k": _gguf_unpermute("k"),
}

# Conditions under which a rule applies.
CONDITIONS: dict[str, Callable[[ModelConfig], bool]] = {
    "always": lambda c: True,
    "untied": lambda c: not c.tie_embeddings,
    "tied": lambda c: c.tie_embeddings,
    "qk_norm": lambda c: c.qk_norm,
    "attention_bias": lambda c: c.attention_bias,
}


@dataclasses.dataclass(frozen=True)
class Rule:
  """One checkpoint tensor (per layer if `key` holds '{layer}') <-> one param.

  path=None marks a tensor that may be present and is read past (e.g. a tied
  checkpoint that still stores lm_head.weight); it is never written.
  Transforms apply left to right on load and are inverted right to left on save.
  """

  key: str
  path: str | None
  transforms: tuple[str, ...] = ()
  when: str = "always"

  @property
  def per_layer(self) -> bool:
    return "{layer}" in self.key


@dataclasses.dataclass(frozen=True)
class Table:
  """A checkpoint format: its rules, plus key patterns (regex) read past."""

  name: str
  rules: tuple[Rule, ...]
  ignored: tuple[str, ...] = ()


_T = ("transpose",)

HF_TABLE = Table("Hugging Face safetensors", (
    Rule("model.embed_tokens.weight", "embed"),
    Rule("model.norm.weight", "final_norm"),
    Rule("lm_head.weight", "lm_head", _T, when="untied"),
    Rule("lm_head.weight", None, when="tied"),
    Rule("model.layers.{layer}.input_layernorm.weight", "layers/attn_norm"),
    Rule("model.layers.{layer}.post_attention_layernorm.weight", "layers/mlp_norm"),
    Rule("model.layers.{layer}.self_attn.q_proj.weight", "layers/q", _T),
    Rule("model.layers.{layer}.self_attn.k_proj.weight", "layers/k", _T),
    Rule("model.layers.{layer}.self_attn.v_proj.weight", "layers/v", _T),
    Rule("model.layers.{layer}.self_attn.o_proj.weight", "layers/o", _T),
    Rule("model.layers.{layer}.self_attn.q_proj.bias", "layers/q_bias", when="attention_bias"),
    Rule("model.layers.{layer}.self_attn.k_proj.bias", "layers/k_bias", when="attention_bias"),
    Rule("model.layers.{layer}.self_attn.v_proj.bias", "layers/v_bias", when="attention_bias"),
    Rule("model.layers.{layer}.self_attn.q_norm.weight", "layers/q_norm", when="qk_norm"),
    Rule("model.layers.{layer}.self_attn.k_norm.weight", "layers/k_norm", when="qk_norm"),
    Rule("model.layers.{layer}.mlp.gate_proj.weight", "layers/gate", _T),
    Rule("model.layers.{layer}.mlp.up_proj.weight", "layers/up", _T),
    Rule("model.layers.{layer}.mlp.down_proj.weight", "layers/down", _T),
), ignored=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",))

# GGUF names (llama.cpp's gguf.constants); dequantized arrays are [out, in] as in torch.
GGUF_TABLE = Table("GGUF", (
    Rule("token_embd.weight", "embed"),
    Rule("output_norm.weight", "final_norm"),
    Rule("output.weight", "lm_head", _T, when="untied"),
    Rule("blk.{layer}.attn_norm.weight", "layers/attn_norm"),
    Rule("blk.{layer}.ffn_norm.weight", "layers/mlp_norm"),
    Rule("blk.{layer}.attn_q.weight", "layers/q", ("gguf_unpermute_q", "transpose")),
    Rule("blk.{layer}.attn_k.weight", "layers/k", ("gguf_unpermute_k", "transpose")),
    Rule("blk.{layer}.attn_v.weight", "layers/v", _T),
    Rule("blk.{layer}.attn_output.weight", "layers/o", _T),
    Rule("blk.{layer}.attn_q.bias", "layers/q_bias", ("gguf_unpermute_q",), when="attention_bias"),
    Rule("blk.{layer}.attn_k.bias", "layers/k_bias", ("gguf_unpermute_k",), when="attention_bias"),
    Rule("blk.{layer}.attn_v.bias", "layers/v_bias", when="attention_bias"),
    Rule("blk.{layer}.attn_q_norm.weight", "layers/q_norm", when="qk_norm"),
    Rule("blk.{layer}.attn_k_norm.weight", "layers/k_norm", when="qk_norm"),
    Rule("blk.{layer}.ffn_gate.weight", "layers/gate", _T),
    Rule("blk.{layer}.ffn_up.weight", "layers/up", _T),
    Rule("blk.{layer}.ffn_down.weight", "layers/down", _T),
))


def _get_path(tree: Params, path: str) -> Any:
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _set_path(tree: Params, path: str, value: Any) -> None:
  *parents, leaf = path.split("/")
  for part in parents:
    tree = tree.setdefault(part, {})
  tree[leaf] = value


def _leaf_paths(tree: Params, prefix: str = "") -> list[str]:
  paths = []
  for name, value in tree.items():
    if isinstance(value, dict):
      paths += _leaf_paths(value, f"{prefix}{name}/")
    else:
      paths.append(f"{prefix}{name}")
  return paths


def _stored_shape(rule: Rule, shape: Shape) -> Shape:
  for name in reversed(rule.transforms):
    shape = TRANSFORMS[name].checkpoint_shape(shape)
  return shape


def _active_rules(table: Table, config: ModelConfig) -> list[Rule]:
  return [rule for rule in table.rules if CONDITIONS[rule.when](config)]


def _keys_of(rule: Rule, config: ModelConfig) -> list[str]:
  if rule.per_layer:
    return [rule.key.format(layer=i) for i in range(config.num_layers)]
  return [rule.key]


def _summarise(keys: list[str]) -> str:
  head = ", ".join(repr(k) for k in keys[:3])
  return head + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def check_tensors(table: Table, config: ModelConfig, source: TensorSource) -> None:
  """Raises one CheckpointError if any tensor is missing, unexpected or mis-shaped."""
  shapes = param_shapes(config)
  present = set(source.keys())
  expected, optional = {}, set()
  for rule in _active_rules(table, config):
    keys = _keys_of(rule, config)
    if rule.path is None:
      optional.update(keys)
      continue
    per_tensor = tuple(_get_path(shapes, rule.path).shape)[1 if rule.per_layer else 0:]
    expected.update({key: (rule, _stored_shape(rule, per_tensor)) for key in keys})
  hint = (f"The {table.name} checkpoint {source.where} does not match its config "
          f"({config.architecture}, {config.num_layers} layers, tie_embeddings="
          f"{config.tie_embeddings}); fix the config or use the matching checkpoint.")
  missing = sorted(k for k in expected if k not in present)
  if missing:
    raise CheckpointError(f"Missing tensor {_summarise(missing)}. {hint}")
  ignored = re.compile("|".join(table.ignored)) if table.ignored else None
  unexpected = sorted(k for k in present - expected.keys() - optional
                      if not (ignored and ignored.fullmatch(k)))
  if unexpected:
    raise CheckpointError(f"Unexpected tensor {_summarise(unexpected)}. {hint}")
  for key, (rule, want) in expected.items():
    got = tuple(source.shape(key))
    if got != want:
      raise CheckpointError(
          f"Tensor {key!r} has shape {got} in {source.where} but the config expects "
          f"{want} (for param {rule.path!r}). {hint}")


def _to_param(rule: Rule, array: np.ndarray, config: ModelConfig) -> np.ndarray:
  for name in rule.transforms:
    array = TRANSFORMS[name].to_param(array, config)
  return array


def load_params(table: Table, config: ModelConfig, source: TensorSource,
                dtype: Any = jnp.float32) -> Params:
  """Reads every tensor the table names into the decoder's param pytree.

  Per-layer tensors are written one by one into a preallocated [L, ...] array,
  so peak host memory is one param group plus one stored tensor.
  """
  check_tensors(table, config, source)
  np_dtype = np.dtype(jnp.dtype(dtype))
  params: Params = {}
  for rule in _active_rules(table, config):
    if rule.path is None:
      continue
    keys = _keys_of(rule, config)
    if not rule.per_layer:
      _set_path(params, rule.path, jnp.asarray(
          _to_param(rule, source.read(keys[0]), config).astype(np_dtype)))
      continue
    first = _to_param(rule, source.read(keys[0]), config)
    stacked = np.empty((len(keys), *first.shape), np_dtype)
    stacked[0] = first
    for i, key in enumerate(keys[1:], start=1):
      stacked[i] = _to_param(rule, source.read(key), config)
    _set_path(params, rule.path, jnp.asarray(stacked))
  return params


def export_tensors(table: Table, config: ModelConfig, params: Params) -> dict[str, np.ndarray]:
  """Inverts the table: checkpoint key -> contiguous numpy tensor, for saving."""
  shapes = param_shapes(config)
  written = {rule.path for rule in _active_rules(table, config) if rule.path}
  extra = sorted(set(_leaf_paths(params)) - written)
  if extra:
    raise CheckpointError(
        f"params hold {extra}, which {table.name} has no key for under this config "
        f"({config.architecture}, tie_embeddings={config.tie_embeddings}, qk_norm="
        f"{config.qk_norm}, attention_bias={config.attention_bias}); pass matching params.")
  tensors = {}
  for rule in _active_rules(table, config):
    if rule.path is None:
      continue
    try:
      value = np.asarray(_get_path(params, rule.path))
    except KeyError:
      raise CheckpointError(
          f"params lack {rule.path!r}, which {table.name} key {rule.key!r} needs for "
          f"this config; pass params made for it (init_params / load_pretrained).") from None
    want = tuple(_get_path(shapes, rule.path).shape)
    if value.shape != want:
      raise CheckpointError(
          f"param {rule.path!r} has shape {value.shape} but the config expects {want}.")
    slices = list(value) if rule.per_layer else [value]
    for key, array in zip(_keys_of(rule, config), slices):
      for name in reversed(rule.transforms):
        array = TRANSFORMS[name].to_checkpoint(array, config)
      tensors[key] = np.ascontiguousarray(array)
  return tensors
