"""The JAX sampler: batched, jitted generation with a KV cache, per-row LoRA or
full-copy routing, and the padding and bucketing of its inputs; lockstep
(`sampler`) or with continuous batching (`continuous`), drawing each row's
tokens from its own key (`draw`)."""

from marl_jax.generate.sampler import (Generation, SamplingParams, bucket, compiled_shapes,
                                       generate, generate_slots, left_pad)

__all__ = ["Generation", "SamplingParams", "bucket", "compiled_shapes", "generate",
           "generate_slots", "left_pad"]
