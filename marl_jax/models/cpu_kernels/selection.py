"""Whether the CPU decode kernels win over XLA's own products on this machine.

The kernels were written on an AVX2 machine, where they made sampling
1.4-1.6x faster. On an AVX-512 AMD EPYC (Zen 4: the same FMA throughput at
either width) XLA's products reach the same roof at 16 rows: SmolLM2's
sampling gained ~1.17x, the tiny models lost ~0.9x. So the sampler uses them
only where a measurement on the machine says they win (`kernels_win`): a
sampler call of a probe with the model's shapes (random weights, enough of
its layers to outgrow the caches, and its LM head), with the kernels and
without, timed in turn. The verdict is kept on disk, one
JSON file per machine (CPU model and flags, cores, jaxlib, the kernels'
source: `machine()`) in `cpu_kernels.cache_dir()`, one entry per shape and
row count; a missing, stale or unreadable file is measured again.

MARL_JAX_CPU_KERNELS: unset or "auto" measures; "1" uses the kernels wherever
they build; "0" never builds them. `forced(on)` overrides all of it inside a
block, in its thread (the probe's and the benchmark's A/B of the kernels).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import pathlib
import platform
import tempfile
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import jaxlib

from marl_jax.models import cpu_kernels
from marl_jax.models import decoder
from marl_jax.models import timing
from marl_jax.models.config import ModelConfig

ENV = "MARL_JAX_CPU_KERNELS"
MODES = ("auto", "1", "0")
FORMAT = 1  # of the cache file; another number reads as stale
# Use the kernels when XLA's step takes this much longer: a tie keeps XLA's
# products, the path every machine has.
WIN = 1.02
PROBE_BYTES = 64 << 20  # the probe's layers outgrow the caches, as a model's weights do
ROUNDS = 5  # interleaved timings per side; the median is kept

# (cache file, signature) -> verdict, for this process: the sampler asks at every call.
_CHOICES: dict[tuple[str, str], bool] = {}
_MEASURING = threading.RLock()  # one measurement at a time, each made once
_LOCAL = threading.local()  # .forced: this thread's `forced` blocks, innermost last

# (probe config, probe params, rows) -> a context manager yielding {"kernels":
# a sampler call with the kernels, "xla": the same call without}, each a
# function of no arguments.
Calls = Callable[[ModelConfig, Any, int],
                 contextlib.AbstractContextManager[dict[str, Callable[[], Any]]]]


def mode() -> str:
  """MARL_JAX_CPU_KERNELS: 'auto' (the default), '1' or '0'."""
  value = os.environ.get(ENV, "auto").strip().lower() or "auto"
  if value not in MODES:
    raise ValueError(f"{ENV}={value!r} is not a setting: use auto (the CPU decode kernels "
                     "where a measurement on this machine says they win), 1 (wherever they "
                     "build) or 0 (never).")
  return value


def _forced() -> list[bool]:
  if not hasattr(_LOCAL, "forced"):
    _LOCAL.forced = []
  return _LOCAL.forced


@contextlib.contextmanager
def forced(on: bool) -> Iterator[None]:
  """Within the block (in this thread: a probe does not steer the sampler
  calls of other threads), `kernels_win` says `on` without measuring: with
  on=False the sampler decodes on XLA's own products, with on=True on the
  kernels wherever they build."""
  _forced().append(bool(on))
  try:
    yield
  finally:
    _forced().pop()


def _cpu_model() -> str:
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  line = next((l for l in text.splitlines() if l.startswith("model name")), "")
  return line.partition(":")[2].strip() or platform.machine()


@functools.cache
def machine() -> dict[str, Any]:
  """What a verdict holds for: the CPU (model name, flags, cores), jaxlib
  (XLA's products) and the kernels' source."""
  source = cpu_kernels._SOURCE.read_bytes()  # pylint: disable=protected-access
  return {"cpu": _cpu_model(), "flags": " ".join(sorted(cpu_kernels._cpu_flags())),  # pylint: disable=protected-access
          "cores": os.cpu_count(), "jaxlib": jaxlib.__version__,
          "kernels": hashlib.sha256(source).hexdigest()[:16]}


def cache_file() -> pathlib.Path:
  """This machine's verdicts: cpu_kernels.cache_dir()/choice-<hash of machine()>.json."""
  key = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
  return cpu_kernels.cache_dir() / f"choice-{key}.json"


def signature(config: ModelConfig, rows: int) -> str:
  """The shapes a decode step's cost depends on, and its rows."""
  c = config
  return (f"d{c.hidden_size}-f{c.intermediate_size}-h{c.num_heads}-kv{c.num_kv_heads}-"
          f"hd{c.head_dim}-v{c.vocab_size}-l{c.num_layers}-tie{int(c.tie_embeddings)}-"
          f"rows{rows}")


def _valid(entry: Any) -> bool:
  return (isinstance(entry, dict) and isinstance(entry.get("use"), bool)
          and all(isinstance(entry.get(k), (int, float)) and not isinstance(entry[k], bool)
                  and entry[k] > 0 for k in ("kernels_s", "xla_s")))


def read_verdicts(path: pathlib.Path) -> dict[str, dict]:
  """The file's verdicts that hold for this machine: none when it is missing,
  written for another machine or format (stale), or unreadable (logged)."""
  try:
    data = json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    logging.warning("cpu_kernels: %s is unreadable (%s); measuring again.", path, e)
    return {}
  if not isinstance(data, dict) or not isinstance(data.get("verdicts"), dict):
    logging.warning("cpu_kernels: %s holds no verdicts; measuring again.", path)
    return {}
  if data.get("format") != FORMAT or data.get("machine") != machine():
    logging.info("cpu_kernels: %s was written for another machine or version; measuring "
                 "again.", path)
    return {}
  return {k: v for k, v in data["verdicts"].items() if _valid(v)}


def _write_verdicts(path: pathlib.Path, verdicts: dict[str, dict]) -> None:
  """Written beside its final name and renamed: a reader never sees half a file."""
  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
      json.dump({"format": FORMAT, "machine": machine(), "verdicts": verdicts}, f, indent=1,
                sort_keys=True)
    os.replace(tmp, path)
  except OSError as e:  # the verdict still holds for this process
    logging.warning("cpu_kernels: could not write %s (%s); the measurement will be "
                    "repeated in the next process.", path, e)
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)


def kernels_win(config: ModelConfig, rows: int, calls: Calls) -> bool:
  """Whether the sampler's calls of `rows` rows of this model run faster with
  the CPU kernels than with XLA's products here (ask where they are available).

  `calls(probe_config, probe_params, rows)` gives a sampler call with the
  kernels and one without (`Calls`), inside its block. Measured once per machine and shape
  (`measure`) and kept in `cache_file()`; MARL_JAX_CPU_KERNELS and `forced`
  decide without measuring.
  """
  if _forced():
    return _forced()[-1]
  setting = mode()
  if setting != "auto":
    return setting == "1"
  key = (str(cache_file()), signature(config, rows))
  if key not in _CHOICES:
    with _MEASURING:
      if key not in _CHOICES:
        path, sig = cache_file(), key[1]
        verdicts = read_verdicts(path)
        if sig not in verdicts:
          verdicts[sig] = measure(config, rows, calls)
          # Another process may have added verdicts meanwhile: keep theirs too.
          _write_verdicts(path, {**read_verdicts(path), **verdicts})
        _CHOICES[key] = verdicts[sig]["use"]
  return _CHOICES[key]


def measure(config: ModelConfig, rows: int, calls: Calls) -> dict[str, Any]:
  """Seconds of a sampler call of `rows` rows with the kernels and with XLA's
  products (ROUNDS interleaved timings, medians), and whether the kernels win
  (speedup >= WIN).

  The probe has the model's shapes and random weights, but only the fewest
  of its layers that hold PROBE_BYTES (all of them if fewer), so its LM head
  weighs more in a step than the model's does.
  """
  reason = cpu_kernels.unavailable_reason()  # builds and registers them on first use
  if reason is not None:
    raise RuntimeError(f"cpu_kernels.selection.measure: the kernels cannot run here: {reason}")
  start = time.perf_counter()
  layer_bytes = 4 * sum(i * o for i, o in decoder.linear_shapes(config).values())
  n = min(config.num_layers, max(1, math.ceil(PROBE_BYTES / layer_bytes)))
  probe = config.replace(num_layers=n)
  with calls(probe, decoder.init_params(probe, jax.random.PRNGKey(0)), rows) as fns:
    seconds = timing.interleaved_median_seconds(fns, ROUNDS)  # one warm-up call compiles
  speedup = seconds["xla"] / seconds["kernels"]
  # The load average says how much to trust it on a shared machine (delete the
  # file to measure again, or set MARL_JAX_CPU_KERNELS).
  verdict = {"kernels_s": seconds["kernels"], "xla_s": seconds["xla"], "speedup": speedup,
             "use": speedup >= WIN, "load": os.getloadavg()[0]}
  logging.info("cpu_kernels: a sampler call of %s (%d of its layers) here: kernels %.3g s, "
               "XLA %.3g s (%.2fx): %s the kernels (measured in %.1f s at load %.1f, kept in "
               "%s)", signature(config, rows), n, seconds["kernels"], seconds["xla"], speedup,
               "using" if verdict["use"] else "not using", time.perf_counter() - start,
               verdict["load"], cache_file())
  return verdict
