"""Choosing whether a test decodes with marl_jax.models.cpu_kernels."""

import pytest

from marl_jax.models import cpu_kernels


def use_cpu_kernels(on: bool, monkeypatch=None) -> None:
  """Skips where the kernels cannot run and `on` asks for them; with monkeypatch,
  decode layouts made in the test use them (on) or XLA's own products (off)."""
  if on and not cpu_kernels.available():
    pytest.skip(f"cpu_kernels unavailable: {cpu_kernels.unavailable_reason()}")
  if monkeypatch is not None:
    monkeypatch.setattr(cpu_kernels, "available", lambda: on)
