r"""Prints per-device memory of runs on meshes, from shapes alone (no allocation).

  python launch/plan.py                          # the study table (WORKSPACE.md)
  python launch/plan.py --models=qwen3_4b --hardware=v5e-8 --modes=isolated \
      --kinds=full --mesh=data=1,fsdp=4,role=2 --max_new_tokens=2048
  python launch/plan.py --models=qwen3_1_7b --devices=16 --memory_gib=16 --hosts=4
  python launch/plan.py --measure                # compiled bytes vs the formulas

With --measure, XLA compiles the real update chunk and sampler call of each
model at each of --tokens (rows of prompt + completion, the completion at most
--max_new_tokens and half the row) on abstract shapes, at two row counts, and
prints per row the compiled temp bytes beside the planner's formula (the first
of --modes and of --kinds; marl_jax/trainer/measure.py). Its last line is one
JSON object: {"<model>/<tokens>/update_bytes_per_row": ..., ...}.

Formulas and assumptions: marl_jax/trainer/planner.py (module docstring).
"""

import json
import time

from absl import app, flags

from marl_jax.parallel import sharding
from marl_jax.trainer import console
from marl_jax.trainer import measure as measure_lib
from marl_jax.trainer import plan_table, planner

_MODELS = flags.DEFINE_list("models", ["qwen3_0_6b", "qwen3_1_7b", "qwen3_4b"], "Presets.")
_MODES = flags.DEFINE_list("modes", ["shared", "isolated"], "Policy modes (SP / IP).")
_KINDS = flags.DEFINE_list("kinds", ["lora", "full"], "Trainable kinds.")
_HARDWARE = flags.DEFINE_list("hardware", list(planner.HARDWARE),
                              f"Named machines: {sorted(planner.HARDWARE)}.")
_DEVICES = flags.DEFINE_integer("devices", 0, "A custom machine instead: device count.")
_MEMORY = flags.DEFINE_float("memory_gib", 16.0, "Custom machine: memory per device, GiB.")
_HOSTS = flags.DEFINE_integer("hosts", 1, "Custom machine: hosts (processes).")
_MESH = flags.DEFINE_string("mesh", "", "Axis sizes, e.g. data=1,fsdp=-1,tensor=2 "
                            "('' = the preset's default mesh).")
_OVER_DATA = flags.DEFINE_enum("state_over_data", "auto", ["auto", "yes", "no"],
                               "Shard params and optimizer state over data too "
                               "(config.mesh.state_over_data; auto: the preset default).")
_USABLE = flags.DEFINE_float("usable", 0.9, "Fraction of device memory the run may use.")
_ROLLOUT = flags.DEFINE_enum("rollout_params", "auto", ["auto", "sharded", "replicated"],
                             "Layout of the rollout copy (config.mesh.rollout_params).")
_TASKS = flags.DEFINE_integer("tasks", 64, "Problems per step.")
_GROUP = flags.DEFINE_integer("group", 8, "GRPO samples per problem.")
_AGENTS = flags.DEFINE_integer("agents", 3, "Rows per episode in the largest stage.")
_CALLS = flags.DEFINE_integer("calls", 4, "Calls per episode in an update.")
_ROLES = flags.DEFINE_integer("roles", 3, "Roles (IP slots).")
_ROUTED = flags.DEFINE_integer("routed_roles", 1, "Roles whose full copies one sampler call "
                               "routes (--roles for rollout.schedule=episodes).")
_PROMPT = flags.DEFINE_integer("prompt_len", 4096, "Prompt tokens per row (the study's max).")
_NEW = flags.DEFINE_integer("max_new_tokens", 1024, "Response tokens per row (the max).")
_RANK = flags.DEFINE_integer("lora_rank", 64, "LoRA rank.")
_PARAM_DTYPE = flags.DEFINE_string("param_dtype", "float32", "Base parameter dtype.")
_COMPUTE_DTYPE = flags.DEFINE_string("compute_dtype", "bfloat16", "Matmul dtype.")
_REMAT = flags.DEFINE_string("remat", "layer", "config.rl.remat of the update: none, layer, dots.")
_MEASURE = flags.DEFINE_bool("measure", False, "Compile the update and the sampler on abstract "
                             "shapes and print their temp bytes per row beside the formulas.")
_TOKENS = flags.DEFINE_list("tokens", ["1024", "5120"], "--measure: row lengths (prompt + completion).")
_PROGRAMS = flags.DEFINE_list("programs", ["update", "sampler"], "--measure: programs to compile.")


def _mesh(preset: str, hosts: int) -> sharding.MeshConfig:
  sizes = dict(item.split("=") for item in _MESH.value.split(",")) if _MESH.value else {}
  unknown = set(sizes) - set(sharding.MESH_AXES)
  if unknown:
    raise app.UsageError(f"--mesh names unknown axes {sorted(unknown)}; "
                         f"valid: {sharding.MESH_AXES}.")
  return sharding.mesh_config({**sizes, "state_over_data": _OVER_DATA.value}, preset, hosts)


def _measure(workload: planner.Workload) -> None:
  gib = lambda n: f"{n / planner.GIB:.3f}"
  print("| model | program | tokens | rows compiled | compiled GiB/row | formula GiB/row | "
        "formula / compiled | one row: compiled GiB | one row: formula GiB |\n" + "|---" * 9 + "|")
  out = {}
  for model in _MODELS.value:
    for tokens in map(int, _TOKENS.value):
      start = time.perf_counter()
      for m in measure_lib.measure(model, tokens, workload, _MODES.value[0], _KINDS.value[0],
                                   tuple(_PROGRAMS.value)):
        print(f"| {model} | {m.program} | {tokens} | {m.rows[0]}, {m.rows[1]} | {gib(m.per_row)} "
              f"| {gib(m.formula_per_row)} | {m.ratio:.2f} | {gib(m.one_row)} | "
              f"{gib(m.formula_one_row)} |", flush=True)
        key = f"{model}/{tokens}/{m.program}"
        out.update({f"{key}_bytes_per_row": m.per_row,
                    f"{key}_formula_bytes_per_row": m.formula_per_row,
                    f"{key}_bytes_one_row": m.one_row})
      out[f"{model}/{tokens}/compile_s"] = round(time.perf_counter() - start, 1)
  print(json.dumps(out))


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  workload = planner.Workload(
      tasks=_TASKS.value, group=_GROUP.value, agents=_AGENTS.value, calls=_CALLS.value,
      num_roles=_ROLES.value, prompt_len=_PROMPT.value, max_new_tokens=_NEW.value,
      lora_rank=_RANK.value, param_dtype=_PARAM_DTYPE.value,
      compute_dtype=_COMPUTE_DTYPE.value, remat=_REMAT.value, routed_roles=_ROUTED.value)
  if _MEASURE.value:
    _measure(workload)
    return
  machines = ([planner.Hardware("custom", _DEVICES.value, _MEMORY.value, _HOSTS.value)]
              if _DEVICES.value else [planner.HARDWARE[h] for h in _HARDWARE.value])
  plans = [planner.plan_hardware(m, mode, kind, hw, workload, _mesh(m, hw.hosts),
                                 usable=_USABLE.value, rollout_params=_ROLLOUT.value)
           for m in _MODELS.value for mode in _MODES.value for kind in _KINDS.value
           for hw in machines]
  print(plan_table.table(plans))


if __name__ == "__main__":
  app.run(main)
