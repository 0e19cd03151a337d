"""The planner's figures as the markdown tables of WORKSPACE.md and launch/plan.py."""

from __future__ import annotations

from typing import Sequence

from marl_jax.trainer.planner import GIB, HARDWARE, MIB, Plan, Workload, plan_hardware

_COLUMNS = ("model", "policy", "kind", "hardware", "mesh", "params GiB", "slots GiB",
            "opt+grad GiB", "rollout copy GiB", "state GiB", "KV MiB/row", "rollout MiB/row",
            "update MiB/row", "max rows/device (sampler call, update chunk)",
            "study step (sampler calls, update chunks)")


def _gib(n: int) -> str:
  return f"{n / GIB:.2f}"


def table(plans: Sequence[Plan]) -> str:
  """A markdown table of plans; GiB per device, per-row terms in MiB."""
  lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
  for p in plans:
    mesh = "x".join(f"{k}{v}" for k, v in p.mesh.items() if v > 1) or "1"
    chunks = p.chunks()
    step = "does not fit" if chunks is None else (
        "one call each" if chunks == (1, 1) else f"{chunks[0]}, {chunks[1]}")
    rows = f"{p.max_rollout_rows}, {p.max_update_rows}" if p.fits else "0"
    cells = (p.preset, {"shared": "SP", "isolated": "IP"}.get(p.mode, p.mode), p.kind,
             p.hardware, mesh, _gib(p.params), _gib(p.slots), _gib(p.optimizer),
             _gib(p.rollout_copy), _gib(p.state), f"{p.kv_per_row / MIB:.0f}",
             f"{p.rollout_per_row / MIB:.0f}", f"{p.update_per_row / MIB:.0f}", rows, step)
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def study_table(workload: Workload = Workload(), models: Sequence[str] = (
    "qwen3_0_6b", "qwen3_1_7b", "qwen3_4b"), hardware: Sequence[str] = tuple(HARDWARE),
                **options) -> str:
  """The table of WORKSPACE.md: models x SP/IP x LoRA/full x machines."""
  plans = [plan_hardware(m, mode, kind, HARDWARE[h], workload, **options)
           for m in models for mode in ("shared", "isolated") for kind in ("lora", "full")
           for h in hardware]
  return table(plans)
