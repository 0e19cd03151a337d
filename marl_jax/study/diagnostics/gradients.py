"""Role-level gradient dynamics from metrics.jsonl.

  grad_norm/<role>        pre-clip gradient norm of the role (IP: its slot; SP:
                          the per-role split of rl.update)
  grad_mass_share/<role>  |g_role|^2 / sum_r |g_r|^2 (per-role split)

Same-role amplification: the N agents of one role (Voting's generators,
Orch-Workers' workers) add their gradients into one slot. `amplification`
compares a role's figure in two runs that differ only in N (e.g. voting n=3
vs n=1; the single workflow is a proxy for n=1); what the ratio should be
depends on the loss's denominator and the update scheme
(diagnostics.mechanics). Windows are fractions of a run's last logged step.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

_SLOT = re.compile(r"slot\d+")
Window = tuple[float, float]


def roles_of(records: Sequence[dict], prefix: str = "grad_norm") -> list[str]:
  """Roles that have a `<prefix>/<role>` metric (policy slots excluded)."""
  roles = {k.split("/", 1)[1] for r in records for k in r
           if k.startswith(prefix + "/") and k.count("/") == 1}
  return sorted(r for r in roles if not _SLOT.fullmatch(r))


def role_series(records: Sequence[dict], prefix: str = "grad_norm"
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{role: (steps, values)} of `<prefix>/<role>`."""
  out = {}
  for role in roles_of(records, prefix):
    key = f"{prefix}/{role}"
    points = [(r["step"], float(r[key])) for r in records
              if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    if points:
      steps, values = zip(*sorted(points))
      out[role] = (np.asarray(steps), np.asarray(values))
  return out


def in_window(steps: np.ndarray, window: Window) -> np.ndarray:
  lo, hi = window
  if not 0.0 <= lo < hi <= 1.0:
    raise ValueError(f"Gradient window {window} must be fractions 0 <= start < end <= 1.")
  last = steps.max() if len(steps) else 0
  return (steps >= lo * last) & (steps <= hi * last)


def role_means(records: Sequence[dict], prefix: str = "grad_norm",
               window: Window = (0.0, 1.0)) -> dict[str, float]:
  """{role: mean of `<prefix>/<role>` over the window}."""
  out = {}
  for role, (steps, values) in role_series(records, prefix).items():
    chosen = values[in_window(steps, window)]
    if len(chosen):
      out[role] = float(chosen.mean())
  return out


def dominant_role(records: Sequence[dict], window: Window = (0.0, 1.0)
                  ) -> tuple[str, float] | None:
  """(role, mean share) of the role with the largest mean gradient-mass share.

  Steps with no gradient at all (every share 0, e.g. all advantages 0) are left out.
  """
  prefix = "grad_mass_share/"
  moved = [r for r in records
           if sum(v for k, v in r.items() if k.startswith(prefix) and isinstance(v, float)) > 0]
  shares = role_means(moved, "grad_mass_share", window)
  if len(shares) < 2:
    return None
  role = max(shares, key=shares.get)
  return role, shares[role]


def amplification(records_n: Sequence[dict], records_1: Sequence[dict],
                  role: str = "generator", window: Window = (0.0, 1.0),
                  role_1: str | None = None, prefix: str = "grad_norm") -> float:
  """Mean <prefix>/<role> of the N-agent run over that of the 1-agent run (NaN if missing).

  role_1: the role to read in the 1-agent run when it is named otherwise there.
  prefix: grad_norm, or another per-role figure (update_norm, drift).
  """
  many = role_means(records_n, prefix, window).get(role)
  one = role_means(records_1, prefix, window).get(role_1 or role)
  if many is None or one is None or one <= 0:
    return math.nan
  return many / one
