"""Hand-written CPU kernels for the decode step, called through XLA's FFI.

- `skinny_matmul`: a few rows (a decode step's batch) times a weight packed
  ahead of time (`pack`). XLA:CPU's GEMMs pack their weight operand at every
  call; at 16 rows that held SmolLM2's weight products to ~110 GFLOP/s here,
  while reading each weight once, pre-packed, runs at ~130.
- `decode_attention`: one query per row against its KV cache, with the
  softmax, in one call per layer instead of einsum / softmax / einsum.

See kernels.cc. The decoder uses them through its CPU decode layout
(`decoder.decode_layout`, `decoder.Packed`); the sampler picks that layout
only where they win on the machine (`selection`: measured once per machine
and shape, kept on disk; MARL_JAX_CPU_KERNELS=1 uses them wherever they
build).

The source is compiled on first use with the system's C++ compiler (`CXX`,
default g++) against jaxlib's FFI headers, into a cache directory keyed by
the source, jaxlib's version and the compiler (`MARL_JAX_KERNEL_CACHE`,
default ~/.cache/marl_jax/kernels). Where it cannot be used -- not an x86-64
Linux CPU with AVX2 and FMA, no compiler, a failed build, or
MARL_JAX_CPU_KERNELS=0 -- `available()` says False, logs why once, and
callers keep XLA's own products. The library is built for AVX2; where the
CPU has AVX-512F, `skinny_matmul` takes an AVX-512 form at run time
(`avx512()`), to the same bits.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

from absl import logging
import jax
import jax.numpy as jnp
import jaxlib

COLUMNS = 6  # output columns per packed panel (kCols in kernels.cc)
_SOURCE = pathlib.Path(__file__).with_name("kernels.cc")
# FFI target name -> symbol in the library.
_TARGETS = {"marl_jax_skinny_matmul": "MarlJaxSkinnyMatmul",
            "marl_jax_decode_attention": "MarlJaxDecodeAttention"}
_FLAGS = ("-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-w")


def _cpu_flags() -> set[str]:
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return set()
  line = next((l for l in text.splitlines() if l.startswith("flags")), "")
  return set(line.partition(":")[2].split())


def cache_dir() -> pathlib.Path:
  default = pathlib.Path.home() / ".cache" / "marl_jax" / "kernels"
  return pathlib.Path(os.environ.get("MARL_JAX_KERNEL_CACHE", default))


def _build(compiler: str) -> pathlib.Path:
  """The compiled library, built once per (source, jaxlib, compiler, flags)."""
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                           check=True).stdout
  key = hashlib.sha256("\0".join(
      (_SOURCE.read_text(), jaxlib.__version__, version, *_FLAGS)).encode()).hexdigest()[:16]
  out = cache_dir() / f"kernels-{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  # Built beside its final name and renamed: concurrent processes never load a half-written file.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    result = subprocess.run(
        [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", tmp],
        capture_output=True, text=True)
    if result.returncode:
      raise RuntimeError(f"{compiler} failed on {_SOURCE}:\n{result.stderr[-2000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return out


def unavailable_reason() -> str | None:
  """Why the kernels cannot run in this process, or None when they can."""
  return _load()


@functools.cache
def _load() -> str | None:
  if os.environ.get("MARL_JAX_CPU_KERNELS", "1") == "0":
    return "MARL_JAX_CPU_KERNELS=0"
  if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
    return f"not an x86-64 Linux machine ({platform.system()} {platform.machine()})"
  missing = {"avx2", "fma"} - _cpu_flags()
  if missing:
    return f"the CPU lacks {sorted(missing)}"
  compiler = os.environ.get("CXX", "g++")
  if shutil.which(compiler) is None:
    return f"no C++ compiler {compiler!r} on PATH (set CXX)"
  try:
    library = ctypes.CDLL(str(_build(compiler)))
    for target, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform="cpu")
    _LIBRARY[:] = [library]
  except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
    return f"building {_SOURCE.name} failed: {e}"
  return None


_LIBRARY: list = []  # the loaded library, once _load succeeded


def avx512(on: bool | None = None) -> bool:
  """Whether `skinny_matmul` takes its AVX-512 form (the default where the CPU
  has AVX-512F: the same bits, ~1.3x the AVX2 form's FMA rate of a Zen 4
  core); with `on`, switches it first, process-wide (tests, A/B runs). False
  where the kernels cannot run."""
  if _load() is not None:
    return False
  return bool(_LIBRARY[0].MarlJaxAvx512(-1 if on is None else int(on)))


_OFF = [0]  # depth of `disabled()` blocks


@contextlib.contextmanager
def disabled():
  """Within the block (process-wide, all threads), available() is False:
  decode layouts made there use XLA's own products, for an A/B of the
  kernels in one process."""
  _OFF[0] += 1
  try:
    yield
  finally:
    _OFF[0] -= 1


def available() -> bool:
  """True when the CPU kernels can run here (built and registered on first
  call) and no `disabled()` block is open."""
  if _OFF[0]:
    return False
  reason = _load()
  if reason is not None:
    _log_once(reason)
  return reason is None


@functools.cache
def _log_once(reason: str) -> None:
  expected = reason == "MARL_JAX_CPU_KERNELS=0" or reason.startswith("not an x86-64")
  (logging.info if expected else logging.warning)(
      "marl_jax.models.cpu_kernels off: %s. Decode steps use XLA's own products (1.4-1.6x "
      "slower sampling on AVX2 machines)%s.", reason,
      "" if expected else "; set CXX to a working C++17 compiler, or MARL_JAX_CPU_KERNELS=0 "
      "to say this is meant")


def pack(w: jax.Array) -> jax.Array:
  """A kernel w [..., D_in, D_out] as panels [..., ceil(D_out / 6), D_in, 6],
  zero past D_out: the layout `skinny_matmul` reads."""
  *lead, d_in, d_out = w.shape
  panels = -(-d_out // COLUMNS)
  w = jnp.pad(w, [(0, 0)] * len(lead) + [(0, 0), (0, panels * COLUMNS - d_out)])
  return jnp.swapaxes(w.reshape(*lead, d_in, panels, COLUMNS), -3, -2)


def skinny_matmul(x: jax.Array, packed: jax.Array, d_out: int) -> jax.Array:
  """x [..., M, D_in] @ the packed kernel -> float32 [..., M, d_out] (CPU only;
  vmaps over leading axes). Call `available()` first."""
  if x.dtype != jnp.float32 or packed.dtype != jnp.float32:
    raise TypeError(f"skinny_matmul multiplies float32, got x {x.dtype} and "
                    f"packed {packed.dtype}")
  if (packed.shape[:-3] != x.shape[:-2] or packed.shape[-2] != x.shape[-1]
      or packed.shape[-3] * COLUMNS < d_out):
    raise ValueError(f"skinny_matmul: x {x.shape} does not fit the packed kernel "
                     f"{packed.shape} with {d_out} outputs")
  call = jax.ffi.ffi_call("marl_jax_skinny_matmul",
                          jax.ShapeDtypeStruct((*x.shape[:-1], d_out), jnp.float32),
                          vmap_method="broadcast_all")
  return call(x, packed)


def decode_attention(q: jax.Array, keys: jax.Array, values: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """Softmax attention of one query per row: q [..., KV, G, hd] (scaled), keys
  and values [..., KV, T, hd], mask bool [..., T] -> float32 [..., KV, G, hd].
  Where a row's mask is all False it averages every slot, as softmax over
  scores of -1e30 does (CPU only; vmaps over leading axes)."""
  lead = q.shape[:-3]
  if (any(a.dtype != jnp.float32 for a in (q, keys, values)) or mask.dtype != jnp.bool_
      or keys.shape != values.shape or keys.shape[:-2] != q.shape[:-2]
      or keys.shape[-1] != q.shape[-1] or mask.shape != (*lead, keys.shape[-2])):
    raise ValueError(f"decode_attention: float32 q {q.shape}, keys {keys.shape} and values "
                     f"{values.shape} and a bool mask {mask.shape} of matching shapes expected")
  call = jax.ffi.ffi_call("marl_jax_decode_attention",
                          jax.ShapeDtypeStruct(q.shape, jnp.float32),
                          vmap_method="broadcast_all")
  return call(q, keys, values, mask)
