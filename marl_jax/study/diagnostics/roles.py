"""Per-role training series from metrics.jsonl: parse rates and rewards per step.

  parse_ok/<role>            share of the role's calls that parsed cleanly
  parse_rate/<role>/<fail>   share of the role's calls with that failure
  reward/<role>              mean episode reward over the role's calls

Runs written before the rates were logged have only the counts
parse/<role>/<failure> and calls/<role>. `parse_ok` derives the rate from
them: 1 - (failures / calls), floored at 0. A call that fails two ways (e.g.
no_answer and truncated) counts twice there, so the derived rate is a lower
bound of the logged one; `parse_ok_derived` says whether any step needed it.

`start_parse` is a run's parse rate per role before any update: the first
training step's rollouts (step 1 is sampled from the base, before the first
update), else the step-0 evaluation's eval/<mode>/parse_ok/<role>. A role
whose start rate is below PARSE_FLOOR (more than half of its calls fail to
parse) starts broken: a run that uses it as a reference compares against a
workflow that does not work, whatever its number of agents.
"""

from __future__ import annotations

import collections
import math
from typing import Sequence

import numpy as np

Series = dict[str, tuple[np.ndarray, np.ndarray]]
PARSE_FLOOR = 0.5


def _roles(records: Sequence[dict], prefix: str) -> list[str]:
  """Roles with a `<prefix>/<role>` metric ('mean' is an aggregate, not a role)."""
  roles = {k.split("/")[1] for r in records for k in r if k.startswith(prefix + "/")}
  return sorted(r for r in roles if r != "mean")


def _series(points: dict[str, list[tuple[int, float]]]) -> Series:
  out = {}
  for role, values in sorted(points.items()):
    values = sorted((s, v) for s, v in values if math.isfinite(v))
    if values:
      steps, ys = zip(*values)
      out[role] = (np.asarray(steps), np.asarray(ys))
  return out


def _number(record: dict, key: str) -> float | None:
  value = record.get(key)
  return float(value) if isinstance(value, (int, float)) else None


def parse_ok(records: Sequence[dict]) -> Series:
  """{role: (steps, share of the role's calls that parsed cleanly)} per training step."""
  points = collections.defaultdict(list)
  for r in records:
    for role in {k.split("/")[1] for k in r if k.startswith(("calls/", "parse_ok/"))}:
      logged = _number(r, f"parse_ok/{role}")
      if logged is not None:
        points[role].append((r["step"], logged))
        continue
      calls = _number(r, f"calls/{role}")
      if not calls:
        continue
      failures = sum(float(v) for k, v in r.items()
                     if k.startswith(f"parse/{role}/") and isinstance(v, (int, float)))
      points[role].append((r["step"], max(0.0, 1.0 - failures / calls)))
  return _series(points)


def parse_ok_derived(records: Sequence[dict]) -> bool:
  """Whether some step's parse rate had to be derived from counts (an older run)."""
  return any(k.startswith("calls/") and f"parse_ok/{k[6:]}" not in r
             for r in records for k in r)


def rewards(records: Sequence[dict]) -> Series:
  """{role: (steps, mean episode reward over the role's calls)} per training step."""
  points = collections.defaultdict(list)
  for r in records:
    for role in _roles([r], "reward"):
      value = _number(r, f"reward/{role}")
      if value is not None:
        points[role].append((r["step"], value))
  return _series(points)


def window_mean(series: tuple[np.ndarray, np.ndarray], first: bool, k: int = 5) -> float:
  """Mean of the first (or last) k logged values of a series; NaN when empty."""
  values = series[1][:k] if first else series[1][-k:]
  return float(np.mean(values)) if len(values) else math.nan


def start_parse(records: Sequence[dict]) -> tuple[dict[str, float], str]:
  """({role: parse rate before any update}, where it was measured) (module docstring);
  ({}, '') when neither the first training step nor the step-0 evaluation has one."""
  rates = {role: float(values[0]) for role, (steps, values) in parse_ok(records).items()
           if steps[0] == 1}
  if rates:
    return rates, "step 1 rollouts"
  for r in records:
    for mode in ("sampled", "greedy") if r.get("step") == 0 else ():
      prefix = f"eval/{mode}/parse_ok/"
      logged = {k[len(prefix):]: float(v) for k, v in r.items()
                if k.startswith(prefix) and isinstance(v, (int, float))}
      if logged:
        return logged, f"step-0 evaluation ({mode})"
  return {}, ""


def broken_roles(rates: dict[str, float], floor: float = PARSE_FLOOR) -> list[str]:
  """Roles whose parse rate is below `floor`, in name order."""
  return sorted(role for role, rate in rates.items() if rate < floor)
