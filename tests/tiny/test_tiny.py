"""Tiny bases: scripted demonstrations, a small warm start, the cache."""

import collections
import os

import jax
import ml_collections
import numpy as np
import pytest

from marl_jax.trainer.config import get_config
from marl_jax import tasks, tiny, workflows
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import init_params
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import ScriptedPolicy
from marl_jax.tiny import cache, demonstrations as demos_lib, warm_start as warm_start_lib
from marl_jax.tiny.demonstrations import Noise, demonstrations
from marl_jax.workflows import rollout

TOK = CharTokenizer()
TASKS = {"math": tasks.get("arithmetic"), "code": tasks.get("tiny_code")}
WORKFLOWS = ("single", "voting", "majority_vote", "eval_opt", "orch_workers")
LIMITS = dict(max_prompt_len=192, max_new_tokens=24)
NOISELESS = Noise(wrong_answer=0.0, candidate_wrong=0.5, wrong_pick=0.0, rubber_stamp=0.0,
                  false_alarm=0.0)


def _problems(family, n=10, step=0):
  return TASKS[family].sample("train", n, seed=3, step=step)


@pytest.fixture(scope="module")
def demos():
  """(workflow, family) -> (problems, demonstrations) with the default noise."""
  out = {}
  for family in TASKS:
    problems = _problems(family)
    for name in WORKFLOWS:
      out[name, family] = problems, demonstrations(
          workflows.get(name), TASKS[family], problems, TOK, Noise(), (1, len(out)), **LIMITS)
  return out


def test_every_role_is_demonstrated_and_parses_without_fallback(demos):
  for (name, family), (_, calls) in demos.items():
    assert {d.call.role for d in calls} == set(workflows.get(name).roles), (name, family)
    for demo in calls:
      call = demo.call
      assert call.parsed.failures == (), (name, family, call.role, call.text)
      assert not call.truncated and not call.prompt_truncated
      assert call.completion_tokens[-1] == TOK.EOS


def test_demonstration_labels_agree_with_the_task_verifier(demos):
  checked = collections.Counter()
  for (name, family), (problems, calls) in demos.items():
    task = TASKS[family]
    for demo in calls:
      call, problem = demo.call, problems[demo.call.group]
      kind = call.parsed.kind
      if kind == "answer" or (kind == "choice" and call.value is None):
        right = task.verify(problem, call.text).reward == 1.0
        assert right == demo.correct, (name, family, call.role, call.text)
      elif kind == "choice":
        right = task.verify(problem, call.answer).reward == 1.0
        assert right == demo.correct, (name, family, call.role, call.text)
      elif kind == "verdict":
        truth = task.verify(problem, call.parsed.shown[0]).reward == 1.0
        assert (call.value.correct == truth) == demo.correct, (name, family, call.text)
      checked[kind] += 1
  assert set(checked) == {"answer", "choice", "verdict", "plan"}
  wrong = [d for (_, _), (_, calls) in demos.items() for d in calls
           if d.call.parsed.kind == "answer" and not d.correct]
  assert wrong, "the default noise should produce some wrong answers"


def test_noiseless_demonstrator_picks_and_judges_right():
  for family, task in TASKS.items():
    problems = _problems(family, 12, step=1)
    for name in ("voting", "orch_workers", "eval_opt"):
      calls = demonstrations(workflows.get(name), task, problems, TOK, NOISELESS, 5, **LIMITS)
      for demo in calls:
        if demo.call.parsed.kind in ("choice", "verdict"):
          assert demo.correct or not any(
              task.verify(problems[demo.call.group], a).reward for a in demo.call.parsed.shown
              if a is not None and demo.call.parsed.kind == "choice"), (name, demo.call.text)
        if demo.call.parsed.kind == "verdict":
          assert demo.correct, (name, family, demo.call.text)
        if demo.call.role == "synthesizer":  # a right pick or a right own answer
          assert demo.correct, (family, demo.call.text)


def test_wrong_answers_never_verify():
  rng = np.random.default_rng(0)
  for family, task in TASKS.items():
    problems = task.sample("train", 40, seed=4, step=0)
    wrong = [demos_lib.wrong_answer(task, p, rng)[0] for p in problems]
    right = [demos_lib.right_answer(task, p) for p in problems]
    assert all(s.reward == 0.0 for s in task.verify_batch(problems, wrong)), family
    assert all(s.reward == 1.0 for s in task.verify_batch(problems, right)), family


def test_trained_wrong_share_follows_the_noise():
  noise = Noise(wrong_answer=0.2, candidate_wrong=0.6)
  calls = demonstrations(workflows.get("voting"), TASKS["math"], _problems("math", 300, 2), TOK,
                         noise, 0, **LIMITS)
  answers = [d for d in calls if d.call.role == "generator"]
  trained = [d for d in answers if d.trained]
  assert abs(np.mean([not d.correct for d in answers]) - 0.6) < 0.05
  assert abs(np.mean([not d.correct for d in trained]) - 0.2) < 0.05


def test_demonstrations_are_what_rollout_renders():
  """Replaying the scripted texts through a plain rollout gives the same tokens."""
  task, problems = TASKS["code"], _problems("code", 4)
  for name in ("voting", "eval_opt", "orch_workers"):
    workflow = workflows.get(name)
    calls = demonstrations(workflow, task, problems, TOK, Noise(), 2, **LIMITS)
    script = collections.defaultdict(collections.deque)  # same prompt, several agents
    for d in calls:
      script[d.call.role, TOK.decode(d.call.prompt_tokens)].append(d.call.text)
    policy = ScriptedPolicy(lambda role, text: script[role, text].popleft(), TOK, workflow.roles)
    episodes = rollout.run(workflow, policy, task, problems, 1, jax.random.PRNGKey(0),
                           SamplingParams(max_new_tokens=24), TOK, max_prompt_len=192)
    replayed = [c for e in episodes for c in e.calls]
    assert [(c.prompt_tokens, c.completion_tokens) for c in replayed] == [
        (d.call.prompt_tokens, d.call.completion_tokens) for d in calls]


def _config(tmp_path, **tiny_fields):
  config = get_config("model=tiny_s")
  config.tiny.cache_dir = str(tmp_path)
  config.tiny.update(dict(batch_size=64, max_steps=60, eval_every=30, eval_problems=16,
                          problems_per_chunk=8))
  config.tiny.update(tiny_fields)
  return config


def test_cache_key_tracks_what_decides_the_base(tmp_path):
  key = lambda config: tiny.cache_key(config)
  base = _config(tmp_path)
  same = [lambda c: c.rl.update(lr=1.0), lambda c: setattr(c, "seed", 5),
          lambda c: c.policy.update(mode="isolated"), lambda c: c.workflow.update(name="eval_opt"),
          lambda c: c.train.update(steps=3), lambda c: c.tiny.update(cache_dir="/elsewhere")]
  different = [lambda c: c.model.update(preset="tiny_m"), lambda c: c.tiny.update(lr=1e-3),
               lambda c: c.tiny.noise.update(wrong_pick=0.5),
               lambda c: c.workflow.options.update(view="answer"),
               lambda c: c.task.options.update(digits=1),
               lambda c: c.rollout.update(max_new_tokens=20),
               lambda c: setattr(c.tiny, "workflows",
                                 ml_collections.ConfigDict(dict(single=1, voting=1)))]
  for change in same + different:
    config = _config(tmp_path)
    change(config)
    assert (key(config) == key(base)) == (change in same), change
  code = get_config("model=tiny_s,task=code,workflow=orch_workers")
  code.tiny.update(dict(cache_dir=str(tmp_path), batch_size=64, max_steps=60, eval_every=30,
                        eval_problems=16, problems_per_chunk=8))
  assert key(code) == key(base)
  # An agents=1 reference with run_workflow_options=False starts from its matrix run's base.
  matrix = get_config("model=tiny_s,workflow=orch_workers")
  reference = get_config("model=tiny_s,workflow=orch_workers,agents=1")
  assert key(reference) != key(matrix)
  reference.tiny.run_workflow_options = False
  assert key(reference) == key(matrix)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  # One skill step, then the roles phase alone: enough to learn every output
  # format (greedy), not the arithmetic, in about a minute.
  config = _config(tmp_path_factory.mktemp("tiny_cache"), max_steps=1, eval_every=1,
                   eval_problems=8, role_steps=250, role_batch_size=32)
  model, params = tiny.base_model(config)
  return config, model, params


def test_build_writes_one_entry_and_a_second_build_hits_the_cache(built, monkeypatch):
  config, _, params = built
  directory = config.tiny.cache_dir
  assert os.listdir(directory) == [tiny.cache_key(config)]  # no .tmp-* leftovers
  monkeypatch.setattr(warm_start_lib, "warm_start",
                      lambda *a, **k: pytest.fail("the second build warm-started again"))
  _, again = tiny.base_model(config)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))


def test_ship_copies_the_entry_and_refuses_a_missing_one(built, tmp_path, monkeypatch):
  config = built[0]
  monkeypatch.setattr(cache, "SHIPPED_DIR", str(tmp_path / "bases"))
  key = tiny.cache_key(config)
  shipped = cache.ship(config.tiny.cache_dir, key)
  assert sorted(os.listdir(shipped)) == ["params.npz", "record.json"]
  with pytest.raises(FileNotFoundError, match="build it first"):
    cache.ship(config.tiny.cache_dir, "no-such-key")


def test_rebuild_from_the_same_config_is_bitwise_identical(tmp_path):
  params = []
  for name in ("a", "b"):
    config = _config(tmp_path / name, max_steps=3, eval_every=3, eval_problems=8,
                     role_steps=3, role_batch_size=16)
    params.append(tiny.base_model(config)[1])
  assert all(np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, params)))


def test_small_warm_start_learns_every_role_format(built):
  _, model, params = built

  def clean_rates(params):
    policy = warm_start_lib.ParamsPolicy(model, params)
    clean = collections.defaultdict(list)
    for family, task in TASKS.items():
      problems = task.sample("eval", 6, seed=0, step=0)
      for name in WORKFLOWS:
        for episode in rollout.run(workflows.get(name), policy, task, problems, 1,
                                   jax.random.PRNGKey(1),
                                   SamplingParams(temperature=0.0, max_new_tokens=24), TOK,
                                   max_prompt_len=192):
          for call in episode.calls:
            clean[family, call.role].append(not call.parsed.failures)
    return {k: np.mean(v) for k, v in clean.items()}

  rates = clean_rates(params)
  # The fixture's small build is sensitive to float rounding (the orchestrator's
  # greedy format on 6 problems moved from >= 0.5 to 0.17 with an equivalent
  # attention kernel): most roles must be clean, every role above the untrained model.
  untrained = clean_rates(init_params(model, jax.random.PRNGKey(0)))
  assert len(rates) == 12 and np.mean(list(rates.values())) >= 0.75, rates
  assert all(rates[k] > untrained[k] or rates[k] == 1.0 for k in rates), (rates, untrained)
  assert min(untrained.values()) < 0.5, untrained  # the formats were learned, not given
