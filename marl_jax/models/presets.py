"""Named model configurations: the study's Qwen3 scales, SmolLM2 and tiny CPU sizes."""

from __future__ import annotations

from marl_jax.models.config import ModelConfig

# Values of the official Hugging Face config.json files.
_QWEN3_COMMON = dict(
    architecture="qwen3", vocab_size=151936, head_dim=128, num_kv_heads=8,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_embeddings=True,
    max_position_embeddings=40960, qk_norm=True, attention_bias=False,
    bos_id=None, eos_ids=(151645, 151643), pad_id=151643)

# Tiny models use the character tokenizer (marl_jax.models.tokenizers.CharTokenizer):
# pad 0, bos 1, eos 2, vocabulary of 128 ids.
_TINY_COMMON = dict(
    architecture="qwen3", vocab_size=128, rope_theta=10_000.0, rms_norm_eps=1e-6,
    tie_embeddings=True, max_position_embeddings=512, qk_norm=True,
    bos_id=1, eos_ids=(2,), pad_id=0, one_hot_embed=True)

PRESETS: dict[str, ModelConfig] = {
    "qwen3_0_6b": ModelConfig(
        hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
        **_QWEN3_COMMON),
    "qwen3_1_7b": ModelConfig(
        hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
        **_QWEN3_COMMON),
    "qwen3_4b": ModelConfig(
        hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
        **_QWEN3_COMMON),
    "smollm2_135m": ModelConfig(
        architecture="llama", vocab_size=49152, hidden_size=576,
        intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3,
        head_dim=64, rope_theta=100_000.0, rms_norm_eps=1e-5,
        tie_embeddings=True, max_position_embeddings=8192, qk_norm=False,
        attention_bias=False, bos_id=1, eos_ids=(2,), pad_id=2),
    # Three tiny scales stand in for 0.6B / 1.7B / 4B in the tiny world. Two
    # layers: on the warm-start budget (marl_jax.tiny) deeper stacks learned
    # arithmetic markedly slower per step than wider ones.
    "tiny_s": ModelConfig(
        hidden_size=96, intermediate_size=256, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=24, **_TINY_COMMON),
    "tiny_m": ModelConfig(
        hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=32, **_TINY_COMMON),
    "tiny_l": ModelConfig(
        hidden_size=192, intermediate_size=512, num_layers=2, num_heads=6,
        num_kv_heads=2, head_dim=32, **_TINY_COMMON),
}
PRESETS["tiny"] = PRESETS["tiny_m"]


def get_preset(name: str, **overrides) -> ModelConfig:
  """Returns the named preset, with any field overridden."""
  if name not in PRESETS:
    raise ValueError(f"Unknown model preset {name!r}; available: {sorted(PRESETS)}.")
  config = PRESETS[name]
  return config.replace(**overrides) if overrides else config
