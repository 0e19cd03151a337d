"""Models: one decoder for Qwen3 / Qwen2 / Llama, presets, checkpoints, LoRA."""

from marl_jax.models.config import ModelConfig
from marl_jax.models.decoder import (count_params, forward_hidden, forward_logits, init_params, param_shapes)
from marl_jax.models.hf_checkpoint import load_pretrained, save_pretrained
from marl_jax.models.presets import PRESETS, get_preset
from marl_jax.models.weights import CheckpointError

__all__ = [
    "ModelConfig", "PRESETS", "count_params", "forward_hidden", "forward_logits",
    "get_preset", "init_params", "param_shapes",
    "CheckpointError", "load_pretrained", "save_pretrained",
]
