"""Per-role rollout metrics: parse failures as counts and as rates of the role's calls."""

import numpy as np
import pytest

from marl_jax.workflows.episodes import Call, Episode, role_metrics
from marl_jax.workflows.parsing import Parsed


def _call(role, failures=()):
  return Call(episode=0, group=0, role=role, agent=0, turn=0, stage=0, slot=0,
              prompt_tokens=[1, 2], completion_tokens=[3], logprobs=np.zeros(1, np.float32),
              truncated=False, prompt_truncated=False, text="x",
              parsed=Parsed("answer", "x", "x", failures=tuple(failures)))


def test_parse_rates_are_shares_of_each_roles_calls():
  episode = Episode(id=0, group=0, sample=0, problem=None, question="q", family="math",
                    calls=[_call("generator"), _call("generator", ["no_answer"]),
                           _call("generator"), _call("generator", ["no_answer", "truncated"]),
                           _call("aggregator", ["bad_choice"])])
  metrics = role_metrics([episode])
  assert metrics["parse/generator/no_answer"] == 2  # counts stay (summed across processes)
  assert metrics["parse_rate/generator/no_answer"] == pytest.approx(0.5)
  assert metrics["parse_rate/generator/truncated"] == pytest.approx(0.25)
  assert metrics["parse_ok/generator"] == pytest.approx(0.5)
  assert metrics["parse_ok/aggregator"] == 0.0
  assert metrics["parse_rate/aggregator/bad_choice"] == 1.0
