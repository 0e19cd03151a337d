"""Names the raw outputs of rl.update.apply_minibatch as per-role metrics.

  entropy/<role>, clip_frac/<role>, kl/<role>, ratio/<role>   token means
  dual_clip_frac/<role>        share of tokens the dual clip bounds (rl.dual_clip on)
  grad_norm/slot<k>            pre-clip gradient L2 norm of policy slot k
  grad_norm/<role>             the role's gradient norm: its slot's under IP,
                               from the per-role split when it ran (SP)
  grad_mass_share/<role>       |g_role|^2 / sum_r |g_r|^2 (per-role split)
  grad_cos/<role>_vs_<role>    cosine between two roles' gradients (split)

Keys are valid TensorBoard tags (letters, digits, _ - . /). Runs written
before grad_cos was renamed name it grad_cos/<role>~<role>; canonical_key
maps that to today's name, and marl_jax.trainer.metrics.read_jsonl applies
it, so every reader of metrics.jsonl accepts both.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_SUMMED = ("tokens", "entropy", "clip_frac", "kl", "ratio", "pg_loss", "dual_clip_frac")
# The pair name until the rename: TensorBoard rejects '~' (tensorboardX
# rewrote it to '_' with a warning per pair, every run).
_LEGACY_PAIR = re.compile(r"^grad_cos/(.+?)~(.+)$")


def pair_key(first: str, second: str) -> str:
  """The name of the cosine between two roles' gradients."""
  return f"grad_cos/{first}_vs_{second}"


def canonical_key(key: str) -> str:
  """Today's name of a metric key, given one written by an older version."""
  match = _LEGACY_PAIR.match(key)
  return pair_key(*match.groups()) if match else key


def combine(parts: Sequence[dict]) -> dict:
  """Merges the raw metrics of several minibatch steps (sums stay sums); a key
  that only some steps have (the per-role split, run on the minibatches with
  several roles) over those steps."""
  out = {}
  for key in dict.fromkeys(k for p in parts for k in p):
    values = np.stack([np.asarray(p[key], np.float64) for p in parts if key in p])
    out[key] = values.sum(0) if key in _SUMMED else values.mean(0)
  return out


def name(raw: dict, roles: Sequence[str], routing) -> dict[str, float]:
  out = {"loss": float(raw["loss"])}
  tokens = np.maximum(raw["tokens"], 1.0)
  for key in ("entropy", "clip_frac", "kl", "ratio", "dual_clip_frac"):
    if key not in raw:
      continue
    for i, role in enumerate(roles):
      if raw["tokens"][i] > 0:
        out[f"{key}/{role}"] = float(raw[key][i] / tokens[i])
  norms = np.asarray(raw["slot_grad_norms"])
  for slot, value in enumerate(norms):
    out[f"grad_norm/slot{slot}"] = float(value)
  if routing.mode == "isolated":
    for role in roles:
      out[f"grad_norm/{role}"] = float(norms[routing.slot_of(role)])
  if "role_gram" in raw:
    gram = np.asarray(raw["role_gram"], np.float64)
    diag = np.maximum(np.diag(gram), 0.0)
    total = max(diag.sum(), 1e-30)
    for i, role in enumerate(roles):
      out[f"grad_norm/{role}"] = float(np.sqrt(diag[i]))
      out[f"grad_mass_share/{role}"] = float(diag[i] / total)
    for i in range(len(roles)):
      for j in range(i + 1, len(roles)):
        denom = np.sqrt(diag[i] * diag[j])
        if denom > 0:
          out[pair_key(roles[i], roles[j])] = float(gram[i, j] / denom)
  return out
