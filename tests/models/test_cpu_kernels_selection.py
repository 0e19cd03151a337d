"""The sampler uses the CPU kernels where a measurement on the machine says they
win: measured once, kept on disk per machine (CPU flags in the key), measured
again over a stale or broken file, and overridden by MARL_JAX_CPU_KERNELS or
`selection.forced`. Measurements are faked here; nothing is timed."""

import contextlib
import json
import logging
import threading

import jax
import numpy as np
import pytest

from marl_jax.generate import sampler as sampling
from marl_jax.models import cpu_kernels, decoder, get_preset, init_params
from marl_jax.models.cpu_kernels import selection

CONFIG = get_preset("tiny_s", eos_ids=(2,), max_position_embeddings=256)


@pytest.fixture
def auto(monkeypatch, tmp_path):
  """Selection in 'auto' mode against a private cache directory, with a fake
  measurement: seconds[side] per side, and a count of the probes made."""
  monkeypatch.setenv("MARL_JAX_CPU_KERNELS", "auto")
  monkeypatch.setenv("MARL_JAX_KERNEL_CACHE", str(tmp_path / "cache"))
  monkeypatch.setattr(selection, "_CHOICES", {})
  fake = {"seconds": {"kernels": 1.0, "xla": 1.5}, "probes": 0}

  def interleaved(fns, repeats):
    assert set(fns) == {"kernels", "xla"} and repeats == selection.ROUNDS
    fake["probes"] += 1
    return dict(fake["seconds"])

  monkeypatch.setattr(selection.timing, "interleaved_median_seconds", interleaved)
  monkeypatch.setattr(cpu_kernels, "unavailable_reason", lambda: None)
  return fake


@contextlib.contextmanager
def no_calls(config, params, rows):
  """A probe whose calls are never run (the fake timing does not call them)."""
  del config, params, rows
  yield {"kernels": None, "xla": None}


def _win(rows=8, config=CONFIG):
  return selection.kernels_win(config, rows, no_calls)


def test_measured_once_then_read_from_disk(auto):
  assert _win() and auto["probes"] == 1
  assert _win() and auto["probes"] == 1  # this process remembers
  selection._CHOICES.clear()
  assert _win() and auto["probes"] == 1  # a new process reads the file
  data = json.loads(selection.cache_file().read_text())
  assert data["machine"] == selection.machine()
  verdict = data["verdicts"][selection.signature(CONFIG, 8)]
  assert verdict.pop("load") >= 0
  assert verdict == {"kernels_s": 1.0, "xla_s": 1.5, "speedup": 1.5, "use": True}
  # Another row count or shape is another measurement, kept beside the first.
  auto["seconds"] = {"kernels": 1.0, "xla": 0.9}
  assert not _win(rows=64) and auto["probes"] == 2
  assert not _win(config=CONFIG.replace(hidden_size=128)) and auto["probes"] == 3
  assert len(json.loads(selection.cache_file().read_text())["verdicts"]) == 3


@pytest.mark.parametrize("xla,use", [(1.5, True), (1.01, False), (0.9, False)])
def test_kernels_are_used_only_where_they_win(auto, xla, use):
  auto["seconds"] = {"kernels": 1.0, "xla": xla}
  assert _win() is use  # a tie (within selection.WIN) keeps XLA's products


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[1, 2]",
                                     b'{"format": 1, "verdicts": 3}'],
                         ids=["truncated", "binary", "a list", "no verdicts"])
def test_a_corrupt_cache_file_is_measured_again(auto, content, caplog):
  path = selection.cache_file()
  path.parent.mkdir(parents=True)
  path.write_bytes(content)
  with caplog.at_level(logging.WARNING):
    assert _win()
  assert auto["probes"] == 1 and str(path) in caplog.text
  assert json.loads(path.read_text())["verdicts"][selection.signature(CONFIG, 8)]["use"]


@pytest.mark.parametrize("stale", ["flags", "jaxlib", "format", "entry"])
def test_a_stale_cache_file_is_measured_again(auto, stale):
  sig = selection.signature(CONFIG, 8)
  machine = dict(selection.machine())
  entry = {"kernels_s": 1.0, "xla_s": 0.5, "speedup": 0.5, "use": False}
  data = {"format": selection.FORMAT, "machine": machine, "verdicts": {sig: entry}}
  if stale == "flags":  # written on a machine with other CPU flags
    machine["flags"] = machine["flags"].replace("avx2", "") + " avx512f"
  elif stale == "jaxlib":
    machine["jaxlib"] = "0.0.1"
  elif stale == "format":
    data["format"] = selection.FORMAT + 1
  else:
    del entry["use"]
  path = selection.cache_file()
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(data))
  assert _win() and auto["probes"] == 1  # the old verdict (False) is not used
  assert json.loads(path.read_text())["machine"] == selection.machine()


def test_the_cache_key_holds_the_cpu_flags(auto, monkeypatch):
  here = selection.cache_file()
  assert selection.machine()["flags"] == " ".join(sorted(cpu_kernels._cpu_flags()))
  flags = cpu_kernels._cpu_flags() ^ {"avx512_bf16"}
  monkeypatch.setattr(cpu_kernels, "_cpu_flags", lambda: flags)
  selection.machine.cache_clear()
  try:
    assert selection.machine()["flags"] == " ".join(sorted(flags))
    assert selection.cache_file() != here and selection.cache_file().parent == here.parent
  finally:
    selection.machine.cache_clear()


def test_an_unwritable_cache_still_decides(auto, monkeypatch, tmp_path, caplog):
  blocker = tmp_path / "file"
  blocker.write_text("")
  monkeypatch.setenv("MARL_JAX_KERNEL_CACHE", str(blocker / "cache"))  # under a plain file
  with caplog.at_level(logging.WARNING):
    assert _win() and auto["probes"] == 1
  assert "could not write" in caplog.text
  assert _win() and auto["probes"] == 1


@pytest.mark.parametrize("setting,use", [("1", True), ("0", False), ("ON", None),
                                         ("", True)])
def test_the_environment_forces_or_names_its_settings(auto, monkeypatch, setting, use):
  monkeypatch.setenv("MARL_JAX_CPU_KERNELS", setting)
  if use is None:
    with pytest.raises(ValueError, match="MARL_JAX_CPU_KERNELS='on'.*auto.*1.*0"):
      _win()
    return
  assert _win() is use
  assert auto["probes"] == (1 if setting == "" else 0)  # unset / empty: auto


def test_forced_blocks_override_everything(auto, monkeypatch):
  monkeypatch.setenv("MARL_JAX_CPU_KERNELS", "1")
  with selection.forced(False):
    assert not _win()
    with selection.forced(True):
      assert _win()
    assert not _win()
  assert _win() and auto["probes"] == 0


def test_a_forced_block_steers_its_own_thread_only(auto, monkeypatch):
  """A probe forcing one side must not steer sampler calls in other threads."""
  monkeypatch.setenv("MARL_JAX_CPU_KERNELS", "0")
  seen = []
  inside, release = threading.Event(), threading.Event()

  def probe():
    with selection.forced(True):
      inside.set()
      release.wait(10)
      seen.append(_win())

  thread = threading.Thread(target=probe)
  thread.start()
  inside.wait(10)
  seen.append(_win())  # this thread: the environment's 0
  release.set()
  thread.join()
  assert seen == [False, True]


@pytest.fixture
def kernels_built(monkeypatch):
  if cpu_kernels._load() is not None:  # pylint: disable=protected-access
    pytest.skip(f"cpu_kernels: {cpu_kernels._load()}")
  monkeypatch.setattr(sampling, "unroll_default", lambda: True)
  monkeypatch.setattr(sampling, "_LAYOUTS", [])


@pytest.mark.parametrize("xla,form", [(2.0, decoder.Packed), (0.5, decoder.Transposed)],
                         ids=["kernels_win", "xla_wins"])
def test_the_sampler_decodes_on_the_winner(auto, kernels_built, monkeypatch, xla, form):
  monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", 0)
  auto["seconds"] = {"kernels": 1.0, "xla": xla}
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  layout = sampling.decode_weights(CONFIG, params, 8)
  assert isinstance(layout["layers"][0]["o"], form) and auto["probes"] == 1
  with selection.forced(form is decoder.Transposed):  # the other one, on demand
    other = sampling.decode_weights(CONFIG, params, 8)
  assert not isinstance(other["layers"][0]["o"], form) and auto["probes"] == 1


def test_the_samplers_probe_runs_both_paths_uncounted(kernels_built, monkeypatch, tmp_path):
  """The real probe (no timing asserted): both calls decode the same tokens on
  their own layouts, and its programs stay out of compiled_shapes()."""
  monkeypatch.setenv("MARL_JAX_KERNEL_CACHE", str(tmp_path))
  monkeypatch.setattr(decoder, "DECODE_LAYOUT_MIN_HIDDEN", 0)
  before = sampling.compiled_shapes()
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  with sampling._kernel_probe(CONFIG, params, 8) as calls:  # pylint: disable=protected-access
    tokens = {side: np.asarray(call()) for side, call in calls.items()}
    assert sampling.compiled_shapes() > before
  assert sampling.compiled_shapes() == before
  assert tokens["kernels"].shape == (8, 16)
  np.testing.assert_array_equal(tokens["kernels"], tokens["xla"])
  monkeypatch.setattr(selection, "ROUNDS", 1)
  verdict = selection.measure(CONFIG, 8, sampling._kernel_probe)  # pylint: disable=protected-access
  assert verdict["kernels_s"] > 0 and verdict["xla_s"] > 0 and isinstance(verdict["use"], bool)
  assert verdict["speedup"] == pytest.approx(verdict["xla_s"] / verdict["kernels_s"])
