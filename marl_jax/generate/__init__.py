"""The JAX sampler: batched, jitted generation with a KV cache, per-row LoRA or
full-copy routing, and the padding and bucketing of its inputs."""

from marl_jax.generate.sampler import (Generation, SamplingParams, bucket, compiled_shapes,
                                       generate, generate_slots, left_pad)

__all__ = ["Generation", "SamplingParams", "bucket", "compiled_shapes", "generate",
           "generate_slots", "left_pad"]
