"""Every metric key is a valid TensorBoard tag, and old run directories still read."""

import json
import pathlib
import re
import types

import numpy as np

from marl_jax import workflows
from marl_jax.rl import interventions
from marl_jax.rl import step_metrics
from marl_jax.trainer import metrics as metrics_lib
from marl_jax.workflows import episodes as episodes_lib

# What TensorBoard keeps as is; tensorboardX rewrites anything else to '_' and
# logs a warning per key, every run (12 lines of the demo's console did).
_VALID = re.compile(r"^[-/\w.]+$")


def _step_keys(roles, mode):
  n = len(roles)
  gram = np.eye(n) + 0.5
  raw = {"loss": 0.1, "tokens": np.ones(n), "slot_grad_norms": np.ones(n), "role_gram": gram,
         **{k: np.ones(n) for k in ("entropy", "clip_frac", "kl", "ratio")},
         **{k: np.ones(n) for k in interventions.METRIC_KEYS}}
  routing = types.SimpleNamespace(mode=mode, slot_of=roles.index)
  return (set(step_metrics.name(raw, roles, routing))
          | set(interventions.name_metrics(raw, roles)))


def _episode_keys(roles):
  calls = [types.SimpleNamespace(
      role=role, completion_tokens=[1, 2], prompt_tokens=[1], prompt_truncated=False,
      correct=True, parsed=types.SimpleNamespace(
          failures=("empty", "no_answer", "no_verdict", "too_few", "too_many")))
           for role in roles]
  return set(episodes_lib.role_metrics(
      [types.SimpleNamespace(reward=1.0, correct=True, calls=calls)]))


def test_every_registered_workflow_names_valid_tensorboard_tags():
  for name in workflows.names():
    roles = list(workflows.get(name).roles)
    keys = _step_keys(roles, "isolated") | _step_keys(roles, "shared") | _episode_keys(roles)
    assert any(k.startswith("grad_cos/") for k in keys) == (len(roles) > 1), name
    bad = sorted(k for k in keys if not _VALID.match(k))
    assert not bad, f"workflow {name}: keys TensorBoard rejects: {bad}"


def test_runs_written_with_the_old_pair_name_read_under_the_new_one(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(json.dumps({"step": 5, "grad_cos/generator~aggregator": 0.25, "loss": 1.0})
                  + "\n" + json.dumps({"step": 6, "grad_cos/generator_vs_aggregator": 0.5}) + "\n")
  records = metrics_lib.read_jsonl(str(path))
  assert [r.get("grad_cos/generator_vs_aggregator") for r in records] == [0.25, 0.5]
  assert records[0]["loss"] == 1.0 and not any("~" in k for r in records for k in r)
  assert step_metrics.canonical_key("grad_cos/a~b") == step_metrics.pair_key("a", "b")
  assert step_metrics.canonical_key("loss") == "loss"


def test_published_runs_read_with_todays_names():
  path = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "tiny_study" / "runs" /
          "voting-math-tiny_m-isolated-s0" / "metrics.jsonl")
  keys = {k for r in metrics_lib.read_jsonl(str(path)) for k in r}
  assert "grad_cos/generator_vs_aggregator" in keys and not any("~" in k for k in keys)
