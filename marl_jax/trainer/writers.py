"""Experiment trackers behind one interface, chosen by config.metrics.writers.

A writer has three methods (the shape of CLU's metric writers, so a CLU or
metrax writer wraps in a few lines):

    write(step, metrics)          # a step's record: name -> scalar
    write_hparams(hparams)        # the run's flattened config, once, at step 0
    close()

Built in:

  jsonl        <workdir>/metrics.jsonl (always on: reports, sweeps and resumption read it)
  tensorboard  <workdir>/tensorboard/ event files
  wandb        Weights & Biases: pip install 'marl_jax[wandb]'; config.metrics.wandb
               sets project, entity, mode ('online', 'offline': files under
               <workdir>/wandb to `wandb sync` later, 'disabled'; '' = $WANDB_MODE
               or wandb's default). A resumed run continues the same W&B run (its id
               is kept in <workdir>/wandb_run_id.txt).

A writer of your own, without subclassing anything (CluWriter wraps a CLU or
metrax-style one):

    writers.register("my_tracker", lambda config, workdir, resume_step: MyWriter(...))
    # then --config.metrics.writers="('jsonl', 'my_tracker')" (with import=<your module>)

Only process 0 writes; the others get writers that do nothing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import uuid
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import ml_collections
import numpy as np

from marl_jax.trainer import metrics as metrics_lib
from marl_jax.trainer import rundir

DEFAULT = ("jsonl", "tensorboard")
WANDB_MODES = ("", "online", "offline", "disabled")
WANDB_INSTALL = "pip install 'marl_jax[wandb]'"


class Writer(Protocol):
  def write(self, step: int, metrics: Mapping[str, Any]) -> None: ...

  def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...

  def close(self) -> None: ...


# name -> factory(config, workdir, resume_step) -> Writer. jsonl and tensorboard
# share one MetricWriter (open() builds it), so their factories are None here.
_REGISTRY: dict[str, Callable[..., Writer] | None] = {"jsonl": None, "tensorboard": None}


def register(name: str, factory: Callable[[ml_collections.ConfigDict, str, int | None], Writer]
             ) -> None:
  """Makes `name` a valid entry of config.metrics.writers."""
  if not name or not isinstance(name, str):
    raise ValueError(f"A writer name must be a non-empty string, not {name!r}.")
  if _REGISTRY.get(name) is None and name in _REGISTRY:
    raise ValueError(f"Writer {name!r} is built in; choose another name.")
  _REGISTRY[name] = factory


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def configured(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """config.metrics.writers (DEFAULT for a config saved before the field existed)."""
  section = config.get("metrics") if hasattr(config, "get") else None
  if section is None or "writers" not in section:
    return DEFAULT
  value = section["writers"]
  return (value,) if isinstance(value, str) else tuple(value)


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """What is wrong with config.metrics, one line each (config.validate lists them)."""
  chosen = configured(config)
  out = []
  unknown = [n for n in chosen if n not in _REGISTRY]
  if unknown:
    out.append(f"metrics.writers has {unknown}, not writers; valid: {names()} (a writer of "
               "your own: marl_jax.trainer.writers.register, imported with import=<module>)")
  if "jsonl" not in chosen:
    out.append(f"metrics.writers={chosen} must include 'jsonl': reports, sweeps and "
               "resumption read metrics.jsonl")
  if "wandb" in chosen:
    if importlib.util.find_spec("wandb") is None:
      out.append(f"metrics.writers has 'wandb' but wandb is not installed: {WANDB_INSTALL}")
    mode = config.metrics.wandb.mode
    if mode not in WANDB_MODES:
      out.append(f"metrics.wandb.mode={mode!r} is unknown; valid: {WANDB_MODES}")
  return out


class _Nothing:
  """The writer of processes other than 0."""

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    del step, metrics

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    del hparams

  def close(self) -> None:
    pass


class Writers:
  """Several writers as one: each call goes to every writer, in order."""

  def __init__(self, writers: Sequence[Writer]):
    self.writers = list(writers)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    for writer in self.writers:
      writer.write(step, metrics)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    for writer in self.writers:
      writer.write_hparams(hparams)

  def close(self) -> None:
    for writer in self.writers:
      writer.close()


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float | int]:
  """The finite numeric scalars of a record (what a tracker can plot)."""
  out = {}
  for key, value in metrics.items():
    if isinstance(value, (str, bool)) or value is None:
      continue
    value = np.asarray(value)
    if value.size == 1 and np.issubdtype(value.dtype, np.number):
      value = value.item()
      if math.isfinite(value):
        out[key] = value
  return out


def import_wandb():
  """The wandb module, or an ImportError whose one line says which extra to install."""
  try:
    import wandb  # pylint: disable=g-import-not-at-top  # optional: the 'wandb' extra
  except ImportError:
    raise ImportError(f"config.metrics.writers has 'wandb' but wandb is not installed: "
                      f"{WANDB_INSTALL}") from None
  return wandb


class WandbWriter:
  """Weights & Biases: one W&B run per workdir, continued when the run resumes."""

  ID_FILE = "wandb_run_id.txt"

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               resume_step: int | None = None):
    wandb = import_wandb()
    settings = config.metrics.wandb
    id_path = os.path.join(workdir, self.ID_FILE)
    run_id = None
    if resume_step is not None and os.path.exists(id_path):
      with open(id_path) as f:
        run_id = f.read().strip() or None
    run_id = run_id or uuid.uuid4().hex[:12]  # W&B ids: lower-case letters and digits
    os.makedirs(workdir, exist_ok=True)
    with open(id_path, "w") as f:
      f.write(run_id + "\n")
    kwargs = dict(project=settings.project or None, entity=settings.entity or None,
                  name=settings.name or os.path.basename(os.path.abspath(workdir)),
                  dir=workdir, id=run_id, resume="allow",
                  config=rundir.config_dict(config))
    if settings.mode:
      kwargs["mode"] = settings.mode
    self.run = wandb.init(**kwargs)

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    numbers = _numbers(metrics)
    if numbers:
      self.run.log(numbers, step=int(step))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.run.config.update(dict(hparams), allow_val_change=True)

  def close(self) -> None:
    self.run.finish()


register("wandb", lambda config, workdir, resume_step: WandbWriter(config, workdir, resume_step))


class CluWriter:
  """A CLU (clu.metric_writers) or metrax-style writer -- write_scalars(step,
  scalars), write_hparams, flush, close -- as a writer of this interface:

    from clu import metric_writers
    writers.register("clu", lambda config, workdir, resume_step: writers.CluWriter(
        metric_writers.create_default_writer(workdir, asynchronous=False)))
  """

  def __init__(self, writer: Any):
    self.writer = writer

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    numbers = _numbers(metrics)
    if numbers:
      self.writer.write_scalars(int(step), numbers)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.writer.write_hparams(dict(hparams))

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


def open_writers(config: ml_collections.ConfigDict, workdir: str, *,
                 resume_step: int | None = None) -> Writers:
  """The writers config.metrics.writers names, as one; metrics.jsonl first.

  resume_step as metrics.MetricWriter's (None: a run from step 0).
  """
  found = problems(config)
  if found:
    raise ValueError("Invalid config.metrics: " + "; ".join(found) + ".")
  chosen = configured(config)
  if jax.process_index() != 0:
    return Writers([_Nothing()])
  # Before anything is created: a missing extra must not leave a half-opened run.
  if "wandb" in chosen:
    import_wandb()
  out: list[Writer] = [metrics_lib.MetricWriter(workdir, resume_step=resume_step,
                                                tensorboard="tensorboard" in chosen)]
  for name in chosen:
    factory = _REGISTRY[name]
    if factory is not None:
      out.append(factory(config, workdir, resume_step))
  return Writers(out)
