"""The run config: its arguments come from the registries, plug-ins by import=."""

import json

import pytest

from marl_jax import policies, workflows
from marl_jax.trainer import config as config_lib

PLUGIN = "marl_jax.workflows.examples.second_opinion"


def test_registered_workflow_is_selectable_with_its_agents_after_import():
  config = config_lib.get_config(f"workflow=second_opinion,agents=3,import={PLUGIN}")
  assert config.imports == (PLUGIN,)
  assert config.workflow.options.n == 3
  workflow = workflows.from_config(config.workflow)
  assert set(workflow.roles) == {"solver", "skeptic", "referee"}


def test_config_arguments_follow_the_registries():
  for mode in policies.MODES:
    assert config_lib.get_config(f"policy={mode}").policy.mode == mode
  for name in workflows.names():
    option = workflows.agents_option(name)
    if option:
      assert config_lib.get_config(f"workflow={name},agents=2").workflow.options[option] == 2


@pytest.mark.parametrize("arg, match", [
    ("workflow=debate", r"workflow='debate'.*valid:.*voting"),
    ("policy=solo", r"policy='solo'.*valid:.*isolated"),
    ("kind=adapter", r"kind='adapter'.*valid:.*lora"),
    ("workflow=eval_opt,agents=2", r"agents=2 needs a workflow with parallel agents.*voting"),
    ("import=no_such_package.flows", r"import='no_such_package.flows' cannot be imported"),
    ("steps=3", r"Unknown config argument 'steps'"),
])
def test_bad_arguments_name_the_argument_and_the_valid_values(arg, match):
  with pytest.raises(ValueError, match=match):
    config_lib.get_config(arg)


def test_demo_config_overrides_the_base_and_nothing_else_structural():
  base, demo = config_lib.get_config(), config_lib.demo_config()
  assert demo.policy.kind == "full" and demo.train.steps == 60
  assert sorted(base.keys()) == sorted(demo.keys())


def test_study_config_reproduces_the_reference_mechanics_and_clean_drops_the_schedule_quirks():
  rl = config_lib.get_config("study=1").rl
  assert (rl.update_scheme, rl.minibatch_rows, rl.shuffle, rl.dual_clip, rl.weight_decay,
          rl.schedule_ticks, rl.schedule_tail) == ("reference", 512, False, 3.0, 0.01,
                                                   "update", "periodic")
  clean = config_lib.get_config("study=1,mechanics=clean").rl
  assert (clean.update_scheme, clean.minibatch_rows, clean.dual_clip, clean.weight_decay,
          clean.schedule_ticks, clean.schedule_tail) == ("reference", 512, 3.0, 0.01,
                                                         "iteration", "clamp")
  joint = config_lib.get_config("study=1,mechanics=joint").rl
  default = config_lib.get_config().rl
  for rl in (joint, default):  # today's update
    assert (rl.update_scheme, rl.shuffle, rl.dual_clip, rl.weight_decay, rl.schedule_ticks,
            rl.schedule_tail) == ("joint", True, 0.0, 0.0, "iteration", "clamp")
  reference = config_lib.get_config("mechanics=reference")
  assert reference.rl.minibatch_rows == 16 * 8
  # A batch of episodes whatever overrides the batch later; set, it stays as set.
  config_lib.override(reference, "rollout.batch_size=8")
  assert reference.rl.minibatch_rows == 8 * 8 and json.loads(
      reference.to_json())["rl"]["minibatch_rows"] == 64
  config_lib.override(reference, "rl.minibatch_rows=24")
  config_lib.override(reference, "rollout.group_size=4")
  assert (reference.rl.minibatch_rows, reference.rollout.group_size) == (24, 4)
  with pytest.raises(ValueError, match=r"mechanics='verl'.*valid:.*'clean'"):
    config_lib.get_config("mechanics=verl")


@pytest.mark.parametrize("fields, match", [
    ({"schedule_ticks": "update"}, r"schedule_ticks='update'.*only rl.update_scheme='reference'"),
    ({"update_scheme": "reference", "minibatches": 2}, r"rl.minibatches=2.*minibatch_rows"),
])
def test_mechanics_that_do_not_fit_together_are_named(fields, match):
  config = config_lib.get_config()
  for key, value in fields.items():
    config.rl[key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(config)


def test_reference_scheme_refuses_the_interventions_on_joint_per_role_gradients():
  config = config_lib.get_config("mechanics=reference")
  config.interventions.balance = "cap"
  with pytest.raises(ValueError, match=r"interventions.balance reshape.*per_agent"):
    config_lib.validate(config)
  config.interventions.balance = "per_agent"
  config_lib.validate(config)
