"""The continuous engine's decode slots (from device memory by the planner, checked before
compiling) and the rollout schedule that needs the engine."""

import pytest

from marl_jax.generate import continuous
from marl_jax.trainer import config as config_lib
from marl_jax.trainer import planner
from marl_jax.trainer.config import get_config
from marl_jax.workflows import rollout


def test_slots_come_from_memory_and_too_many_fail_before_compiling():
  config = get_config("model=qwen3_0_6b,study=1")
  assert config.rollout.engine == "continuous" and config.rollout.slots == 0
  assert planner.rollout_slots(config, None) == continuous.DEFAULT_SLOTS  # a CPU
  memory = 80 * planner.GIB
  plan = planner.run_plan(config, memory)
  slots = planner.rollout_slots(config, memory)
  assert slots == min(plan.max_rollout_rows, plan.stage_rows) >= 1
  # Fewer slots fit a smaller device: each holds a 5,120-token cache.
  assert planner.rollout_slots(config, 24 * planner.GIB) < slots
  config.rollout.slots = 8
  assert planner.rollout_slots(config, memory) == 8
  config.rollout.slots = plan.max_rollout_rows + 1
  with pytest.raises(ValueError, match=rf"rollout.slots={plan.max_rollout_rows + 1} decode slots "
                                       rf"of 5120 tokens .* set rollout.slots <= "
                                       rf"{plan.max_rollout_rows}"):
    planner.require_fit(config, memory)  # what loop.loss_config calls before compiling
  config.rollout.engine = "lockstep"  # the lockstep sampler has no slots to check
  assert planner.require_fit(config, memory) is not None


def test_engine_and_slots_are_validated():
  config = get_config("")
  assert config.rollout.engine == "lockstep"  # the tiny world's default
  config.rollout.engine = "paged"
  config.rollout.slots = -1
  with pytest.raises(ValueError, match=r"(?s)rollout.engine=.paged. is unknown.*"
                                       r"rollout.slots=-1 must be a number >= 0"):
    config_lib.validate(config)


def test_schedule_is_validated_with_the_engine():
  config = get_config("")
  assert config.rollout.schedule == "stages"  # the tiny world's default
  config.rollout.schedule = "episodes"  # with the lockstep engine
  with pytest.raises(ValueError, match=r"rollout.schedule='episodes' needs "
                                       r"rollout.engine='continuous', got "
                                       r"rollout.engine='lockstep'"):
    config_lib.validate(config)
  config.rollout.engine = "continuous"
  config_lib.validate(config)
  config.rollout.schedule = "waves"
  with pytest.raises(ValueError, match=r"rollout.schedule='waves' is unknown; valid: "
                                       r"\('stages', 'episodes'\)"):
    config_lib.validate(config)
  config.rollout.schedule = "episodes"
  assert rollout.options(config)["schedule"] == "episodes"  # the field reaches rollout.run
