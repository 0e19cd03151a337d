"""The hand-written decode kernels compute what XLA computes, build where they
should, and step aside with a reason where they cannot."""

import logging
import os
import platform
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from marl_jax.generate import sampler as sampling
from marl_jax.models import cpu_kernels
from marl_jax.models import decoder, get_preset, init_params

CONFIG = get_preset("tiny_s", eos_ids=(2,), max_position_embeddings=256)


def _buildable() -> bool:
  return (platform.system() == "Linux" and platform.machine() == "x86_64"
          and {"avx2", "fma"} <= cpu_kernels._cpu_flags() and shutil.which("g++") is not None
          and os.environ.get("MARL_JAX_CPU_KERNELS", "1") != "0")


needs_kernels = pytest.mark.skipif(not cpu_kernels.available(),
                                   reason=f"cpu_kernels: {cpu_kernels.unavailable_reason()}")


@pytest.fixture
def fresh_load(monkeypatch, tmp_path):
  """cpu_kernels._load re-run against a private cache, restored afterwards."""
  monkeypatch.setenv("MARL_JAX_KERNEL_CACHE", str(tmp_path / "cache"))
  cpu_kernels._load.cache_clear()
  yield tmp_path / "cache"
  cpu_kernels._load.cache_clear()


def test_kernels_build_on_every_machine_that_can_run_them():
  """CI's machines (x86-64 Linux, AVX2, g++) must run the decode with the kernels:
  a broken build fails here instead of silently falling back."""
  if not _buildable():
    pytest.skip("not an x86-64 Linux machine with AVX2, FMA and g++")
  assert cpu_kernels.unavailable_reason() is None


@pytest.fixture(params=["avx2", "avx512"])
def form(request):
  """skinny_matmul's AVX2 form, or its AVX-512 form (skipped where the CPU lacks
  AVX-512F); the default is restored afterwards."""
  wanted = request.param == "avx512"
  if wanted and "avx512f" not in cpu_kernels._cpu_flags():
    pytest.skip("the CPU lacks AVX-512F")
  default = cpu_kernels.avx512()
  assert cpu_kernels.avx512(wanted) is wanted
  yield request.param
  cpu_kernels.avx512(default)


def test_the_avx512_form_is_the_default_where_the_cpu_has_it():
  if not cpu_kernels.available():
    pytest.skip(f"cpu_kernels: {cpu_kernels.unavailable_reason()}")
  assert cpu_kernels.avx512() is ("avx512f" in cpu_kernels._cpu_flags())


@needs_kernels
@pytest.mark.parametrize("lead,m,k,n", [((), 1, 7, 5), ((), 9, 33, 13), ((), 16, 576, 100),
                                        ((), 17, 64, 100), ((3,), 40, 128, 30),
                                        ((2, 2), 16, 24, 6), ((), 0, 8, 6), ((), 4, 8, 0),
                                        ((), 16, 40, 7 * 6 + 1), ((2,), 33, 16, 4 * 6)])
def test_skinny_matmul_matches_numpy(lead, m, k, n, form):
  rng = np.random.default_rng(m * k + n)
  x = rng.standard_normal((*lead, m, k), dtype=np.float32)
  w = rng.standard_normal((*lead, k, n), dtype=np.float32)
  y = jax.jit(lambda x, w: cpu_kernels.skinny_matmul(x, cpu_kernels.pack(w), n))(x, w)
  assert y.shape == (*lead, m, n)
  np.testing.assert_allclose(y, np.einsum("...mk,...kn->...mn", x, w), rtol=1e-5,
                             atol=1e-4)


@needs_kernels
def test_the_avx512_form_gives_the_avx2_forms_bits():
  """Every output is the same chain of FMAs over k in both forms: odd and even
  panel counts, one to three row tiles, leading axes."""
  if "avx512f" not in cpu_kernels._cpu_flags():
    pytest.skip("the CPU lacks AVX-512F")
  rng = np.random.default_rng(5)
  f = jax.jit(lambda x, w: cpu_kernels.skinny_matmul(x, cpu_kernels.pack(w), w.shape[-1]))
  default = cpu_kernels.avx512()
  try:
    for lead, m, k, n in [((), 3, 50, 31), ((), 16, 576, 96), ((2,), 40, 64, 13)]:
      x = rng.standard_normal((*lead, m, k), dtype=np.float32)
      w = rng.standard_normal((*lead, k, n), dtype=np.float32)
      out = {on: np.asarray(f(x, w)) for on in (False, True) if cpu_kernels.avx512(on) is on}
      np.testing.assert_array_equal(out[True], out[False])
  finally:
    cpu_kernels.avx512(default)


@needs_kernels
def test_skinny_matmul_vmaps_over_a_batch_of_kernels():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((4, 16, 40), dtype=np.float32)
  w = rng.standard_normal((4, 40, 20), dtype=np.float32)
  y = jax.jit(jax.vmap(lambda x, w: cpu_kernels.skinny_matmul(x, cpu_kernels.pack(w), 20)))(x, w)
  np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-4)


@needs_kernels
def test_decode_attention_matches_the_decoders_softmax_attention():
  """One query per row against its cache, as decoder._attend computes it in XLA:
  ragged valid slots, a row with a single one, and a row with none (softmax over
  scores of -1e30 everywhere averages every slot)."""
  config = get_preset("tiny_s").replace(num_heads=6, num_kv_heads=2, head_dim=20)
  b, t, hd = 4, 11, config.head_dim
  rng = np.random.default_rng(1)
  q = rng.standard_normal((b, 1, config.num_heads, hd), dtype=np.float32)
  k, v = (rng.standard_normal((b, config.num_kv_heads, t, hd), dtype=np.float32)
          for _ in range(2))
  mask = np.ones((b, 1, t), bool)
  mask[0, 0, :4] = False
  mask[1, 0, 1:] = False
  mask[2, 0, :] = False
  want = decoder._attend(q, k, v, mask, config)
  got = jax.jit(lambda *a: decoder._attend(*a, config, kernel=True))(q, k, v, mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[2, 0, :hd], v[2, 0].mean(0), rtol=1e-5, atol=1e-6)
  batched = jax.jit(jax.vmap(lambda *a: decoder._attend(*a, config, kernel=True)))(
      *(np.stack([a, a[::-1]]) for a in (q, k, v, mask)))
  np.testing.assert_allclose(batched[1], np.asarray(want)[::-1], rtol=1e-5, atol=1e-6)


@needs_kernels
def test_mismatched_operands_name_their_shapes():
  x = jnp.ones((16, 32))
  with pytest.raises(ValueError, match=r"x \(16, 32\).*\(3, 31, 6\)"):
    cpu_kernels.skinny_matmul(x, jnp.ones((3, 31, 6)), 18)
  with pytest.raises(TypeError, match="float32"):
    cpu_kernels.skinny_matmul(x.astype(jnp.bfloat16), cpu_kernels.pack(jnp.ones((32, 6))), 6)
  q, kv = jnp.ones((2, 1, 3, 8)), jnp.ones((2, 1, 5, 8))
  with pytest.raises(ValueError, match=r"mask \(2, 4\)"):
    cpu_kernels.decode_attention(q, kv, kv, jnp.ones((2, 4), bool))


@needs_kernels
@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_sampler_with_kernels_equals_the_sampler_without(temperature, monkeypatch):
  """Same tokens and log-probabilities (to float rounding) from the decode layout
  with the hand-written kernels and, under cpu_kernels.disabled(), with XLA's own
  products; both layouts stay cached side by side."""
  monkeypatch.setattr(sampling, "unroll_default", lambda: True)
  monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", 0)
  monkeypatch.setattr(sampling, "_LAYOUTS", [])
  params = jax.tree.map(lambda x: x * 4 if x.ndim >= 2 else x,
                        init_params(CONFIG, jax.random.PRNGKey(0)))
  prompts = [list(np.random.RandomState(i).randint(3, 128, size=n)) for i, n in
             enumerate([3, 17, 9, 30, 12])]
  sp = sampling.SamplingParams(temperature=temperature, max_new_tokens=16)

  def run(form):
    layout = sampling._decode_params(CONFIG, params, 8)
    assert isinstance(layout["layers"][0]["o"], form)
    return sampling.generate(CONFIG, params, prompts, jax.random.PRNGKey(7), sp)

  ours = run(decoder.Packed)
  with cpu_kernels.disabled():
    assert not cpu_kernels.available()
    xla = run(decoder.Transposed)
  assert cpu_kernels.available() and len(sampling._LAYOUTS) == 2
  np.testing.assert_array_equal(ours.tokens, xla.tokens)
  np.testing.assert_array_equal(ours.lengths, xla.lengths)
  np.testing.assert_allclose(ours.logprobs, xla.logprobs, atol=1e-5)


def test_switched_off_by_the_environment(fresh_load, monkeypatch):
  monkeypatch.setenv("MARL_JAX_CPU_KERNELS", "0")
  assert cpu_kernels.unavailable_reason() == "MARL_JAX_CPU_KERNELS=0"
  assert not cpu_kernels.available()
  assert not decoder.packs_for_decode(CONFIG)


def test_a_failed_build_says_why_and_leaves_no_library(fresh_load, monkeypatch, tmp_path,
                                                        caplog):
  if not _buildable():
    pytest.skip("not an x86-64 Linux machine with AVX2, FMA and g++")
  broken = tmp_path / "broken-cxx"
  broken.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo broken 1.0 && exit 0\n"
                    "echo 'kernels.cc:1: error: no' >&2; exit 1\n")
  broken.chmod(0o755)
  monkeypatch.setenv("CXX", str(broken))
  reason = cpu_kernels.unavailable_reason()
  assert reason is not None and "kernels.cc" in reason and "error: no" in reason
  assert not list(fresh_load.glob("*"))  # no half-written library left behind
  with caplog.at_level(logging.WARNING):
    assert not cpu_kernels.available()
  assert "error: no" in caplog.text and "set CXX" in caplog.text


def test_the_build_is_cached_by_source_and_toolchain(fresh_load):
  if not _buildable():
    pytest.skip("not an x86-64 Linux machine with AVX2, FMA and g++")
  first = cpu_kernels._build("g++")
  stamp = first.stat().st_mtime_ns
  assert cpu_kernels._build("g++") == first and first.stat().st_mtime_ns == stamp
  assert [p.name for p in fresh_load.iterdir()] == [first.name]
