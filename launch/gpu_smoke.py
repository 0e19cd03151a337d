r"""Rollout and train-step throughput and MFU of a full-size model on this machine's devices.

On a GPU box (never in CI):

  pip install -e '.[cuda]'
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 python launch/gpu_smoke.py --preset=qwen3_0_6b
  python launch/gpu_smoke.py --preset=qwen3_1_7b --batch=32 --kind=full

On a CPU, as a check that it runs: python launch/gpu_smoke.py --preset=tiny_s
(smaller defaults apply to tiny presets). The last line printed is one JSON
object; formulas in marl_jax/bench/smoke.py.

The update recomputes each layer in its backward pass (rl.remat='layer', the
trainer's default for every model but the tiny ones). On a device that reports
its memory, the planner first checks that --batch rows fit one sampler call
and one update (marl_jax/trainer/planner.py) and stops before compiling when
they do not, with the rows per device that do.
"""

from marl_jax.trainer import hostmem  # pylint: disable=g-bad-import-order
hostmem.reexec()  # before anything else: glibc reads malloc settings at start

import json

from absl import app, flags
import jax

from marl_jax.bench import smoke
from marl_jax.parallel import sharding
from marl_jax.trainer import console
from marl_jax.trainer import planner

_PRESET = flags.DEFINE_string("preset", "qwen3_0_6b", "Model preset (random bf16 weights).")
_BATCH = flags.DEFINE_integer("batch", 0, "Rows per rollout and per update (0: 64; tiny: 8).")
_PROMPT = flags.DEFINE_integer("prompt_len", 0, "Prompt tokens (0: 512; tiny: 16).")
_NEW = flags.DEFINE_integer("new_tokens", 0, "Generated tokens (0: 512; tiny: 16).")
_MODE = flags.DEFINE_enum("mode", "shared", ["shared", "isolated"], "SP or IP.")
_KIND = flags.DEFINE_enum("kind", "lora", ["lora", "full"], "Trainable kind.")
_RANK = flags.DEFINE_integer("rank", 64, "LoRA rank.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed updates (the median is reported).")
_MESH = flags.DEFINE_string("mesh", "", "Axis sizes, e.g. data=1,fsdp=-1 ('' = preset default).")


def _check_fit(mesh: sharding.MeshConfig | None, batch: int, prompt_len: int,
               new_tokens: int) -> None:
  """The planner's verdict on `batch` rows, before anything compiles (a device with a
  memory size only); smoke.run's store: bf16 weights, two roles, the whole batch at once."""
  limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
  if not limit:
    return
  mesh = (mesh or sharding.default_mesh_config(_PRESET.value, jax.process_count())).resolve(
      jax.device_count())
  workload = planner.Workload(tasks=batch, group=1, agents=1, calls=1, num_roles=2,
                              prompt_len=prompt_len, max_new_tokens=new_tokens,
                              lora_rank=_RANK.value, param_dtype="bfloat16", remat="layer")
  plan = planner.plan(_PRESET.value, _MODE.value, _KIND.value, mesh.sizes, limit / planner.GIB,
                      workload, usable=1.0, state_over_data=mesh.state_over_data)
  rows = min(plan.max_rollout_rows, plan.max_update_rows)
  if plan.stage_rows > rows:
    raise app.UsageError(
        f"--batch={batch} rows of {prompt_len} + {new_tokens} tokens do not fit "
        f"{limit / planner.GIB:.1f} GiB per device by the planner (state "
        f"{plan.state / planner.GIB:.1f} GiB, a sampler row {plan.rollout_per_row / planner.MIB:.0f} "
        f"MiB, an update row {plan.update_per_row / planner.MIB:.0f} MiB): {plan.stage_rows} "
        f"rows per device where {rows} fit; lower --batch or the lengths.")


def main(argv):
  del argv
  console.setup()  # library INFO off the console (--verbosity=0 brings it back)
  tiny = _PRESET.value.startswith("tiny")
  mesh = None
  if _MESH.value:
    mesh = sharding.MeshConfig(**{k: int(v) for k, v in (
        item.split("=") for item in _MESH.value.split(","))})
  batch = _BATCH.value or (8 if tiny else 64)
  prompt_len = _PROMPT.value or (16 if tiny else 512)
  new_tokens = _NEW.value or (16 if tiny else 512)
  _check_fit(mesh, batch, prompt_len, new_tokens)
  result = smoke.run(
      _PRESET.value, batch=batch, prompt_len=prompt_len, new_tokens=new_tokens,
      mode=_MODE.value, kind=_KIND.value, rank=_RANK.value, steps=_STEPS.value,
      mesh_config=mesh)
  print(f"{result['preset']} on {result['devices']} x {result['device_kind']}: "
        f"rollout {result['rollout_tokens_per_s']:,.0f} tok/s (MFU "
        f"{100 * result['rollout_mfu']:.1f}%, {result['decode_read_gbps']:,.0f} GB/s read), "
        f"update {result['update_tokens_per_s']:,.0f} tok/s (MFU "
        f"{100 * result['update_mfu']:.1f}%)", flush=True)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
