"""schedule='episodes': each episode moves on at its own pace, and the episodes equal the
stage-by-stage ones; GRPO groups are verified while decoding goes on."""

import dataclasses
import time

import jax
import numpy as np
import pytest

from marl_jax import tasks, workflows
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import get_preset, init_params
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import PolicyStore
from marl_jax.tasks import rewards
from marl_jax.workflows import rollout

CONFIG = get_preset("tiny_s")
TOK = CharTokenizer()
TASK = tasks.get("arithmetic")
PROBLEMS = TASK.problems("eval")[:2]
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=6)


@pytest.fixture(scope="module")
def base():
  return init_params(CONFIG, jax.random.PRNGKey(0))


def _eval_opt_with_stops():
  """eval_opt over 3 rounds whose evaluators end an episode on the parity of their first
  token: a random model's verdicts are unreadable, so eval_opt's own rule would stop
  every episode or none, and early stops are what make episodes skip stage groups."""
  wf = workflows.get("eval_opt", max_rounds=3, view="answer", unreadable_verdict="revise")
  stop = lambda ep: ep.last("evaluator").completion_tokens[0] % 2 == 0
  return dataclasses.replace(wf, stages=tuple(
      dataclasses.replace(s, stop=stop) if s.role == "evaluator" else s for s in wf.stages))


def _run(wf, policy, task=TASK, group=2, **options):
  # Prompts cut to 64 tokens (one prompt bucket: few programs to compile).
  return rollout.run(wf, policy, task, PROBLEMS, group, jax.random.PRNGKey(1), SAMPLING, TOK,
                     max_new_tokens={wf.roles[-1]: 4}, max_prompt_len=64, **options)


def _records(episodes):
  """Everything an episode records but logprobs, calls in their order."""
  return [(e.id, e.group, e.sample, e.final_answer, e.reward, e.verdict, e.done, [
      (c.role, c.agent, c.turn, c.stage, c.slot, c.prompt_tokens, c.completion_tokens,
       c.truncated, c.prompt_truncated, c.text, c.parsed, c.correct) for c in e.calls])
          for e in episodes]


def _assert_same(got, want):
  assert _records(got) == _records(want)
  for a, b in zip(got, want):
    for c, d in zip(a.calls, b.calls):
      # The same rows at other cache columns and batch places: float32 rounding only.
      np.testing.assert_allclose(c.logprobs, d.logprobs, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name,mode,kind", [
    ("voting", "isolated", "lora"), ("eval_opt", "isolated", "full"),
    ("orch_workers", "hybrid", "lora")])
def test_episodes_equal_the_stage_by_stage_ones(base, name, mode, kind):
  """Tokens, texts, parses, rewards, correctness and call order, with per-role token
  limits, IP LoRA slots, IP full copies or hybrid slots, fewer slots than rows, and
  (eval_opt) episodes that stop early and skip the later stage groups."""
  wf = _eval_opt_with_stops() if name == "eval_opt" else workflows.get(name, view="answer")
  store = PolicyStore.create(CONFIG, base, wf.roles, mode=mode, kind=kind)
  want = _run(wf, store, engine="continuous", slots=3)
  timings = {}
  got = _run(wf, store, engine="continuous", slots=3, schedule="episodes", timings=timings)
  _assert_same(got, want)
  assert timings["generate_s"] > 0 and timings["verify_s"] > 0
  assert 0 <= timings["verify_overlap_s"] <= timings["verify_s"]
  if name == "eval_opt":
    assert {e.done for e in got} == {True, False}  # some episodes stopped early
    assert len({len(e.calls) for e in got}) > 1
    _assert_same(got, _run(wf, store))  # lockstep stage by stage, keyed the same


class _Watched:
  """A PolicyStore whose sessions note each row's role, priority and prefill call, and
  pause after each step (room for the verify worker on a busy machine)."""

  def __init__(self, store):
    self.store, self.rows, self.started = store, {}, {}

  def slot_of(self, role):
    return self.store.slot_of(role)

  def session(self, *args, **options):
    return _WatchedSession(self, self.store.session(*args, **options))


class _WatchedSession:

  def __init__(self, policy, session):
    self.policy, self.session = policy, session

  @property
  def idle(self):
    return self.session.idle

  def submit(self, prompts, roles, keys, **options):
    rows = self.session.submit(prompts, roles, keys, **options)
    self.policy.rows.update(zip(rows, zip(roles, options["priority"])))
    return rows

  def step(self):
    finished = self.session.step()
    self.policy.started.update({done.row: done.prefill for done in finished})
    time.sleep(0.02)
    return finished


class _Counted:
  """The task, but every reply's first character is its answer (a random model's replies
  seldom hold a number, and answers are what gets verified); notes the problems of each
  verify_batch call."""

  def __init__(self, task):
    self.task, self.calls = task, []

  def __getattr__(self, name):
    return getattr(self.task, name)

  def extract(self, text):
    return text.strip()[:1] or "0"

  def verify_batch(self, problems, texts):
    self.calls.append([p.id for p in problems])
    return self.task.verify_batch(problems, texts)


def test_episodes_interleave_and_groups_are_verified_as_they_finish(base):
  """With 2 slots, episode 0's aggregator is prefilled before the generators of the last
  episode; group 0 is verified on its own, while group 1 still decodes."""
  wf = workflows.get("voting", n=2, view="answer")
  policy, task = _Watched(PolicyStore.create(CONFIG, base, wf.roles, mode="isolated")), _Counted(
      TASK)
  timings = {}
  episodes = _run(wf, policy, task, engine="continuous", slots=2, schedule="episodes",
                  timings=timings)
  started = lambda role, episode: [policy.started[row] for row, (r, p) in policy.rows.items()
                                   if (r, p) == (role, episode)]
  assert len(started("aggregator", 0)) == 1 and len(started("generator", 3)) == 2
  assert started("aggregator", 0)[0] < min(started("generator", 3))
  assert len(task.calls) >= 2
  assert set(task.calls[0]) == {PROBLEMS[0].id}  # group 0 alone, before group 1 was done
  assert timings["verify_overlap_s"] > 0
  _assert_same(episodes, _run(wf, policy.store, task, engine="continuous", slots=2))


def test_a_reward_error_names_the_answer_and_its_role(base):
  """An error raised on the verify worker reaches the caller as the batched path says it."""

  class Failing(_Counted):
    def verify_batch(self, problems, texts):
      raise rewards.RewardError("reward_fn raised ValueError('no')", len(texts) - 1)

  wf = workflows.get("single")
  store = PolicyStore.create(CONFIG, base, wf.roles)
  with pytest.raises(rewards.RewardError, match=r"(?s)no'\) \(problem .*, answer .* of the "
                                                r".*\); the step's update and checkpoint were "
                                                r"not made"):
    _run(wf, store, Failing(TASK), engine="continuous", slots=2, schedule="episodes")


def test_episodes_need_the_continuous_engine_and_a_session(base):
  wf = workflows.get("single")
  store = PolicyStore.create(CONFIG, base, wf.roles)
  with pytest.raises(ValueError, match=r"schedule='episodes' with engine='lockstep'.*"
                                       r"config.rollout.schedule / engine"):
    _run(wf, store, schedule="episodes")

  class GenerateOnly:
    slot_of, generate = store.slot_of, store.generate

  with pytest.raises(ValueError, match="needs a policy with session"):
    _run(wf, GenerateOnly(), engine="continuous", schedule="episodes")
