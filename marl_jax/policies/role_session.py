"""A continuous-engine session behind a PolicyStore's routing (PolicyStore.session):
rows name their roles and get their LoRA weights or full copy."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from marl_jax.generate import continuous
from marl_jax.generate import sampler as sampling_lib


def split_slots(slots: int, demand: Sequence[float]) -> list[int]:
  """`slots` split among engines: one each, the rest in proportion to `demand`
  (largest remainders first, ties to the earlier engine; evenly where no engine
  has any); sums to `slots`."""
  if slots < len(demand):
    raise ValueError(f"a session over {len(demand)} full copies needs a decode slot for each; "
                     f"got slots={slots}: set rollout.slots >= {len(demand)}.")
  if min(demand, default=0) < 0:
    raise ValueError(f"session shares must be >= 0, got {list(demand)}.")
  demand = list(demand) if sum(demand) > 0 else [1] * len(demand)
  spare = slots - len(demand)
  exact = [spare * d / sum(demand) for d in demand]
  out = [1 + math.floor(e) for e in exact]
  by_remainder = sorted(range(len(demand)), key=lambda i: math.floor(exact[i]) - exact[i])
  for i in by_remainder[:slots - sum(out)]:
    out[i] += 1
  return out


class RoleSession:
  """continuous.Session behind a PolicyStore's routing: rows name their roles, and the
  session gives them their LoRA weights or full copy (PolicyStore.session).

  `slots` decode slots (KV-cache rows) in all. LoRA (and a single set of
  weights): one engine over the roles' slots (lora.compact), its decode slots
  shared by every role. Full copies: one engine per copy the roles use, stepped
  only while it has rows, so a copy with nothing to decode costs nothing (one
  engine over the stacked copies would decode every copy's slots at every
  step); the slots are split among them in proportion to `shares` (role ->
  its calls per episode; default one each), at least one each (split_slots).
  `store` is the PolicyStore that opens the session (typed Any: naming the class
  here would import store.py, which imports this module).
  """

  def __init__(self, store: Any, roles: Sequence[str],
               sampling: sampling_lib.SamplingParams | Sequence[sampling_lib.SamplingParams],
               *, slots: int, shares: Mapping[str, float] | None = None, **options):
    self.roles = tuple(dict.fromkeys(roles))
    if not self.roles:
      raise ValueError("PolicyStore.session() needs the roles its rows will have.")
    self._stats = options.pop("stats", None)
    if "full" in store.trainable:
      by_copy = {}
      for role, copy in zip(self.roles, store.full_slots(self.roles)):
        by_copy.setdefault(int(copy), []).append(role)
      groups = list(by_copy.values())
    else:
      groups = [list(self.roles)]
    shares = shares or {}
    split = split_slots(slots, [sum(shares.get(role, 1) for role in g) for g in groups])
    self.engines: list[continuous.Session] = []
    self._engine_of, self._weights = {}, {}
    for group, engine_slots in zip(groups, split):
      # only the slots and the copy of these roles run, routed as generate routes them
      params, adapters, weights, _ = store.routed(group)
      for i, role in enumerate(group):
        self._engine_of[role] = len(self.engines)
        self._weights[role] = None if weights is None else weights[i]
      self.engines.append(continuous.Session(
          store.config, params, sampling, slots=engine_slots, adapters=adapters,
          adapter_slots=None if weights is None else weights.shape[1], **options))
    self._handle: dict[tuple[int, int], int] = {}  # (engine, its row) -> the session's row
    self._next = 0
    self._sync_stats()

  @property
  def idle(self) -> bool:
    return all(engine.idle for engine in self.engines)

  @property
  def stats(self) -> continuous.Stats:
    """The engines' Stats summed (the `stats` given to session() holds the same)."""
    total = continuous.Stats()
    for engine in self.engines:
      for field in dataclasses.fields(total):
        setattr(total, field.name, getattr(total, field.name) + getattr(engine.stats, field.name))
    return total

  def _sync_stats(self) -> None:
    if self._stats is not None:
      self._stats.__dict__.update(self.stats.__dict__)

  def submit(self, prompts: Sequence[Sequence[int]], roles: Sequence[str], keys: Any,
             sampling: Any = None, **options) -> list[int]:
    """continuous.Session.submit for rows of these roles; `options`: limits, priority."""
    unknown = sorted(set(roles) - set(self.roles))
    if len(roles) != len(prompts) or unknown:
      raise ValueError(f"submit() needs one role per prompt, each one of the session's "
                       f"{self.roles}; got {len(roles)} roles for {len(prompts)} prompts"
                       + (f", unknown {unknown}." if unknown else "."))
    keys, n = np.asarray(keys), len(prompts)
    samplings = sampling if isinstance(sampling, (list, tuple)) else [sampling] * n
    handles = [-1] * n
    for e, engine in enumerate(self.engines):
      mine = [i for i, role in enumerate(roles) if self._engine_of[role] == e]
      if not mine:
        continue
      pick = lambda values: None if values is None else [values[i] for i in mine]
      weights = self._weights[roles[mine[0]]]
      rows = engine.submit(
          [prompts[i] for i in mine], keys[mine],
          None if sampling is None else pick(samplings),
          adapter_weights=None if weights is None else np.stack([self._weights[roles[i]]
                                                                 for i in mine]),
          **{k: pick(v) for k, v in options.items()})
      for i, row in zip(mine, rows):
        handles[i] = self._handle[(e, row)] = self._next
        self._next += 1
    self._sync_stats()
    return handles

  def step(self) -> list[continuous.Finished]:
    """One step of every engine that has rows; the rows that finished (the session's handles)."""
    out = []
    for e, engine in enumerate(self.engines):
      if not engine.idle:
        out += [dataclasses.replace(done, row=self._handle.pop((e, done.row)))
                for done in engine.step()]
    self._sync_stats()
    return out
