"""rollout_long's forced lengths: every arm decodes the same rows to the same lengths."""

import jax
import numpy as np
import pytest

from marl_jax import tasks, workflows
from marl_jax.bench import rollout_long, smoke
from marl_jax.generate import continuous, sampler
from marl_jax.models import get_preset, init_params
from marl_jax.models.tokenizers import CharTokenizer
from marl_jax.policies.store import PolicyStore
from marl_jax.workflows import rollout


def test_each_call_stops_at_its_own_length_under_every_engine_and_schedule():
  """Every arm decodes the same calls to the same lengths and tokens; the continuous
  engine starts some of them from the prompt a live row holds (forks)."""
  config = get_preset("tiny_s").replace(eos_ids=())  # the drawn lengths alone end rows
  size = rollout_long.Size(problems=2, group=2, slots=4, median=6, cap=12, max_prompt_len=192)
  wf, task = workflows.get("voting"), tasks.get("arithmetic")
  store = PolicyStore.create(config, init_params(config, jax.random.PRNGKey(0)), wf.roles,
                             mode="isolated")
  problems = task.sample("train", size.problems, seed=0)
  runs, read, need = {}, {}, {}
  column = continuous.cache_bytes(config, 1, 1)
  for engine, schedule in rollout_long.ARMS:
    policy = rollout_long.ForcedLengths(store, size)
    episodes = rollout.run(wf, policy, task, problems, size.group, jax.random.PRNGKey(1),
                           sampler.SamplingParams(temperature=0.7, max_new_tokens=size.cap),
                           CharTokenizer(), max_prompt_len=size.max_prompt_len, engine=engine,
                           slots=size.slots, schedule=schedule)
    lengths = [len(c.completion_tokens) for e in episodes for c in e.calls]
    # The least any decode reads: the weights at each step of the longest call, and for
    # each token after a row's first its prompt's and earlier tokens' KV columns.
    need[engine, schedule] = (smoke.weight_bytes(config) * (max(lengths) - 1), column * sum(
        len(c.prompt_tokens) + j for e in episodes for c in e.calls
        for j in range(1, len(c.completion_tokens))))
    runs[engine, schedule] = (lengths, [c.completion_tokens for e in episodes for c in e.calls])
    decoded = policy.decoded()
    assert sum(t for t, *_ in decoded) == sum(lengths)  # the Stats count the same tokens
    assert all(steps >= tokens for tokens, steps, *_ in decoded)
    read[engine, schedule] = np.sum([c[3:] for c in decoded], axis=0)  # weights, KV
    if engine == "continuous":  # the generators' rows of a problem share its prompt
      forked, rows = policy.forked()
      assert 0 < forked < rows and rows == len(lengths)
  lengths, tokens = runs["lockstep", "stages"]
  assert len(set(lengths)) > 2 and max(lengths) <= size.cap  # drawn, not all at the cap
  for arm, needed in need.items():  # every arm's decode reads at least that, and more
    assert np.all(needed < read[arm]), (arm, needed, read[arm])  # (lockstep: its padding)
  assert need["lockstep", "stages"] == need["continuous", "stages"]
  # The narrowed engine reads its live columns; lockstep, its whole dense cache a step.
  assert read["continuous", "stages"][1] < read["lockstep", "stages"][1]
  for other_lengths, other_tokens in runs.values():  # same rows, lengths and tokens
    assert other_lengths == lengths
    for a, b in zip(tokens, other_tokens):
      np.testing.assert_array_equal(a, b)


def test_a_random_model_of_a_real_vocabulary_decodes_every_id_to_one_character():
  """The Qwen3-shaped benchmark model samples ids past the 128 characters, which
  CharTokenizer refuses; each decodes to one printable character."""
  inside, past = [40, 65, 3], [128, 5000, 151935]
  with pytest.raises(ValueError, match="outside the vocabulary"):
    CharTokenizer().decode(past)
  tokenizer = rollout_long.WideCharTokenizer()
  text = tokenizer.decode(inside + past)
  assert text == CharTokenizer().decode(inside) + "".join(chr(32 + i % 95) for i in past)
  assert CharTokenizer.UNK not in tokenizer.encode(text[-len(past):])
