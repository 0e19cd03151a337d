"""The run config: its arguments come from the registries, plug-ins by import=."""

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
