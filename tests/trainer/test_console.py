"""The console stays quiet, the log file gets everything, the progress line is honest."""

import io
import logging
import sys
import types

from absl import logging as absl_logging
import pytest

from marl_jax.trainer import console


@pytest.fixture
def plain_program(monkeypatch):
  """Starts a program's logging as a plain script has it: one console handler on
  stderr. Returns the console's text; restores the root logger afterwards.

  Called in the test's body: pytest swaps sys.stderr when the test starts.
  """
  root = logging.getLogger()
  saved = root.handlers[:], root.level

  def start() -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root.handlers = [logging.StreamHandler(sys.stderr)]
    root.setLevel(logging.WARNING)
    return stream

  yield start
  console.close_log()
  console._state["buffer"] = None  # pylint: disable=protected-access
  root.handlers = saved[0]
  root.setLevel(saved[1])


def test_library_info_goes_to_the_log_file_and_not_the_console(plain_program, tmp_path):
  shown = plain_program()
  assert console.setup() == logging.WARNING
  absl_logging.info("Creating tmp directory checkpoints/2.orbax-checkpoint-tmp")  # before the file
  console.open_log(str(tmp_path))
  logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
  logging.getLogger("orbax.checkpoint").warning("a checkpoint step is unreadable")
  logging.getLogger("tensorboardX").error("an error")
  log = (tmp_path / console.LOG_NAME).read_text()
  shown = shown.getvalue()
  assert "orbax-checkpoint-tmp" in log and "backend 'tpu'" in log  # held records first
  assert "orbax-checkpoint-tmp" not in shown and "backend 'tpu'" not in shown
  assert "unreadable" in shown and "an error" in shown  # warnings and errors still print
  assert "unreadable" in log


def test_verbosity_brings_info_back_to_the_console(plain_program, tmp_path):
  shown = plain_program()
  assert console.setup(verbosity=0) == logging.INFO
  console.open_log(str(tmp_path))
  logging.getLogger("orbax.checkpoint").info("Renaming step")
  assert "Renaming step" in shown.getvalue()
  assert "Renaming step" in (tmp_path / console.LOG_NAME).read_text()
  assert console.console_level(1) == logging.DEBUG
  assert console.console_level(-1) == logging.WARNING


def test_open_log_without_setup_keeps_warnings_on_the_console(monkeypatch, tmp_path):
  # A notebook calling train_and_evaluate: no handler at all, so Python's
  # last resort prints warnings; adding the file handler must not silence them.
  stream = io.StringIO()
  monkeypatch.setattr(sys, "stderr", stream)
  root = logging.getLogger()
  saved = root.handlers[:], root.level
  root.handlers = []
  try:
    console.open_log(str(tmp_path), process_index=1)
    logging.getLogger("orbax").info("quiet")
    logging.getLogger("orbax").warning("loud")
  finally:
    console.close_log()
    root.handlers = saved[0]
    root.setLevel(saved[1])
  assert "loud" in stream.getvalue() and "quiet" not in stream.getvalue()
  assert "quiet" in (tmp_path / "log.1.txt").read_text()


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _metrics(reward=0.25, **extra):
  return {"rollout_tokens_per_s": 2649.0, "reward_final/mean": reward, **extra}


def test_eta_ignores_the_first_compiling_step():
  clock, out = _Clock(), io.StringIO()
  progress = console.Progress(60, 0, every=1, stream=out, active=True, clock=clock,
                              learning_rate=lambda step: 1e-4 * (step + 1))
  clock.now = 100.0  # step 1 compiles: 100 s
  first = progress.update(1, _metrics(), last_eval={"eval/accuracy": 0.309})
  assert "ETA -" in first and "- steps/s" in first
  for step in (2, 3):  # then 2 s a step
    clock.now += 2.0
    line = progress.update(step, _metrics())
  assert "0.50 steps/s" in line
  assert "ETA 1m54s" in line  # 57 steps x 2 s, not (60 - 3) x 102 s / 3
  assert "eval 0.309 @0" in line and "reward 0.250" in line
  assert "lr 3.00e-04" in line  # the rate of step 3's update (optimizer step 2)
  assert "2,649 tok/s" in line


def test_the_slots_own_rates_are_shown_when_the_step_logs_them():
  progress = console.Progress(60, 0, every=1, stream=io.StringIO(), active=True,
                              clock=_Clock(), learning_rate=lambda step: 1.0)
  parted = progress.line(3, {**_metrics(), "lr/generator": 6e-5, "lr/aggregator": 2e-5})
  assert "lr 2.00e-05-6.00e-05" in parted  # per-update ticks: each slot its own rate
  assert "lr 4.00e-05" in progress.line(3, {**_metrics(), "lr/shared": 4e-5})


def test_the_last_evaluation_is_shown_with_its_step():
  progress = console.Progress(40, 0, every=1, stream=io.StringIO(), active=True, clock=_Clock())
  progress.update(1, _metrics(), last_eval={"eval/accuracy": 0.309})
  line = progress.update(20, _metrics(**{"eval/accuracy": 0.41}), {"eval/accuracy": 0.41})
  assert "eval 0.410 @20" in line
  assert "eval 0.410 @20" in progress.update(21, _metrics(), {"eval/accuracy": 0.41})
  resumed = console.Progress(40, 30, every=1, stream=io.StringIO(), active=True, clock=_Clock())
  assert "eval -" in resumed.update(31, _metrics(), {})


def test_non_terminal_output_prints_one_line_every_n_steps():
  out = io.StringIO()
  progress = console.Progress(25, 0, every=10, stream=out, active=True, clock=_Clock())
  for step in range(1, 26):
    progress.update(step, _metrics())
  lines = out.getvalue().splitlines()
  assert [line.split(" | ")[0] for line in lines] == ["step 10/25", "step 20/25", "step 25/25"]
  assert "\r" not in out.getvalue()


def test_terminal_output_is_one_line_rewritten_in_place():
  out = io.StringIO()
  out.isatty = lambda: True
  progress = console.Progress(3, 0, stream=out, active=True, clock=_Clock())
  for step in (1, 2, 3):
    progress.update(step, _metrics())
  text = out.getvalue()
  assert text.count("\r\033[K") == 3 and text.count("\n") == 1 and text.endswith("\n")
  assert text.rsplit("\r\033[K", 1)[1].startswith("step 3/3")


def test_a_log_record_erases_the_live_line_first(plain_program):
  plain_program()
  out = io.StringIO()
  out.isatty = lambda: True
  console.setup()
  progress = console.Progress(5, 0, stream=out, active=True, clock=_Clock())
  progress.update(1, _metrics())
  logging.getLogger("marl_jax").warning("mid-run warning")
  assert out.getvalue().endswith("\r\033[K")  # the warning starts on a clean line
  progress.close()


def test_other_processes_print_nothing():
  out = io.StringIO()
  progress = console.Progress(2, 0, every=1, stream=out, active=False, clock=_Clock())
  assert progress.update(2, _metrics()) is None and not out.getvalue()


def test_duration():
  assert [console.duration(s) for s in (5, 65, 3 * 3600 + 7 * 60)] == ["5s", "1m05s", "3h07m"]


def test_progress_without_optional_metrics():
  line = console.Progress(1, 0, stream=io.StringIO(), active=True, clock=_Clock()).line(
      1, types.MappingProxyType({}))
  assert line == "step 1/1 | - steps/s | eval - | ETA -"


def test_a_run_closes_its_log_file_so_the_next_run_logs_to_its_own(tmp_path):
  from marl_jax.trainer import loop as train
  from tests.helpers import tiny_config
  config = tiny_config("workflow=single", steps=1)
  train.train_and_evaluate(config, str(tmp_path / "first"))
  assert console._state["file"] is None  # pylint: disable=protected-access
  logging.getLogger("orbax.checkpoint").warning("after the first run")
  assert "after the first run" not in (tmp_path / "first" / console.LOG_NAME).read_text()
