"""Rollouts of every workflow x sharing mode on a tiny random model."""

import dataclasses

import jax
import numpy as np
import pytest

from marl_jax import tasks, workflows
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import get_preset, init_params
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import PolicyStore
from marl_jax.trainer.distributed import ChunkedPolicy
from marl_jax.workflows import rollout

CONFIG = get_preset("tiny_s")
TOK = CharTokenizer()
TASK = tasks.get("arithmetic")
PROBLEMS = TASK.problems("eval")[:2]
GROUP = 2
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=6)
MODES = ("shared", "isolated", "hybrid")
WORKFLOWS = {"single": {}, "voting": {"view": "answer"}, "majority_vote": {},
             "eval_opt": {"view": "answer"}, "orch_workers": {"view": "answer"}}


class Recording:
  """Wraps a policy and records every sampler call's roles and key."""

  def __init__(self, policy):
    self.policy, self.calls = policy, []

  def slot_of(self, role):
    return self.policy.slot_of(role)

  def generate(self, prompts, roles, rng, sampling, **options):
    self.calls.append((list(roles), rng))
    return self.policy.generate(prompts, roles, rng, sampling, **options)


@pytest.fixture(scope="module")
def base():
  return init_params(CONFIG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def rollouts(base):
  """(workflow name, mode) -> (store, recording policy, episodes), one rollout each."""
  out = {}
  for name, options in WORKFLOWS.items():
    wf = workflows.get(name, **options)
    for mode in MODES:
      store = PolicyStore.create(CONFIG, base, wf.roles, mode=mode)
      policy = Recording(store)
      episodes = rollout.run(wf, policy, TASK, PROBLEMS, GROUP, jax.random.PRNGKey(1), SAMPLING,
                             TOK, max_new_tokens={wf.roles[-1]: 4})
      out[name, mode] = (store, policy, episodes)
  return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_every_workflow_and_mode_rolls_out(rollouts, name, mode):
  store, policy, episodes = rollouts[name, mode]
  wf = workflows.get(name, **WORKFLOWS[name])
  assert [(e.group, e.sample) for e in episodes] == [(g, s) for g in range(2) for s in range(GROUP)]
  limit = {role: 4 if role == wf.roles[-1] else 6 for role in wf.roles}
  for episode in episodes:
    assert episode.calls and episode.reward in (0.0, 1.0)
    assert [c.stage for c in episode.calls] == sorted(c.stage for c in episode.calls)
    for call in episode.calls:
      n = len(call.completion_tokens)
      assert 1 <= n <= limit[call.role] and call.logprobs.shape == (n,)
      assert np.all(call.logprobs <= 0) and call.slot == store.slot_of(call.role)
      assert call.truncated == (call.completion_tokens[-1] not in TOK.eos_ids or n > limit[
          call.role])
  # One sampler call per stage that had work, keyed by fold_in(key, stage).
  stages = sorted({c.stage for e in episodes for c in e.calls})
  assert len(policy.calls) == len(stages)
  for (roles, key), stage in zip(policy.calls, stages):
    np.testing.assert_array_equal(key, jax.random.fold_in(jax.random.PRNGKey(1), stage))
    assert len(roles) == sum(c.stage == stage for e in episodes for c in e.calls)
  metrics = rollout.role_metrics(episodes)
  assert metrics["episodes"] == 4
  assert sum(metrics[f"calls/{r}"] for r in wf.roles if f"calls/{r}" in metrics) == sum(
      len(e.calls) for e in episodes)


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_sharing_modes_roll_out_identically_before_any_update(rollouts, name):
  def tokens(mode):
    return [(c.role, c.completion_tokens, c.text) for e in rollouts[name, mode][2] for c in e.calls]
  assert tokens("shared") == tokens("isolated") == tokens("hybrid")


def test_rollouts_are_deterministic_per_key(base):
  wf = workflows.get("voting", view="answer")
  store = PolicyStore.create(CONFIG, base, wf.roles, mode="isolated")
  timings = {}
  run = lambda seed: [c.completion_tokens for e in rollout.run(
      wf, store, TASK, PROBLEMS, GROUP, jax.random.PRNGKey(seed), SAMPLING, TOK,
      timings=timings) for c in e.calls]
  assert run(1) == run(1)
  assert run(1) != run(2)
  # The step split of the trainer and the benchmark: sampling, then verification.
  assert set(timings) == {"generate_s", "verify_s", "verify_overlap_s"}
  assert timings["generate_s"] > 0 and timings["verify_s"] > 0
  assert timings["verify_overlap_s"] == 0  # stage by stage: verified after the last stage


def test_long_prompts_are_cut_from_the_left_for_the_model(base):
  wf = workflows.get("single")
  store = PolicyStore.create(CONFIG, base, wf.roles)
  long = [dataclasses.replace(p, prompt=p.prompt * 40) for p in PROBLEMS]
  episodes = rollout.run(wf, store, TASK, long, 1, jax.random.PRNGKey(0), SAMPLING, TOK,
                         max_prompt_len=100)
  assert all(len(e.calls[0].prompt_tokens) == 100 and e.calls[0].prompt_truncated
             for e in episodes)
  assert rollout.role_metrics(episodes)["prompt_truncated/generator"] == 2
  # Refused instead: one error that names the episode, its role and what to do.
  with pytest.raises(ValueError, match=r"Episode 0 \(problem .*\), role 'generator': its prompt "
                                       r"is \d+ tokens, longer than max_prompt_len=100 .* "
                                       r"rollout.long_prompts='truncate'"):
    rollout.run(wf, store, TASK, long, 1, jax.random.PRNGKey(0), SAMPLING, TOK,
                max_prompt_len=100, long_prompts="refuse")


def test_calls_draw_the_same_tokens_however_a_stage_is_cut_into_sampler_calls(base):
  """Each call is keyed by its identity (row_ids), so a stage sampled in chunks of 5
  rows (ChunkedPolicy, the trainer's bound on a sampler call) gives one call's episodes."""
  wf = workflows.get("voting", view="answer")
  store = PolicyStore.create(CONFIG, base, wf.roles, mode="isolated")
  run = lambda policy: [(c.role, c.completion_tokens, c.text) for e in rollout.run(
      wf, policy, TASK, PROBLEMS, GROUP, jax.random.PRNGKey(1), SAMPLING, TOK) for c in e.calls]
  assert run(ChunkedPolicy(store, 5)) == run(store)
