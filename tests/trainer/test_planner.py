"""The memory planner: exact state bytes from shapes, per-row formulas, fit decisions."""

import os
import subprocess
import sys

import jax
import optax
import pytest

from marl_jax.models import count_params, decoder, get_preset, init_params
from marl_jax.models.config import ModelConfig
from marl_jax.models.lora import LoraConfig
from marl_jax.policies.store import PolicyStore
from marl_jax.trainer import loop, measure, plan_table, planner
from marl_jax.trainer.config import get_config
from tests.helpers import REPO

ONE = {"data": 1, "fsdp": 1, "tensor": 1, "role": 1}
SMALL = planner.Workload(num_roles=2, lora_rank=4, prompt_len=32, max_new_tokens=16)


def _nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("mode,kind", [("shared", "lora"), ("isolated", "full")])
def test_state_terms_equal_the_bytes_of_real_arrays(mode, kind):
  model = get_preset("tiny_s")
  store = PolicyStore.create(model, init_params(model, jax.random.PRNGKey(0)),
                             ("a", "b"), mode=mode, kind=kind, lora=LoraConfig(rank=4))
  plan = planner.plan(model, mode, kind, ONE, 16.0, SMALL, rollout_params="sharded")
  assert plan.params == _nbytes(store.base)
  assert plan.slots == _nbytes(store.trainable)
  adam = optax.adamw(1e-5).init(store.trainable)
  assert plan.optimizer == _nbytes(adam) + _nbytes(store.trainable)  # m, v (+count), grad
  assert plan.rollout_copy == 0


def test_fsdp_divides_every_weight_matrix_and_keeps_norms_whole():
  model = get_preset("tiny_s")
  params = init_params(model, jax.random.PRNGKey(0))
  matrices = _nbytes([params["embed"]] + [params["layers"][n] for n in decoder.LINEAR_NAMES])
  plan = planner.plan(model, "shared", "lora", {**ONE, "fsdp": 4}, 16.0, SMALL)
  assert plan.params == matrices // 4 + (_nbytes(params) - matrices)


def test_qwen3_shapes_come_from_eval_shape_without_allocating():
  plan = planner.plan("qwen3_4b", "shared", "lora", ONE, 80.0)
  assert plan.params == 4 * count_params(get_preset("qwen3_4b"))  # float32 base
  lora = 36 * 64 * sum(i + o for i, o in decoder.linear_shapes(get_preset("qwen3_4b")).values())
  assert plan.slots == 4 * lora  # rank-64 adapters on all seven linears


def test_kv_cache_per_row_is_the_documented_formula():
  w = planner.Workload(prompt_len=1024, max_new_tokens=1024)
  plan = planner.plan("qwen3_0_6b", "shared", "lora", ONE, 80.0, w)
  assert plan.kv_per_row == 2 * 28 * 8 * 2048 * 128 * 2  # k and v, bf16
  tensor = planner.plan("qwen3_0_6b", "shared", "lora", {**ONE, "tensor": 2}, 80.0, w)
  assert tensor.kv_per_row == plan.kv_per_row // 2  # kv heads split over tensor
  longer = planner.plan("qwen3_0_6b", "shared", "lora", ONE, 80.0,
                        planner.Workload(prompt_len=1024, max_new_tokens=3072))
  assert longer.update_per_row > 3 * plan.update_per_row  # the T^2 attention terms


def test_fits_and_chunks_follow_memory_and_devices():
  hw = planner.HARDWARE
  big = planner.plan_hardware("qwen3_4b", "isolated", "full", hw["1xH100"])
  assert not big.fits and big.chunks() is None and big.state > 80 * planner.GIB
  one = planner.plan_hardware("qwen3_0_6b", "shared", "lora", hw["1xH100"])
  eight = planner.plan_hardware("qwen3_0_6b", "shared", "lora", hw["8xH100"])
  assert one.fits and eight.fits and eight.mesh["fsdp"] == 8
  assert one.params / 8 <= eight.params < 1.01 * one.params / 8  # norms stay whole
  assert eight.stage_rows * 8 == one.stage_rows
  assert eight.chunks()[0] < one.chunks()[0] and eight.chunks()[1] < one.chunks()[1]


def test_rollout_copy_is_replicated_only_with_fsdp_and_room():
  terms = {"params": 1, "slots": 1, "optimizer": 2, "replica": 4}
  assert planner.choose_rollout_params({"fsdp": 8}, terms, 100) == "replicated"
  assert planner.choose_rollout_params({"fsdp": 1}, terms, 100) == "sharded"
  assert planner.choose_rollout_params({"fsdp": 8}, terms, 10) == "sharded"


def test_study_table_has_every_combination():
  lines = plan_table.study_table().splitlines()
  assert len(lines) == 2 + 3 * 2 * 2 * 4
  assert lines[0].startswith("| model | policy | kind | hardware | mesh | params GiB")
  assert sum("does not fit" in line for line in lines) >= 1


def test_workload_errors_name_the_field():
  with pytest.raises(ValueError, match="Workload.max_new_tokens"):
    planner.Workload(max_new_tokens=0)
  with pytest.raises(ValueError, match=r"Workload.engine='vllm' is unknown; valid: \('lockstep'"):
    planner.Workload(engine="vllm")
  with pytest.raises(ValueError, match="rollout_params"):
    planner.plan("tiny_s", "shared", "lora", ONE, 1.0, rollout_params="both")


def test_plan_launcher_prints_a_row():
  root = REPO
  out = subprocess.run(
      [sys.executable, "launch/plan.py", "--models=qwen3_1_7b", "--hardware=v4-8",
       "--modes=isolated", "--kinds=lora", "--mesh=data=1,fsdp=4"],
      cwd=root, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [line for line in out.stdout.splitlines() if line.startswith("| qwen3_1_7b")]
  assert len(rows) == 1 and "| IP | lora | v4-8 | fsdp4 |" in rows[0]


# Qwen3-shaped and small: deeper than decoder.UNROLL_MAX_LAYERS, so its layers scan as Qwen3's.
SMALL_QWEN = ModelConfig(vocab_size=4096, hidden_size=128, intermediate_size=384, num_layers=6,
                         num_heads=4, num_kv_heads=2, head_dim=32, max_position_embeddings=4096)


def test_the_update_formula_agrees_with_the_compiled_update_per_row():
  # The sampler's formula is checked at Qwen3 scale by `launch/plan.py --measure`
  # (two more compiles here).
  workload = planner.Workload(num_roles=2, lora_rank=8, max_new_tokens=64)
  m, = measure.measure(SMALL_QWEN, 256, workload, programs=("update",), one_row=False)
  assert 0.85 <= m.ratio <= 1.15, (m.per_row, m.formula_per_row)


def test_a_length_that_cannot_fit_one_row_is_an_error_from_the_planner():
  config = get_config("model=qwen3_0_6b,study=1")
  plan = planner.require_fit(config, 80 * planner.GIB)
  assert plan.max_update_rows >= 1 and plan.max_rollout_rows >= 1
  assert planner.require_fit(config, None) is None  # no memory size (a CPU): nothing to check
  config.rollout.max_prompt_len = 32768
  with pytest.raises(ValueError, match=r"max_prompt_len \+ rollout.max_new_tokens = 33792 tokens "
                                       r"do not fit 80.0 GiB per device.*one update row needs"):
    planner.require_fit(config, 80 * planner.GIB)
  config.rollout.max_prompt_len, config.rl.remat = 4096, "none"
  with pytest.raises(ValueError, match="set rl.remat='layer'"):
    planner.require_fit(config, 80 * planner.GIB)


@pytest.mark.parametrize("preset", ["qwen3_0_6b", "qwen3_1_7b", "qwen3_4b"])
def test_the_study_step_of_every_preset_fits_one_h100_with_lora(preset):
  for mode in ("shared", "isolated"):
    plan = planner.plan_hardware(preset, mode, "lora", planner.HARDWARE["1xH100"])
    assert plan.fits, (preset, mode)
    calls, chunks = plan.chunks()
    assert calls * plan.max_rollout_rows >= plan.stage_rows
    assert chunks * plan.max_update_rows >= plan.update_rows


def test_loss_config_checks_the_fit_where_the_device_reports_its_memory(monkeypatch):
  class Device:  # an accelerator's memory_stats(); a CPU's is None and nothing is checked
    def memory_stats(self):
      return {"bytes_limit": 16 * planner.GIB}
  config = get_config("model=qwen3_0_6b,study=1")
  config.rollout.max_prompt_len = 16384
  assert loop.loss_config(config).remat == "layer"
  monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Device()])
  with pytest.raises(ValueError, match="17408 tokens do not fit 16.0 GiB per device"):
    loop.loss_config(config)
  config.rollout.max_prompt_len = 4096
  assert loop.loss_config(config).remat == "layer"  # one 5,120-token row fits 16 GiB
  with pytest.raises(ValueError, match=r"state alone takes 17.\d GiB per device"):
    loop.loss_config(get_config("model=qwen3_4b,study=1"))  # float32 4B on one 16 GiB chip


def test_rows_left_at_zero_come_from_device_memory(monkeypatch):
  from marl_jax.trainer import distributed  # pylint: disable=g-import-not-at-top
  config = get_config("model=qwen3_0_6b,study=1")
  config.mesh.rollout_rows_per_device, config.rl.update_rows = 0, 0
  result = planner.run_plan(config, 80 * planner.GIB)
  # the study step (1,536-row stage, 2,048-row update) does not fit one H100 in one call
  assert result.max_rollout_rows < result.stage_rows and result.max_update_rows < result.update_rows
  assert planner.rows_from_memory(config, result) == (result.max_rollout_rows,
                                                      result.max_update_rows)
  assert planner.rows_from_memory(config, None) == (0, 0)  # a CPU: a stage, the minibatch whole
  config.mesh.rollout_rows_per_device, config.rl.update_rows = 7, 32  # set: kept as set
  assert planner.rows_from_memory(config, result) == (7, 32)
  small = get_config("model=qwen3_0_6b,study=1")
  small.rollout.batch_size, small.rollout.group_size = 1, 2  # 6 and 8 rows: one call each
  small.mesh.rollout_rows_per_device, small.rl.update_rows = 0, 0
  assert planner.rows_from_memory(small, planner.run_plan(small, 80 * planner.GIB)) == (0, 0)

  class Device:
    def memory_stats(self):
      return {"bytes_limit": 80 * planner.GIB}
  monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Device()])
  config.mesh.rollout_rows_per_device, config.rl.update_rows = 0, 0
  par = distributed.Parallel.create(config, run=None)  # one device: no store to size
  assert par.rows_per_call == result.max_rollout_rows > 0
  assert par.update_rows == result.max_update_rows > 0
  assert par.slots == planner.rollout_slots(config, 80 * planner.GIB) > 0  # continuous engine


def test_the_samplers_fixed_term_covers_the_lora_slots_a_call_runs():
  """A decode whose rows use two of three LoRA slots runs on a copy of those two,
  which the session keeps while its calls use them (slot_programs.SlotSelection;
  a stage's call copies them in lora.compact): the copy's compiled bytes stay
  within what three slots add to the sampler's fixed term over one (SP), under
  either engine, and the decode on it makes no copy of its own."""
  from marl_jax.generate import draw, sampler, slot_programs  # pylint: disable=g-import-not-at-top
  model = SMALL_QWEN.replace(compute_dtype="float32")
  shapes = dict(num_roles=3, lora_rank=16, prompt_len=16, max_new_tokens=48,
                param_dtype="float32", compute_dtype="float32")
  fixed = {(mode, engine): planner.plan(model, mode, "lora", ONE, 80.0, planner.Workload(
      **shapes, engine=engine)).rollout_fixed
           for mode in ("isolated", "shared") for engine in ("continuous", "lockstep")}
  extra = fixed["isolated", "continuous"] - fixed["shared", "continuous"]
  assert extra == fixed["isolated", "lockstep"] - fixed["shared", "lockstep"]
  params = init_params(model, jax.random.PRNGKey(0))
  store = PolicyStore.create(model, params, ["a", "b", "c"], mode="isolated",
                             lora=LoraConfig(rank=16))
  _, decode_params = sampler.program_weights(model, params, 4, slots=False)
  per_layer = isinstance(decode_params["layers"], list)
  adapters = store.trainable["lora"]
  adapters = slot_programs.unstacked_adapters(model, adapters) if per_layer else adapters
  state = slot_programs.init_state(model, 4, 64, 3, per_layer)
  spec = draw.DrawSpec.of([sampler.SamplingParams(temperature=1.0, max_new_tokens=48)])

  def temp(adapters, columns):
    return slot_programs.decode_program.lower(
        model, spec, 8, 4, 64, False, decode_params, adapters, columns, state,
        jax.numpy.asarray([2])).compile().memory_analysis().temp_size_in_bytes
  two = jax.numpy.asarray([0, 2])
  select = slot_programs.select_program.lower(adapters, two, 3).compile().memory_analysis()
  copy = select.output_size_in_bytes + select.temp_size_in_bytes
  assert 0.9 * extra <= copy <= 1.01 * extra  # (to 1%: the weights' two columns)
  # (the weights' two columns, [4, 2], are the program's own)
  assert temp(slot_programs.select_program(adapters, two, 3), two) <= (
      temp(adapters, None) + 0.01 * extra)


def test_the_samplers_fixed_term_covers_the_full_copies_a_call_routes():
  """A sampler call runs on a copy of each full copy it routes (PolicyStore.routed):
  a stage's call of one role, one copy; an episodes session, every role's (one
  engine a copy). What they allocate is what the term adds over LoRA's."""
  model = SMALL_QWEN.replace(compute_dtype="float32")
  shapes = dict(num_roles=3, prompt_len=16, max_new_tokens=48, param_dtype="float32")
  lora = planner.plan(model, "shared", "lora", ONE, 80.0, planner.Workload(**shapes))
  store = PolicyStore.create(model, init_params(model, jax.random.PRNGKey(0)), ["a", "b", "c"],
                             mode="isolated", kind="full")
  live = lambda: sum(x.nbytes for x in jax.live_arrays())
  for roles in (["a"], ["a", "b", "c"]):
    term = planner.plan(model, "isolated", "full", ONE, 80.0, planner.Workload(
        **shapes, routed_roles=len(roles))).rollout_fixed - lora.rollout_fixed
    before = live()
    routed = [store.routed([role])[0] for role in roles]  # as RoleSession routes its engines
    assert live() - before == term > 0
    del routed


def test_workload_of_routes_a_stage_groups_roles_or_every_role_by_episodes():
  config = get_config("workflow=voting,policy=isolated")
  assert planner.workload_of(config).routed_roles == 1
  config.rollout.schedule = "episodes"
  assert planner.workload_of(config).routed_roles == 2


def test_the_continuous_engines_row_covers_its_narrowed_decode():
  """Decoding half the slots, or half the columns, copies half the KV cache (the
  compiled program's temp bytes): with short prompts, where no prefill's scores
  cover it, the continuous engine's rollout row budgets it and the lockstep
  sampler's does not."""
  from marl_jax.generate import draw, sampler, slot_programs  # pylint: disable=g-import-not-at-top
  model = SMALL_QWEN.replace(compute_dtype="float32")
  shapes = dict(num_roles=2, lora_rank=4, prompt_len=16, max_new_tokens=240,
                param_dtype="float32", compute_dtype="float32")
  per_row = {engine: planner.plan(model, "isolated", "lora", ONE, 80.0, planner.Workload(
      **shapes, engine=engine)) for engine in ("continuous", "lockstep")}
  slots = 8
  params = init_params(model, jax.random.PRNGKey(0))
  _, decode_params = sampler.program_weights(model, params, slots, slots=False)
  state = slot_programs.init_state(model, slots, 256, None,
                                   isinstance(decode_params["layers"], list))
  spec = draw.DrawSpec.of([sampler.SamplingParams(temperature=1.0, max_new_tokens=240)])
  kv = per_row["continuous"].kv_per_row
  extra = {e: (p.rollout_per_row - kv) * slots for e, p in per_row.items()}
  # Half the slots over every column, or every slot over half the columns.
  for width, columns in ((slots // 2, 256), (slots, 128)):
    program = slot_programs.decode_program.lower(
        model, spec, 8, width, columns, False, decode_params, None, None, state,
        jax.numpy.asarray([2])).compile()
    copy = program.memory_analysis().temp_size_in_bytes
    assert kv * slots // 2 <= copy <= 1.2 * kv * slots // 2  # half the cache, and little else
    # (to 1%: the planner leaves out the per-slot flags, cache_valid's byte a column)
    assert extra["lockstep"] < copy <= 1.01 * extra["continuous"]
  # Moving live rows into the narrower prefix copies only the rows it moves.
  moves = jax.numpy.arange(slots // 2, dtype=jax.numpy.int32)
  move = slot_programs.move_program.lower(False, state, moves + slots // 2, moves).compile()
  assert move.memory_analysis().temp_size_in_bytes <= extra["continuous"]
