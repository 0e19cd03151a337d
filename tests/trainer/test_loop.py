"""One training step per workflow x policy mode; metrics, checkpoints, resume."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from marl_jax.trainer import loop as train
from marl_jax.trainer import rundir
from marl_jax.trainer.metrics import read_jsonl
from tests.helpers import REPO, parity_rewards, tiny_config

_VOLATILE = ("time/", "_per_s")


def _stable(records):
  return [{k: v for k, v in r.items() if not any(s in k for s in _VOLATILE)} for r in records]


@pytest.mark.parametrize("workflow", ["single", "voting", "eval_opt", "orch_workers"])
@pytest.mark.parametrize("policy", ["shared", "isolated"])
def test_one_step_per_workflow_and_policy(workflow, policy, tmp_path):
  config = tiny_config(f"workflow={workflow},policy={policy}", steps=1)
  config.rollout.batch_size = 1
  train.train_and_evaluate(config, str(tmp_path))
  records = read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in records] == [0, 1]
  step = records[1]
  assert "eval/accuracy" in records[0] and "eval/accuracy" in step
  assert 0.0 <= step["accuracy"] <= 1.0 and "loss" in step
  roles = {k.split("/", 1)[1] for k in step if k.startswith("calls/")}
  assert roles and all(f"entropy/{r}" in step for r in roles)
  assert all(f"grad_norm/{r}" in step for r in roles)  # per role, SP and IP
  if policy == "shared" and len(roles) > 1 and step["grad_norm/slot0"] > 0:
    assert abs(sum(step[f"grad_mass_share/{r}"] for r in roles) - 1) < 1e-4
  # The joint scheme: one optimizer step of every slot; SP's slot named once, 'shared'.
  names = ["shared"] if policy == "shared" else sorted(roles)
  assert sorted(k.split("/")[1] for k in step if k.startswith("opt_steps/")) == names
  assert all(step[f"opt_steps/{n}"] == 1 and f"lr/{n}" in step and f"drift/{n}" in step
             for n in names)
  assert os.path.isdir(tmp_path / "checkpoints" / "1")
  assert os.path.exists(tmp_path / "rollouts" / "step_1.jsonl")
  # the stage schedule verifies after the last call: nothing overlaps decoding
  assert step["time/verify_overlap_s"] == 0.0 <= step["time/verify_s"]


def test_incompatible_workdir_names_the_fields(tmp_path):
  train.train_and_evaluate(tiny_config("workflow=single", steps=1), str(tmp_path))
  other = tiny_config("workflow=single", steps=1)
  other.rl.lr = 0.5
  with pytest.raises(ValueError, match=r"rl\.lr"):
    train.train_and_evaluate(other, str(tmp_path))


_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.helpers import parity_rewards, tiny_config
from marl_jax.trainer import loop as train
train.train_and_evaluate(tiny_config("workflow=voting", steps=4), {workdir!r},
                         rewards_of=parity_rewards)
"""


def test_kill_9_then_resume_logs_what_an_uninterrupted_run_logs(tmp_path):
  root = REPO
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  # Every run in a fresh process: this worker's earlier tests may have left
  # process-wide state (the CPU kernels' form, compiled programs) that moves
  # logprobs in their last bits, and the comparison is exact.
  run = lambda workdir: subprocess.run(
      [sys.executable, "-c", _SCRIPT.format(root=root, workdir=workdir)], check=True,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
  run(straight)
  proc = subprocess.Popen([sys.executable, "-c", _SCRIPT.format(root=root, workdir=killed)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  # Kill as soon as a checkpoint past step 1 exists: mid-run, maybe mid-save.
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(os.path.join(killed, "checkpoints", "2")):
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert len(read_jsonl(os.path.join(killed, "metrics.jsonl"))) < 5
  run(killed)  # resumes
  want = _stable(read_jsonl(os.path.join(straight, "metrics.jsonl")))
  got = _stable(read_jsonl(os.path.join(killed, "metrics.jsonl")))
  assert [r["step"] for r in got] == [0, 1, 2, 3, 4]
  assert any(r["grad_norm/slot0"] > 0 for r in want[1:])  # the policy really moved
  # update_cos needs the slot's previous update, which checkpoints do not hold: the
  # first step after the resume has none (trainer.mechanics); every other figure is exact.
  cos = lambda r: {k for k in r if k.startswith("update_cos/")}
  gaps = [i for i, (g, w) in enumerate(zip(got, want)) if cos(w) and not cos(g)]
  assert len(gaps) <= 1 and all(cos(g) == cos(w) for g, w in zip(got, want)
                                if g["step"] not in [got[i]["step"] for i in gaps])
  for i in gaps:
    want[i] = {k: v for k, v in want[i].items() if k not in cos(want[i])}
  assert got == want
  # Each launch left its record, the killed one's kept: the code that ran each part.
  launches = read_jsonl(os.path.join(killed, rundir.LAUNCHES))
  assert len(launches) == 2 and len(read_jsonl(os.path.join(straight, rundir.LAUNCHES))) == 1
  assert {r["commit"] for r in launches} == {rundir._git("rev-parse", "HEAD")}  # pylint: disable=protected-access
  assert launches[0]["time"] <= launches[1]["time"] and launches[1]["jax"]


def test_checkpoint_restore_and_per_role_export_match_the_routed_policy(tmp_path):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import transformers
  from marl_jax.trainer import build
  from marl_jax.trainer import restore as checkpoint_io
  from marl_jax.models import forward_logits, load_pretrained
  workdir = str(tmp_path / "run")
  config = tiny_config("workflow=voting,policy=isolated", steps=2)
  config.rl.warmup_steps = 0
  config.rollout.group_size = 4
  train.train_and_evaluate(config, workdir, rewards_of=parity_rewards)
  assert any(r.get("grad_norm/slot0", 0) > 0 for r in read_jsonl(workdir + "/metrics.jsonl"))
  config = checkpoint_io.load_config(workdir)
  run = build.build(config)
  step, trainable = checkpoint_io.restore_trainable(run, workdir)
  assert step == 2
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), trainable, run.store.trainable)
  assert max(jax.tree.leaves(moved)) > 0
  paths = checkpoint_io.export_roles(run, trainable, str(tmp_path / "export"))
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 100, size=(1, 9)))
  store = run.store.replace(trainable=trainable)
  for role, path in paths.items():
    route = jax.tree.map(jnp.asarray, store.route([role]))
    routed, _ = store.token_logprobs(tokens, jnp.ones_like(tokens, bool), route)
    cfg, params = load_pretrained(path)
    logits = forward_logits(cfg, params, tokens)[:, :-1]
    exported = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(exported, routed, atol=1e-4)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
      ref = hf(torch.as_tensor(np.asarray(tokens))).logits.numpy()[:, :-1]
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-4)


def test_kl_to_the_base_is_zero_at_start_and_grows_after_updates(tmp_path):
  config = tiny_config("workflow=single", steps=2)
  config.rl.kl_coef, config.rl.warmup_steps, config.rollout.group_size = 0.1, 0, 4
  train.train_and_evaluate(config, str(tmp_path), rewards_of=parity_rewards)
  kl = [r["kl/generator"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))[1:]]
  assert abs(kl[0]) < 1e-7 and kl[1] > 1e-9


def test_every_intervention_on_then_evaluate_and_export_from_the_workdir(tmp_path):
  """The train state is built in one place (build.train_state): a run with every
  intervention on restores, evaluates and exports from its workdir."""
  from marl_jax.trainer import build, evaluate
  from marl_jax.trainer import checkpoints as checkpointing
  from marl_jax.trainer import restore
  config = tiny_config("workflow=voting", steps=1)
  config.rollout.batch_size = 1
  config.interventions.coherence = 0.5
  config.interventions.balance = "cap"
  config.rl.kl_role_coefs = {"generator": 0.05}
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir, rewards_of=parity_rewards)
  record = read_jsonl(workdir + "/metrics.jsonl")[-1]
  assert record["intervention/coherence_scale/generator"] == 1.0  # gbar was 0 at step 0
  assert 0.0 < record["intervention/balance_scale/aggregator"] <= 1.0
  run = build.build(restore.load_config(workdir))
  template, _ = build.train_state(run.config, run)
  step, state, _ = checkpointing.Checkpointer(workdir).restore(template)
  ema = jax.tree.leaves(state["interventions"]["coherence_ema"])
  assert step == 1 and any(np.any(np.asarray(x) != 0) for x in ema)
  step, trainable = restore.restore_trainable(run, workdir)
  assert step == 1
  metrics = evaluate.evaluate(run, trainable, num_problems=2)
  assert 0.0 <= metrics["eval/accuracy"] <= 1.0
  paths = restore.export_roles(run, trainable, str(tmp_path / "export"))
  assert sorted(paths) == sorted(run.store.roles)
  assert all(os.path.exists(os.path.join(p, "config.json")) for p in paths.values())


def test_rollouts_are_saved_with_prompts_parse_status_and_the_verdict(tmp_path):
  from marl_jax.tasks import STATUSES
  config = tiny_config("workflow=voting", steps=1)
  train.train_and_evaluate(config, str(tmp_path))
  records = read_jsonl(str(tmp_path / "rollouts" / "step_1.jsonl"))
  assert records and all(r["verdict"]["status"] in STATUSES for r in records)
  for record in records:
    assert record["question"] and record["calls"]
    for call in record["calls"]:
      assert record["question"] in call["prompt"] and call["parse"]
  metrics = read_jsonl(str(tmp_path / "metrics.jsonl"))[-1]
  assert 0.0 <= metrics["parse_ok/aggregator"] <= 1.0


def test_eval_modes_are_separate_switches(tmp_path):
  from marl_jax.trainer import build, evaluate
  config = tiny_config("workflow=single", steps=1)
  config.eval.sampled, config.eval.greedy = False, True
  run = build.build(config)
  metrics = evaluate.evaluate(run, run.store.trainable)
  assert "eval/greedy/accuracy" in metrics and not any("sampled" in k for k in metrics)
  assert metrics["eval/accuracy"] == metrics["eval/greedy/accuracy"]
  config.eval.greedy = False
  with pytest.raises(ValueError, match="eval.sampled and config.eval.greedy are both off"):
    evaluate.evaluate(build.build(config), run.store.trainable)
