"""Claim 3: update mechanics and their predictions, same-role amplification pairs,
and the claim's verdict on update norms, with its fallback to gradient norms."""

import json
import math
import os

import numpy as np
import pytest

from marl_jax.rl import update
from marl_jax.study import report
from marl_jax.study.diagnostics import amplification
from marl_jax.study.diagnostics import claims
from marl_jax.study.diagnostics import mechanics

STEPS = 30
# Calls an episode of each role: voting's generators (n) and aggregator;
# orch_workers' orchestrator, workers (m) and synthesizer.
ROLES = {"voting": lambda n: {"generator": n, "aggregator": 1},
         "orch_workers": lambda m: {"orchestrator": 1, "worker": m, "synthesizer": 1},
         "single": lambda n: {"generator": 1}}
ROLE = {"voting": "generator", "orch_workers": "worker", "single": "generator"}


def _config(workflow, agents, policy="isolated", seed=0, **rl):
  options = {} if workflow == "single" else {"n" if workflow == "voting" else "m": agents}
  return {"workflow": {"name": workflow, "options": options}, "task": {"family": "math"},
          "model": {"preset": "tiny_m"}, "policy": {"mode": policy}, "seed": seed,
          "train": {"steps": STEPS},
          "rl": {"lr": 3e-4, "schedule": "cosine", "warmup_steps": 3, **rl}}


def _records(workflow, agents, episodes=64, scale=1.0, new_metrics=True, parse=None,
             opt_steps=None, lr=None):
  """Metrics of a run: calls per role, and the parallel role's figures times `scale`.

  parse: {role: share of calls that parse at step 1}; opt_steps, lr: logged per step.
  """
  role = ROLE[workflow]
  out = [{"step": 0, "eval/accuracy": 0.3}]
  for step in range(1, STEPS + 1):
    r = {"step": step}
    for name, count in ROLES[workflow](agents).items():
      r[f"calls/{name}"] = float(episodes * count)
      r[f"completion_tokens/{name}"] = float(episodes * count * 4)
      if parse and step == 1 and name in parse:
        r[f"parse/{name}/bad_choice"] = float(round(episodes * count * (1 - parse[name])))
    r[f"grad_norm/{role}"] = 0.5 * scale
    if new_metrics:
      r[f"update_norm/{role}"] = 0.01 * scale
      r[f"drift/{role}"] = 0.001 * step * scale
    if opt_steps is not None:
      r[f"opt_steps/{role}"] = float(opt_steps)
    if lr is not None:
      r[f"lr/{role}"] = lr
    if step % 10 == 0:
      r["eval/accuracy"] = 0.3 + 0.01 * step
    out.append(r)
  return out


def _write(root, name, config, records):
  workdir = os.path.join(root, name)
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in records))


def _predict(workflow, agents, **kw):
  n = (_config(workflow, agents, **kw.get("rl_n", {})),
       _records(workflow, agents, **kw.get("records_n", {})))
  one = (_config(workflow, 1, **kw.get("rl_1", {})),
         _records(workflow, 1, **kw.get("records_1", {})))
  return mechanics.predict(n, one, ROLE[workflow], window=amplification.WINDOW)


# --- mechanics and predictions ------------------------------------------------------


def test_joint_scheme_predictions_follow_the_global_denominator():
  """The issue's figures: voting n = 3 vs 1 gives 1.5 aligned / 0.87 independent;
  orch_workers m = 3 vs 1 gives 1.8 / 1.04 (the role's rows over all rows)."""
  voting = _predict("voting", 3)
  assert voting.gradient == pytest.approx((1.5, math.sqrt(3) / 2))
  assert round(voting.gradient[1], 2) == 0.87
  orch = _predict("orch_workers", 3)
  assert orch.gradient == pytest.approx((1.8, 3 * math.sqrt(3) / 5))
  assert round(orch.gradient[1], 2) == 1.04
  # General N: N (1 + O) / (N + O) aligned, sqrt(N) (1 + O) / (N + O) independent,
  # O = the other roles' calls an episode.
  five = _predict("orch_workers", 5)
  assert five.gradient == pytest.approx((5 * 3 / 7, math.sqrt(5) * 3 / 7))
  # One Adam step per iteration in both runs on the same schedule: no amplification.
  assert voting.update == pytest.approx((1.0, 1.0)) and voting.steps == (1.0, 1.0)
  assert voting.lr_source == "schedule" and not voting.steps_logged
  # The single workflow as a proxy: its generator holds all of its rows.
  proxy = mechanics.predict((_config("voting", 3), _records("voting", 3)),
                            (_config("single", 1), _records("single", 1)), "generator")
  assert proxy.gradient == pytest.approx((0.75, math.sqrt(3) / 4))


def test_token_mean_weights_rows_by_their_tokens():
  n = _records("voting", 3)
  for r in n[1:]:
    r["completion_tokens/aggregator"] *= 4  # the aggregator writes 4x longer replies
  found = mechanics.predict((_config("voting", 3, aggregation="token_mean"), n),
                            (_config("voting", 1, aggregation="token_mean"),
                             _records("voting", 1)), "generator")
  # generator tokens 3*4 of 3*4 + 16 against 4 of 4 + 4
  assert found.gradient[0] == pytest.approx((12 / 28) / (4 / 8))


def test_reference_scheme_predicts_more_optimizer_steps_per_iteration():
  ref = {"update_scheme": "reference", "minibatch_rows": 512}
  # 64 prompts x 8 samples: 1536 generator rows -> 3 steps of 512 rows; n = 1: 1 step.
  found = _predict("voting", 3, rl_n=ref, rl_1=ref, records_n={"episodes": 512},
                   records_1={"episodes": 512})
  assert found.steps == (3.0, 1.0)
  assert found.update == pytest.approx((3.0, math.sqrt(3)))
  assert found.gradient == pytest.approx((1.0, 1.0))  # each minibatch: a mean over 512 rows
  # The tiny world's 192 and 64 rows each fit one short minibatch: one step each, and
  # the means over 192 and 64 rows differ only in noise.
  tiny = _predict("voting", 3, rl_n=ref, rl_1=ref)
  assert tiny.steps == (1.0, 1.0) and tiny.update == pytest.approx((1.0, 1.0))
  assert tiny.gradient == pytest.approx((1.0, math.sqrt(64 / 192)))
  # Logged optimizer steps and rates win over the config (per-update schedule ticks).
  logged = _predict("voting", 3, rl_n=ref, rl_1=ref,
                    records_n={"opt_steps": 4, "lr": 2e-5}, records_1={"opt_steps": 1,
                                                                        "lr": 1e-5})
  assert logged.steps == (4.0, 1.0) and logged.steps_logged and logged.lr_source == "logged"
  assert logged.update == pytest.approx((8.0, 4.0)) and logged.lr_ratio == pytest.approx(2.0)


def test_mechanics_defaults_and_the_configs_schedule():
  old = mechanics.Mechanics.of({})  # a run from before the options existed
  assert (old.scheme, old.aggregation, old.epochs, old.minibatches) == (
      "joint", "seq_mean_token_mean", 1, 1)
  m = mechanics.Mechanics.of(_config("voting", 3))
  rate = update.learning_rate(3e-4, STEPS, 3, "cosine")
  assert m.schedule_lr([1, 2, 20]) == pytest.approx([float(rate(k)) for k in (0, 1, 19)])
  periodic = mechanics.Mechanics.of(_config("voting", 3, schedule_tail="periodic"))
  assert periodic.schedule_lr([1, 2]) is None  # cannot be reproduced: such runs log lr/<role>
  assert mechanics.Mechanics.of(_config("voting", 3, schedule="constant")).schedule_lr(
      [1, 30]) == pytest.approx([1e-4, 3e-4])  # warmup, then constant
  assert mechanics.learning_rates([{"step": 1, "lr/slot0": 1e-5, "lr/slot1": 3e-5}], m)[1] \
      == pytest.approx([3e-5])  # the largest slot's rate


# --- pairs and the claim ------------------------------------------------------------


def _sweep(root, new_metrics=True, parse_1=None, scale=2.5, seeds=(0, 1)):
  """Voting IP n = 3 runs (the generator's figures `scale` times larger) and
  their n = 1 references."""
  for seed in seeds:
    _write(root, f"voting-math-tiny_m-isolated-s{seed}", _config("voting", 3, seed=seed),
           _records("voting", 3, scale=scale * (1 + 0.01 * seed), new_metrics=new_metrics))
    _write(root, f"voting-math-tiny_m-isolated-s{seed}-voting_n1",
           _config("voting", 1, seed=seed),
           _records("voting", 1, new_metrics=new_metrics, parse=parse_1))
  return claims.score(report.load_sweep(root))


def test_claim_3_is_judged_on_update_norms_and_drift(tmp_path):
  scored = _sweep(str(tmp_path))
  pairs = claims.amplification_pairs(scored)
  assert len(pairs) == 2 and all(p.measured and not p.proxy for p in pairs)
  assert pairs[0].ratios == pytest.approx({"update_norm": 2.5, "drift": 2.5, "grad_norm": 2.5})
  claim = claims.claim_amplify(scored)
  assert claim.verdict == "supported"
  text = "\n".join(claim.lines)
  assert "Update norm ||delta theta|| per iteration" in claim.lines[0]
  assert "above 1 in 2/2" in claim.lines[0] and "Fallback" not in text
  # the predictions are stated: joint scheme, one Adam step each -> 1.00 / 1.00
  assert "Update norm, voting N = 3 vs 1 (same workflow, 2 pairs): predicted 1.00" in text
  assert "Gradient norm, voting N = 3 vs 1 (same workflow, 2 pairs): predicted 1.50 if the " \
      "rows' gradients align, 0.87 if independent" in text
  assert "Secondary: gradient norm" in text


def test_claim_3_falls_back_to_gradient_norms_for_older_runs(tmp_path):
  scored = _sweep(str(tmp_path), new_metrics=False, scale=0.6)
  pairs = claims.amplification_pairs(scored)
  assert len(pairs) == 2 and not any(p.measured for p in pairs)
  assert math.isnan(pairs[0].ratios["update_norm"])
  claim = claims.claim_amplify(scored)
  assert claim.lines[0].startswith("Fallback: these runs did not log update_norm")
  assert claim.verdict == "not supported"  # 0.6: below 1
  assert "observed 0.603 ± 0.004 (n=2), nearest: independent 2" in "\n".join(claim.lines)


def test_references_that_start_broken_are_flagged_and_left_out(tmp_path):
  scored = _sweep(str(tmp_path), parse_1={"aggregator": 0.3})
  pairs = claims.amplification_pairs(scored)
  assert [p.ref_broken for p in pairs] == [["aggregator"], ["aggregator"]]
  claim = claims.claim_amplify(scored)
  assert claim.verdict == "no data"
  text = "\n".join(claim.lines)
  assert "2/2 references start broken" in text and "Fallback" not in text
  assert "voting-math-tiny_m-isolated-s0-voting_n1 (aggregator)" in text
  assert any(line.startswith("Left out (broken reference), for the record: Update norm")
             for line in claim.lines)
  # 0.6 parses: no flag
  fine = _sweep(str(tmp_path / "fine"), parse_1={"aggregator": 0.6})
  assert claims.claim_amplify(fine).verdict == "supported"


def test_amplified_needs_most_pairs_and_two_standard_errors():
  assert amplification.amplified([1.2, 1.3, 1.25])
  assert not amplification.amplified([3.0, 0.9, 0.95])  # a mean above 1 by one pair
  assert not amplification.amplified([1.01, 1.5, 0.6])   # within two standard errors
  assert amplification.amplified([1.1])                   # one pair: its side of 1
  assert amplification.amplified([float("nan")]) is None
  prediction = _predict("voting", 3)
  assert amplification.nearest(0.9, prediction, "grad_norm") == "independent"
  assert amplification.nearest(1.45, prediction, "grad_norm") == "aligned"
  assert amplification.nearest(1.0, prediction) == "none"  # every prediction is 1
  assert np.isnan(amplification.mean_prediction([], "update_norm")[0])
