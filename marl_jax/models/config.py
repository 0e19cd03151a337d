"""ModelConfig: the one description of a Qwen3 / Qwen2 / Llama decoder."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ARCHITECTURES = ("qwen3", "qwen2", "llama")
ROPE_SCALING_TYPES = ("linear", "llama3")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: Any) -> Any:
  """Maps 'float32' / 'bfloat16' / a jnp dtype to a jnp dtype, with a clear error."""
  if isinstance(name, str):
    if name not in _DTYPES:
      raise ValueError(f"dtype {name!r} is not supported; use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]
  return jnp.dtype(name).type


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of a decoder-only transformer.

  Attributes:
    architecture: 'qwen3' (per-head q/k RMSNorm before RoPE), 'qwen2' (q/k/v
      bias) or 'llama' (SmolLM2).
    vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
    num_kv_heads, head_dim: shapes; num_heads must be a multiple of
      num_kv_heads (grouped-query attention).
    rope_theta: RoPE base frequency, read from the checkpoint config.
    rope_scaling: None, or a dict with 'rope_type' in ROPE_SCALING_TYPES.
    rms_norm_eps: epsilon of every RMSNorm.
    tie_embeddings: whether the LM head reuses the embedding matrix.
    attention_bias: q/k/v projections carry a bias (Qwen2).
    qk_norm: per-head RMSNorm on q and k before RoPE (Qwen3).
    max_position_embeddings: longest supported sequence.
    param_dtype: storage dtype of parameters.
    compute_dtype: dtype of matmuls; norms, softmax and logits stay float32.
    bos_id / eos_ids / pad_id: special tokens (eos_ids may hold several).
    one_hot_embed: embed by one-hot matmul instead of a gather; faster on
      XLA:CPU for tiny vocabularies (the gather's backward is a scatter).
  """

  architecture: str = "qwen3"
  vocab_size: int = 256
  hidden_size: int = 64
  intermediate_size: int = 192
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  rope_theta: float = 10000.0
  rope_scaling: tuple | None = None  # sorted (key, value) pairs; a dict is accepted
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = True
  attention_bias: bool = False
  qk_norm: bool = True
  max_position_embeddings: int = 2048
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  bos_id: int | None = None
  eos_ids: tuple[int, ...] = (1,)
  pad_id: int = 0
  one_hot_embed: bool = False

  def __post_init__(self):
    if self.architecture not in ARCHITECTURES:
      raise ValueError(
          f"ModelConfig.architecture={self.architecture!r} is unknown; "
          f"use one of {ARCHITECTURES}.")
    for field in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                  "num_heads", "num_kv_heads", "head_dim"):
      if int(getattr(self, field)) <= 0:
        raise ValueError(f"ModelConfig.{field} must be positive, got {getattr(self, field)}.")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
          f"num_kv_heads={self.num_kv_heads} (grouped-query attention).")
    if self.head_dim % 2:
      raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE.")
    if isinstance(self.rope_scaling, dict):  # keep the config hashable for jit
      object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
    if self.rope_scaling is not None:
      kind = self.rope_scaling_dict.get("rope_type", self.rope_scaling_dict.get("type"))
      if kind not in ROPE_SCALING_TYPES:
        raise ValueError(
            f"ModelConfig.rope_scaling type {kind!r} is not implemented; supported: "
            f"{ROPE_SCALING_TYPES} (or None). Remove it only if you know the "
            "checkpoint does not rely on it.")
    as_dtype(self.param_dtype)
    as_dtype(self.compute_dtype)
    if isinstance(self.eos_ids, int) or isinstance(self.eos_ids, list):
      object.__setattr__(self, "eos_ids", tuple(
          [self.eos_ids] if isinstance(self.eos_ids, int) else self.eos_ids))

  @property
  def rope_scaling_dict(self) -> dict:
    return dict(self.rope_scaling or ())

  @property
  def group_size(self) -> int:
    return self.num_heads // self.num_kv_heads

  def replace(self, **kwargs) -> "ModelConfig":
    return dataclasses.replace(self, **kwargs)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)
