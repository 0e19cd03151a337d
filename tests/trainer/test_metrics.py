"""Metric files survive resumption and torn writes."""

import json

import numpy as np

from marl_jax.trainer.metrics import MetricWriter, read_jsonl


def test_jsonl_records_and_resume_truncation(tmp_path):
  w = MetricWriter(str(tmp_path))
  for step in range(1, 6):
    w.write(step, {"loss": np.float32(step / 2), "role/acc": step, "vec": np.zeros(3)})
  w.close()
  records = read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
  assert records[1] == {"step": 2, "loss": 1.0, "role/acc": 2}  # non-scalars dropped
  # A run resumed from step 3 forgets what the killed run logged after it.
  w = MetricWriter(str(tmp_path), resume_step=3)
  w.write(4, {"loss": 9.0})
  w.close()
  assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [1, 2, 3, 4]
  assert read_jsonl(str(tmp_path / "metrics.jsonl"))[-1]["loss"] == 9.0
  assert list((tmp_path / "tensorboard").iterdir())


def test_torn_last_line_is_ignored_and_nan_kept_as_text(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
  assert read_jsonl(str(path)) == [{"step": 1}]
  w = MetricWriter(str(tmp_path), resume_step=1, tensorboard=False)
  w.write(2, {"loss": float("nan")})
  w.close()
  assert read_jsonl(str(path)) == [{"step": 1}, {"step": 2, "loss": "nan"}]
