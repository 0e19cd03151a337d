"""Metric writers: JSON lines and TensorBoard events, silent on non-zero processes.

`<workdir>/metrics.jsonl` holds one JSON object per record with a "step";
a resumed run first cuts the records past the step it resumes from, so the
file reads as if the run had never been interrupted. What is cut is never
lost: it is appended first, verbatim, to `<workdir>/metrics.cut.jsonl`
after a {"cut": {...}} line saying when and why.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np

from marl_jax.rl import step_metrics


def _scalar(value: Any) -> float | int | str | None:
  if isinstance(value, (str, bool)) or value is None:
    return value
  value = np.asarray(value)
  if value.size != 1:
    return None
  value = value.item()
  return value if isinstance(value, int) or math.isfinite(value) else str(value)


def read_jsonl(path: str) -> list[dict]:
  """Records of a metrics file; a torn last line (killed mid-write) is skipped.

  Keys an older version wrote under another name (grad_cos/<a>~<b>) come back
  under today's (rl.step_metrics.canonical_key), so published runs still read.
  """
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        break
      if any("~" in key for key in record):
        record = {step_metrics.canonical_key(k): v for k, v in record.items()}
      records.append(record)
  return records


class MetricWriter:
  """Writes scalar metrics to `<workdir>/metrics.jsonl` and TensorBoard."""

  def __init__(self, workdir: str, *, resume_step: int | None = None, tensorboard: bool = True):
    """resume_step: the step the run resumes from (records up to it are kept);
    None: a run from step 0 (every earlier record is cut)."""
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.cut_path = os.path.join(workdir, "metrics.cut.jsonl")
    self._tb = None
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._cut(resume_step)
    self._file = open(self.path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _cut(self, resume_step: int | None) -> None:
    """Keeps the lines of steps <= resume_step; the others (and torn lines) go to
    metrics.cut.jsonl first, synced, and only then leave metrics.jsonl."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [line if line.endswith("\n") else line + "\n" for line in f]
    kept, cut = [], []
    for line in lines:
      try:
        step = int(json.loads(line)["step"])
      except (ValueError, KeyError, TypeError):
        step = None  # torn by a kill mid-write
      ok = step is not None and resume_step is not None and step <= resume_step
      (kept if ok else cut).append(line)
    if not cut:
      return
    with open(self.cut_path, "a") as f:
      f.write(json.dumps({"cut": {"resumed_from_step": resume_step, "lines": len(cut),
                                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
              + "\n")
      f.writelines(cut)
      f.flush()
      os.fsync(f.fileno())
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self.path)  # atomic: an old file is never half-rewritten

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.active:
      return
    record = {"step": int(step)}
    for key, value in metrics.items():
      scalar = _scalar(value)
      if scalar is not None:
        record[key] = scalar
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          self._tb.add_scalar(key, value, step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self.active and self._tb is not None:
      flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
              for k, v in hparams.items()}
      self._tb.add_text("config", json.dumps(flat, indent=1, default=str), 0)

  def close(self) -> None:
    if self.active:
      self._file.close()
      if self._tb is not None:
        self._tb.close()
