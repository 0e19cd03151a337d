"""LoRA adapters as PEFT adapter directories (adapter_config.json + adapter_model.safetensors).

A role's adapter is saved beside its merged model so one base checkpoint can
serve every role (multi-LoRA in vLLM, `PeftModel.from_pretrained` in
transformers). The module names come from the one checkpoint table
(weights.HF_TABLE), so the adapter's keys name exactly the base's modules.

Our layout: `a` [L, D_in, R] and `b` [L, R, D_out], applied as x @ a @ b and
already scaled (the caller folds each slot's alpha/r into `b`). PEFT's:
lora_A.weight [R, D_in], lora_B.weight [D_out, R], scaled by lora_alpha / r;
saving with lora_alpha = r makes that scale 1.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np
from safetensors.numpy import save_file

from marl_jax.models.weights import HF_TABLE

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_PREFIX = "base_model.model."


def module_names() -> dict[str, str]:
  """Linear name ('q', 'gate', ...) -> HF module pattern with '{layer}' (from HF_TABLE)."""
  names = {}
  for rule in HF_TABLE.rules:
    if rule.path and rule.path.startswith("layers/") and rule.key.endswith("_proj.weight"):
      names[rule.path.split("/", 1)[1]] = rule.key[:-len(".weight")]
  return names


def save_adapter(layers: Mapping[str, tuple[np.ndarray, np.ndarray]], directory: str,
                 base_model: str = "") -> None:
  """Writes one PEFT LoRA adapter: layers maps a linear name to (a [L, D_in, R],
  b [L, R, D_out]) with the scale already in b."""
  if not layers:
    raise ValueError("save_adapter got no adapted layers; a role without LoRA slots has no "
                     "adapter to export (its merged model is the export).")
  names = module_names()
  unknown = sorted(set(layers) - set(names))
  if unknown:
    raise ValueError(f"Adapted layers {unknown} have no Hugging Face module name; known: "
                     f"{sorted(names)}.")
  ranks = {int(np.shape(a)[-1]) for a, _ in layers.values()}
  if len(ranks) != 1:
    raise ValueError(f"Every adapted layer must have one rank for a PEFT adapter; got {ranks}.")
  (rank,) = ranks
  tensors = {}
  for name, (a, b) in layers.items():
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    for layer in range(a.shape[0]):
      module = _PREFIX + names[name].format(layer=layer)
      tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(a[layer].T)
      tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(b[layer].T)
  os.makedirs(directory, exist_ok=True)
  save_file(tensors, os.path.join(directory, WEIGHTS_FILE), metadata={"format": "pt"})
  adapter_config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
      "target_modules": sorted(names[n].rsplit(".", 1)[-1] for n in layers),
      "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
      "inference_mode": True, "base_model_name_or_path": base_model, "modules_to_save": None}
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(adapter_config, f, indent=2)
