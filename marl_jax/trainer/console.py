"""What a run prints, and its log file.

The console shows what a job prints (the progress line, its table), warnings
and errors. Every log record at INFO and above, the libraries' included
(orbax's ~45 lines per checkpoint save, absl, jax/XLA, tensorboardX), goes to
`<workdir>/log.txt` (`log.<process>.txt` on the other processes of a
multi-host run). absl's `--verbosity` on the command line brings INFO (0) or
DEBUG (1) back to the console (so do --alsologtostderr and --logtostderr).

    console.setup()                    # first thing in a launch script's main()
    console.open_log(workdir)          # train_and_evaluate does this itself
    progress = console.Progress(total_steps, start_step, learning_rate=...)
    progress.update(step, metrics, last_eval)   # after every step

Records logged between the two (building the model, say) are held in memory
and written first when the file opens, so the file holds the whole run.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import shutil
import sys
import time
from typing import IO, Any, Callable, Mapping

from absl import flags
from absl import logging as absl_logging
import jax

LOG_NAME = "log.txt"
# Records held between setup() and open_log(); a job that never opens a log
# file (launch/report.py) must not grow without bound.
_HELD = 10_000

_state = {"file": None, "buffer": None, "console": None}


def _absl_to_standard(verbosity: int) -> int:
  # absl: -1 warning, 0 info, 1 debug, higher: more verbose debug (vlog).
  return absl_logging.converter.absl_to_standard(verbosity) if verbosity <= 1 else (
      logging.DEBUG - (verbosity - 1))


def console_level(verbosity: int | None = None) -> int:
  """The console's level: `verbosity` (absl's scale) when given, else absl's
  --verbosity when it was on the command line (or INFO with --alsologtostderr
  or --logtostderr, which asked for the log on the console), else WARNING."""
  parsed = flags.FLAGS.is_parsed()
  if verbosity is None and parsed and flags.FLAGS["verbosity"].present:
    verbosity = flags.FLAGS.verbosity
  elif verbosity is None and parsed and (flags.FLAGS["alsologtostderr"].value
                                         or flags.FLAGS["logtostderr"].value):
    verbosity = 0
  return logging.WARNING if verbosity is None else _absl_to_standard(verbosity)


class _Held(logging.Handler):
  """Keeps the last records until a log file opens (then replays them into it)."""

  def __init__(self, capacity: int = _HELD):
    super().__init__()
    self.records: collections.deque = collections.deque(maxlen=capacity)

  def emit(self, record: logging.LogRecord) -> None:
    self.records.append(record)


class LiveLine:
  """One line of the console rewritten in place (a terminal), which log
  records on the console erase before they print (the next update redraws it)."""

  def __init__(self, stream: IO[str] | None = None):
    self.stream = stream or sys.stdout
    self.shown = False

  def show(self, text: str) -> None:
    self.stream.write("\r\033[K" + text)
    self.stream.flush()
    self.shown = True
    _live.add(self)

  def erase(self) -> None:
    if self.shown:
      self.stream.write("\r\033[K")
      self.stream.flush()
      self.shown = False

  def end(self) -> None:
    """Leaves the line as it is and moves to the next one."""
    if self.shown:
      self.stream.write("\n")
      self.stream.flush()
      self.shown = False
    _live.discard(self)


_live: set[LiveLine] = set()


def _erase_live(record: logging.LogRecord) -> bool:
  # A filter of the console handler: a record must not print in the middle of the line.
  del record
  for line in list(_live):
    line.erase()
  return True


@atexit.register
def _end_live() -> None:
  # A run that fails mid-line: its traceback starts on a line of its own.
  for line in list(_live):
    line.end()


def _console_handler() -> logging.Handler | None:
  """The handler that writes to the terminal: absl's when in use (app.run), else
  a stream handler on stderr/stdout, else None."""
  root = logging.getLogger()
  absl_handler = absl_logging.get_absl_handler()
  if absl_handler in root.handlers:
    return absl_handler
  for handler in root.handlers:
    if (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)):
      return handler
  return None


def _quiet(handler: logging.Handler, level: int) -> None:
  handler.setLevel(level)
  if _erase_live not in handler.filters:
    handler.addFilter(_erase_live)
  _state["console"] = handler


def setup(verbosity: int | None = None) -> int:
  """Quiets the console (warnings and errors only, unless --verbosity) and holds
  every INFO record for the log file; returns the console's level.

  Call it first in a launch script's main(), after absl parsed the flags.
  """
  level = console_level(verbosity)
  root = logging.getLogger()
  handler = _console_handler()
  if handler is None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(absl_logging.PythonFormatter())
    root.addHandler(handler)
  _quiet(handler, level)
  # The root level decides what reaches any handler: INFO at least, for the file.
  root.setLevel(min(logging.INFO, level))
  absl_logging.get_absl_logger().setLevel(logging.NOTSET)  # follow the root's level
  if _state["buffer"] is None and _state["file"] is None:
    _state["buffer"] = _Held()
    root.addHandler(_state["buffer"])
  return level


def open_log(workdir: str, process_index: int = 0) -> str:
  """Appends the run's log records to <workdir>/log.txt (log.<i>.txt on process
  i > 0), after those held since setup(); returns the path.

  Without setup() (a notebook, a test) and with no handler of the caller's, it
  also adds a console handler for warnings and errors: once a handler exists,
  Python's last-resort printing of warnings stops.
  """
  root = logging.getLogger()
  close_log()
  if _console_handler() is None and not [h for h in root.handlers if h is not _state["buffer"]]:
    setup()
  os.makedirs(workdir, exist_ok=True)
  name = LOG_NAME if process_index == 0 else f"log.{process_index}.txt"
  path = os.path.join(workdir, name)
  handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=False)
  handler.setFormatter(absl_logging.PythonFormatter())
  buffer = _state["buffer"]
  if buffer is not None:
    root.removeHandler(buffer)
    for record in buffer.records:
      handler.handle(record)
    _state["buffer"] = None
  root.addHandler(handler)
  _state["file"] = handler
  return path


def close_log() -> None:
  """Closes the log file open_log opened (records go nowhere but the console after)."""
  handler = _state["file"]
  if handler is not None:
    logging.getLogger().removeHandler(handler)
    handler.close()
    _state["file"] = None


def duration(seconds: float) -> str:
  """'45s', '3m05s', '2h07m'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """The run's progress line: step, steps/s, tokens/s, train reward, the last
  evaluation and its step, learning rate and ETA.

  On a terminal it is one line rewritten in place; elsewhere (a file, a pipe, a
  scheduler's log) one line every `every` steps and at the last step. steps/s
  and the ETA count from the end of the first step this process ran, which
  compiles (a minute against ~1 s a step in the tiny world): counting it gave
  a first ETA of 41 min for a 1.5-min run.
  """

  def __init__(self, total_steps: int, start_step: int = 0, *,
               learning_rate: Callable[[int], float] | float | None = None, every: int = 10,
               stream: IO[str] | None = None, active: bool | None = None,
               clock: Callable[[], float] = time.monotonic):
    self.total, self.start, self.every = total_steps, start_step, max(1, every)
    self.learning_rate, self.clock = learning_rate, clock
    self.stream = stream or sys.stdout
    self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
    self.active = jax.process_index() == 0 if active is None else active
    self.live = LiveLine(self.stream) if self.terminal else None
    self.first: tuple[int, float] | None = None  # (step, time) after the compiling step
    self.eval: tuple[float, int] | None = None    # (accuracy, step) of the last evaluation

  def rate(self, step: int) -> float | None:
    """Steps per second since the first step ended; None before a second one."""
    now = self.clock()
    if self.first is None:
      self.first = (step, now)
      return None
    steps, seconds = step - self.first[0], now - self.first[1]
    return steps / seconds if steps > 0 and seconds > 0 else None

  def line(self, step: int, metrics: Mapping[str, Any],
           last_eval: Mapping[str, Any] | None = None) -> str:
    """The line after `step` steps; `metrics` are the step's (evaluation
    included when it ran), `last_eval` the run's last evaluation."""
    if "eval/accuracy" in metrics:
      self.eval = (float(metrics["eval/accuracy"]), step)
    elif self.eval is None and last_eval and "eval/accuracy" in last_eval:
      self.eval = (float(last_eval["eval/accuracy"]), self.start)  # the one before step 1
    rate = self.rate(step)
    parts = [f"step {step}/{self.total}",
             "- steps/s" if rate is None else f"{rate:.2f} steps/s"]
    if "rollout_tokens_per_s" in metrics:
      parts.append(f"{float(metrics['rollout_tokens_per_s']):,.0f} tok/s")
    reward = metrics.get("reward_final/mean", metrics.get("accuracy"))
    if reward is not None:
      parts.append(f"reward {float(reward):.3f}")
    parts.append("eval -" if self.eval is None else
                 f"eval {self.eval[0]:.3f} @{self.eval[1]}")
    rates = [float(v) for k, v in metrics.items() if k.startswith("lr/")]
    if rates:  # the slots' own last rates (trainer.mechanics): per-update ticks part them
      low, high = min(rates), max(rates)
      parts.append(f"lr {high:.2e}" if low == high else f"lr {low:.2e}-{high:.2e}")
    elif self.learning_rate is not None:
      lr = (self.learning_rate(max(step - 1, 0)) if callable(self.learning_rate)
            else self.learning_rate)  # the rate of the update this step applied
      parts.append(f"lr {float(lr):.2e}")
    parts.append("ETA -" if rate is None else f"ETA {duration((self.total - step) / rate)}")
    return " | ".join(parts)

  def update(self, step: int, metrics: Mapping[str, Any],
             last_eval: Mapping[str, Any] | None = None) -> str | None:
    """Computes the line after `step` and shows it; returns what was printed."""
    text = self.line(step, metrics, last_eval)
    if not self.active:
      return None
    last = step >= self.total
    if self.live is not None:
      width = shutil.get_terminal_size((120, 20)).columns - 1
      self.live.show(text[:width])  # a wrapped line cannot be rewritten in place
      if last:
        self.live.end()
      return text
    if last or step % self.every == 0:
      print(text, file=self.stream, flush=True)
      return text
    return None

  def close(self) -> None:
    if self.live is not None:
      self.live.end()


def progress_every(config: Any, default: int = 10) -> int:
  """config.metrics.progress_every (the default for a config saved before it existed)."""
  section = config.get("metrics") if hasattr(config, "get") else None
  return int(section.get("progress_every", default)) if section is not None else default
