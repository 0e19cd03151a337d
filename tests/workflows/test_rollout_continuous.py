"""The continuous engine rolls out the same episodes as the lockstep sampler."""

import jax
import numpy as np
import pytest

from marl_jax import tasks, workflows
from marl_jax.generate.sampler import SamplingParams
from marl_jax.models import get_preset, init_params
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import PolicyStore
from marl_jax.workflows import rollout

CONFIG = get_preset("tiny_s")
TOK = CharTokenizer()
TASK = tasks.get("arithmetic")
PROBLEMS = TASK.problems("eval")[:2]
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=6)


@pytest.mark.parametrize("name,kind", [("orch_workers", "lora"), ("voting", "full")])
def test_continuous_episodes_equal_lockstep_ones(name, kind):
  """Every call's tokens, logprobs, truncation and parse, and every reward, with
  per-role token limits, IP LoRA slots (rows of three roles in one stage) or IP
  full copies, and fewer slots than a stage's rows."""
  wf = workflows.get(name, view="answer")
  params = init_params(CONFIG, jax.random.PRNGKey(0))
  store = PolicyStore.create(CONFIG, params, wf.roles, mode="isolated", kind=kind)
  # Prompts cut to 64 tokens (one prompt bucket: few programs to compile).
  run = lambda **engine: rollout.run(wf, store, TASK, PROBLEMS[:1], 2, jax.random.PRNGKey(1),
                                     SAMPLING, TOK, max_new_tokens={wf.roles[-1]: 4},
                                     max_prompt_len=64, **engine)
  want, got = run(), run(engine="continuous", slots=3)
  assert [e.reward for e in got] == [e.reward for e in want]
  for a, b in zip(got, want):
    assert [(c.role, c.agent, c.completion_tokens, c.truncated, c.text) for c in a.calls] == [
        (c.role, c.agent, c.completion_tokens, c.truncated, c.text) for c in b.calls]
    for c, d in zip(a.calls, b.calls):
      np.testing.assert_allclose(c.logprobs, d.logprobs, rtol=2e-5, atol=2e-5)
  assert max(len(c.completion_tokens) for e in got for c in e.calls
             if c.role == wf.roles[-1]) <= 4


def test_unknown_engine_is_an_error():
  wf = workflows.get("single")
  store = PolicyStore.create(CONFIG, init_params(CONFIG, jax.random.PRNGKey(0)), wf.roles)
  with pytest.raises(ValueError, match="config.rollout.engine / slots"):
    rollout.run(wf, store, TASK, PROBLEMS, 1, jax.random.PRNGKey(0), SAMPLING, TOK,
                engine="paged")
