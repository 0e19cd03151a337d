"""Checkpoint entry points: Hugging Face directories (import/export) and GGUF files (import).

Tensors are read with the safetensors numpy API (no torch) through
`weights.HF_TABLE`; exported directories load in
`transformers.AutoModelForCausalLM.from_pretrained`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from marl_jax.models.config import ROPE_SCALING_TYPES, ModelConfig
from marl_jax.models.decoder import Params
from marl_jax.models.gguf_checkpoint import load_gguf
from marl_jax.models.weights import HF_TABLE, CheckpointError, export_tensors, load_params

HF_CLASSES = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_ARCH_OF_CLASS = {cls: arch for arch, cls in HF_CLASSES.items()}
# Structural features each HF class implies; ModelConfigs outside these cannot round-trip.
_FEATURES = {"qwen3": dict(qk_norm=True, attention_bias=False),
             "qwen2": dict(qk_norm=False, attention_bias=True),
             "llama": dict(qk_norm=False, attention_bias=False)}
# transformers' class defaults for fields a config.json may omit.
_DEFAULTS = {"qwen3": dict(max_position_embeddings=32768, head_dim=128),
             "qwen2": dict(max_position_embeddings=32768),
             "llama": dict(max_position_embeddings=2048)}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist; a Hugging Face checkpoint directory "
                            "needs config.json and model.safetensors (or its index).")
  with open(path) as f:
    return json.load(f)


def _architecture(hf: dict, where: str) -> str:
  classes = hf.get("architectures") or []
  for cls in classes:
    if cls in _ARCH_OF_CLASS:
      return _ARCH_OF_CLASS[cls]
  if not classes and hf.get("model_type") in HF_CLASSES:
    return hf["model_type"]
  raise ValueError(
      f"{where}: architectures={classes} / model_type={hf.get('model_type')!r} is not "
      f"supported; supported: {sorted(_ARCH_OF_CLASS)} (model_type {sorted(HF_CLASSES)}).")


def _rope(hf: dict, where: str) -> tuple[float, dict | None]:
  """(rope_theta, rope_scaling) from top-level keys or transformers 5's rope_parameters."""
  # Priority as in transformers: rope_scaling, then rope_parameters; top-level rope_theta
  # fills in a dict without one.
  scaling = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
  if any(isinstance(value, dict) for value in scaling.values()):
    raise ValueError(f"{where}: per-layer-type rope_parameters are not supported.")
  theta = scaling.get("rope_theta", hf.get("rope_theta", 10000.0))
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if float(scaling.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))) != 1.0:
    raise ValueError(f"{where}: partial_rotary_factor != 1 is not supported by the decoder.")
  if kind == "default":
    return float(theta), None
  if kind not in ROPE_SCALING_TYPES:
    raise ValueError(f"{where}: rope type {kind!r} is not supported; the decoder implements "
                     f"'default' and {ROPE_SCALING_TYPES}.")
  scaling = {k: v for k, v in scaling.items()
             if k not in ("type", "rope_theta", "partial_rotary_factor")}
  scaling["rope_type"] = kind
  if kind == "llama3":  # transformers' default for a missing original length
    default_length = _DEFAULTS["llama"]["max_position_embeddings"]
    scaling.setdefault("original_max_position_embeddings",
                       hf.get("max_position_embeddings", default_length))
  return float(theta), scaling


def _special_ids(hf: dict, generation: dict) -> dict:
  eos = []
  for source in (hf, generation):
    value = source.get("eos_token_id")
    for token in (value if isinstance(value, list) else [value]):
      if token is not None and token not in eos:
        eos.append(int(token))
  def first(field):
    value = hf.get(field)
    return generation.get(field) if value is None else value

  pad = first("pad_token_id")
  return dict(bos_id=first("bos_token_id"), eos_ids=tuple(eos),
              pad_id=int((eos[0] if eos else 0) if pad is None else pad))


def config_from_hf(hf: dict, where: str = "config.json", generation: dict | None = None,
                   dtype: Any = jnp.float32) -> ModelConfig:
  """Translates a transformers config.json dict (and generation_config.json) to a ModelConfig."""
  arch = _architecture(hf, where)
  defaults = _DEFAULTS[arch]
  for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
    if field not in hf:
      raise ValueError(f"{where} lacks {field!r}; it is required for {HF_CLASSES[arch]}.")
  unsupported = {
      "use_sliding_window": bool(hf.get("use_sliding_window", False)),
      "layer_types": any(t != "full_attention" for t in hf.get("layer_types") or []),
      "hidden_act": hf.get("hidden_act", "silu") != "silu",
      "mlp_bias": bool(hf.get("mlp_bias", False)),
      # Llama / Qwen3 attention_bias also puts a bias on o_proj, which the decoder lacks.
      "attention_bias": arch != "qwen2" and bool(hf.get("attention_bias", False)),
  }
  for field, bad in unsupported.items():
    if bad:
      raise ValueError(f"{where}: {field}={hf.get(field)!r} is not supported by the decoder "
                       "(full attention, SiLU MLP without bias only).")
  heads = hf["num_attention_heads"]
  head_dim = hf.get("head_dim") or defaults.get("head_dim") or hf["hidden_size"] // heads
  theta, scaling = _rope(hf, where)
  name = jnp.dtype(dtype).name
  return ModelConfig(
      architecture=arch, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=head_dim, rope_theta=theta, rope_scaling=scaling,
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_position_embeddings=hf.get("max_position_embeddings",
                                     defaults["max_position_embeddings"]),
      param_dtype=name, compute_dtype=name, **_FEATURES[arch],
      **_special_ids(hf, generation or {}))


def config_to_hf(config: ModelConfig) -> dict:
  """The config.json a transformers 4.x or 5.x loader reads back as `config`."""
  arch = config.architecture
  features = {k: getattr(config, k) for k in _FEATURES[arch]}
  if features != _FEATURES[arch]:
    raise ValueError(
        f"ModelConfig(architecture={arch!r}, {features}) has no transformers class; "
        f"{HF_CLASSES[arch]} means {_FEATURES[arch]}.")
  scaling = config.rope_scaling_dict or None
  eos = list(config.eos_ids)
  hf = dict(
      architectures=[HF_CLASSES[arch]], model_type=arch, vocab_size=config.vocab_size,
      hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      num_key_value_heads=config.num_kv_heads, head_dim=config.head_dim, hidden_act="silu",
      max_position_embeddings=config.max_position_embeddings,
      rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=config.tie_embeddings,
      rope_theta=config.rope_theta, rope_scaling=scaling,
      rope_parameters={"rope_type": "default", **(scaling or {}),
                       "rope_theta": config.rope_theta},
      bos_token_id=config.bos_id, eos_token_id=(eos[0] if len(eos) == 1 else eos or None),
      pad_token_id=config.pad_id, torch_dtype=config.param_dtype, dtype=config.param_dtype)
  if arch != "qwen2":
    hf["attention_bias"] = False
  if arch != "llama":
    hf["use_sliding_window"] = False
  return hf


class SafetensorsSource:
  """One model.safetensors, or the shards an index.json names, read lazily."""

  def __init__(self, directory: str):
    self.where = directory
    index_path = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index_path):
      self._file_of = _read_json(index_path).get("weight_map") or {}
      if not self._file_of:
        raise CheckpointError(f"{index_path} has no 'weight_map'; re-save the checkpoint.")
    elif os.path.isfile(os.path.join(directory, SINGLE_FILE)):
      self._file_of = None
    else:
      raise FileNotFoundError(
          f"{directory} holds neither {SINGLE_FILE} nor {INDEX_FILE}; point at a "
          "Hugging Face checkpoint directory saved with safetensors.")
    self._handles: dict[str, Any] = {}
    if self._file_of is None:
      self._file_of = {key: SINGLE_FILE for key in self._open(SINGLE_FILE).keys()}

  def _open(self, name: str):
    if name not in self._handles:
      path = os.path.join(self.where, name)
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is named in {INDEX_FILE} but does not exist; "
                                "copy the missing shard or re-save the checkpoint.")
      self._handles[name] = safe_open(path, framework="numpy")
    return self._handles[name]

  def keys(self) -> Iterable[str]:
    return self._file_of.keys()

  def shape(self, key: str) -> tuple[int, ...]:
    return tuple(self._open(self._file_of[key]).get_slice(key).get_shape())

  def read(self, key: str) -> np.ndarray:
    return self._open(self._file_of[key]).get_tensor(key)


def load_hf(directory: str, dtype: Any = jnp.float32) -> tuple[ModelConfig, Params]:
  """(config, params) of a local Hugging Face checkpoint directory."""
  config_path = os.path.join(directory, "config.json")
  hf = _read_json(config_path)
  generation_path = os.path.join(directory, "generation_config.json")
  generation = _read_json(generation_path) if os.path.isfile(generation_path) else {}
  config = config_from_hf(hf, config_path, generation, dtype)
  return config, load_params(HF_TABLE, config, SafetensorsSource(directory), dtype)


def generation_config(config: ModelConfig) -> dict[str, Any]:
  """generation_config.json of an exported model: its special ids."""
  eos = list(config.eos_ids)
  return {"bos_token_id": config.bos_id, "eos_token_id": eos[0] if len(eos) == 1 else eos,
          "pad_token_id": config.pad_id}


def _shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
  shards, size = [{}], 0
  for key, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_bytes:
      shards.append({})
      size = 0
    shards[-1][key] = array
    size += array.nbytes
  return shards


def save_hf(config: ModelConfig, params: Params, directory: str,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
  """Writes config.json and model.safetensors (sharded with an index above max_shard_bytes)."""
  hf = config_to_hf(config)
  tensors = export_tensors(HF_TABLE, config, params)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  # transformers' and vLLM's generate stop on generation_config's eos ids (Qwen3
  # has two); without the file a reloaded model would stop on the first only.
  with open(os.path.join(directory, "generation_config.json"), "w") as f:
    json.dump(generation_config(config), f, indent=2)
  for name in os.listdir(directory):  # stale weights of an earlier save would shadow ours
    if name == INDEX_FILE or (name.startswith("model") and name.endswith(".safetensors")):
      os.remove(os.path.join(directory, name))
  shards = _shards(tensors, max_shard_bytes)
  metadata = {"format": "pt"}  # transformers expects it on every safetensors file
  if len(shards) == 1:
    save_file(shards[0], os.path.join(directory, SINGLE_FILE), metadata=metadata)
    return
  weight_map = {}
  for i, shard in enumerate(shards, start=1):
    name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(directory, name), metadata=metadata)
    weight_map.update({key: name for key in shard})
  index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
           "weight_map": weight_map}
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump(index, f, indent=2)


def load_pretrained(path: str, dtype: Any = jnp.float32) -> tuple[ModelConfig, Params]:
  """(config, params) of a Hugging Face checkpoint directory or a .gguf file.

  config.param_dtype and compute_dtype are set to dtype; replace them as needed.
  """
  path = os.fspath(path)
  if path.endswith(".gguf"):
    return load_gguf(path, dtype)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path} is neither a checkpoint directory nor a .gguf file.")
  return load_hf(path, dtype)


def save_pretrained(config: ModelConfig, params: Params, path: str,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
  """Writes a Hugging Face directory that transformers' from_pretrained loads."""
  save_hf(config, params, os.fspath(path), max_shard_bytes)
