"""PolicyStore: the frozen base, the trainable policy slots, and which role uses which.

Sharing modes (the study's axis):
  shared    one trainable slot serves every role (SP); slot 0.
  isolated  one slot per role (IP), slot i for roles[i]; agents of one role
            (the N generators, the M workers) share their role's slot.
  hybrid    a shared slot 0 plus a small per-role adapter, slot 1 + i; every
            row is routed to both (two non-zero adapter weights per row).
Trainable kinds:
  lora      adapters on the frozen base (marl_jax.models.lora); the reference
            policy is the base with adapters off. trainable = {'lora': adapters}.
  full      parameter copies stacked on a leading slot axis,
            trainable = {'full': params [F, ...]}; in hybrid mode the shared
            slot is the (single) full copy and the per-role part is LoRA,
            trainable = {'full': [1, ...], 'lora': adapters}.
All slots start from the same base (identical copies; LoRA B = 0 and slots of
equal rank share A), so before any update every mode produces the outputs of
the base model. Rows of different roles run in one jitted call: LoRA slots by
per-row adapter weights, full copies by vmapped per-slot sub-batches.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.generate import continuous
from marl_jax.generate import sampler as sampling_lib
from marl_jax.models import lora as lora_lib
from marl_jax.models import scoring
from marl_jax.models.config import ModelConfig
from marl_jax.policies import role_session

MODES = ("shared", "isolated", "hybrid")
KINDS = ("lora", "full")


@dataclasses.dataclass(frozen=True)
class Routing:
  """Static routing metadata of a PolicyStore (hashable: safe as a jit static / pytree aux).

  Attributes:
    mode: one of MODES. kind: one of KINDS.
    roles: role names, in slot order for isolated / hybrid.
    lora: adapter config (rank, alpha, targets); unused by full/shared and
      full/isolated.
    role_rank: rank of hybrid mode's per-role adapters (default rank // 4);
      their weight is alpha / role_rank.
  """

  mode: str
  kind: str
  roles: tuple[str, ...]
  lora: lora_lib.LoraConfig | None = lora_lib.LoraConfig()
  role_rank: int | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"PolicyStore mode {self.mode!r} is unknown; valid modes: {MODES}.")
    if self.kind not in KINDS:
      raise ValueError(f"PolicyStore kind {self.kind!r} is unknown; valid kinds: {KINDS}.")
    roles = tuple(self.roles)
    if not roles or len(set(roles)) != len(roles):
      raise ValueError(f"PolicyStore roles must be non-empty and distinct, got {roles}.")
    object.__setattr__(self, "roles", roles)
    if self.uses_lora and self.lora is None:
      raise ValueError(f"PolicyStore kind={self.kind!r}, mode={self.mode!r} needs a LoraConfig.")
    if self.mode == "hybrid":
      rank = self.role_rank or max(1, self.lora.rank // 4)
      if not 0 < rank <= self.lora.rank:
        raise ValueError(f"PolicyStore role_rank must be in [1, lora.rank={self.lora.rank}], "
                         f"got {self.role_rank}.")
      object.__setattr__(self, "role_rank", rank)

  @property
  def uses_lora(self) -> bool:
    return self.kind == "lora" or self.mode == "hybrid"

  @property
  def num_slots(self) -> int:
    return {"shared": 1, "isolated": len(self.roles), "hybrid": 1 + len(self.roles)}[self.mode]

  def role_index(self, role: str) -> int:
    if role not in self.roles:
      raise ValueError(f"Unknown role {role!r}; this PolicyStore's roles are {self.roles}.")
    return self.roles.index(role)

  def slot_of(self, role: str) -> int:
    """The role's own slot: 0 (shared), its index (isolated), 1 + index (hybrid)."""
    i = self.role_index(role)
    return {"shared": 0, "isolated": i, "hybrid": 1 + i}[self.mode]

  def slots_of(self, role: str) -> tuple[int, ...]:
    """Every slot a row of this role is routed to."""
    return (0, self.slot_of(role)) if self.mode == "hybrid" else (self.slot_of(role),)

  @property
  def full_storage(self) -> tuple[int, ...]:
    """Slot ids held as full parameter copies, in storage order."""
    if self.kind != "full":
      return ()
    return (0,) if self.mode == "hybrid" else tuple(range(self.num_slots))

  @property
  def lora_storage(self) -> tuple[tuple[int, int, float], ...]:
    """(slot id, rank, weight) of each LoRA slot, in storage order."""
    if not self.uses_lora:
      return ()
    r, alpha = self.lora.rank, self.lora.alpha
    if self.mode != "hybrid":
      return tuple((s, r, alpha / r) for s in range(self.num_slots))
    roles = tuple((1 + i, self.role_rank, alpha / self.role_rank) for i in range(len(self.roles)))
    return roles if self.kind == "full" else ((0, r, alpha / r),) + roles

  def lora_row(self, role: str) -> np.ndarray:
    """adapter_weights row [S] of one role: its slots' alpha/r, 0 elsewhere."""
    mine = self.slots_of(role)
    return np.array([w if s in mine else 0.0 for s, _, w in self.lora_storage], np.float32)

  def full_slot(self, role: str) -> int:
    """Index, in the stacked full copies, of the copy this role runs on."""
    (slot,) = [i for i, s in enumerate(self.full_storage) if s in self.slots_of(role)]
    return slot


@jax.tree_util.register_pytree_node_class
class PolicyStore:
  """Frozen base params + trainable pytree + static Routing; a jax pytree.

  The optimizer updates `trainable` only (`store.replace(trainable=...)`);
  `base` is the reference policy. Leaves: (base, trainable); aux: (model
  config, routing), so a store can be passed straight into jitted functions.
  """

  def __init__(self, config: ModelConfig, base: Any, trainable: dict[str, Any],
               routing: Routing):
    self.config, self.base, self.trainable, self.routing = config, base, trainable, routing

  def tree_flatten(self):
    return (self.base, self.trainable), (self.config, self.routing)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(aux[0], children[0], children[1], aux[1])

  @classmethod
  def create(
      cls,
      config: ModelConfig,
      base: Any,
      roles: Sequence[str],
      *,
      mode: str = "shared",
      kind: str = "lora",
      lora: lora_lib.LoraConfig | None = lora_lib.LoraConfig(),
      role_rank: int | None = None,
      rng: jax.Array | None = None,
  ) -> "PolicyStore":
    """A store whose slots all start as the base model (see the module doc)."""
    routing = Routing(mode, kind, tuple(roles), lora, role_rank)
    trainable: dict[str, Any] = {}
    if routing.full_storage:
      n = len(routing.full_storage)
      trainable["full"] = jax.tree.map(lambda x: jnp.stack([x] * n), base)
    if routing.lora_storage:
      ranks = [r for _, r, _ in routing.lora_storage]
      # SP's slot, IP's slots and hybrid's shared slot get the same A; hybrid's
      # per-role adapters share another, so they do not start in its subspace.
      init_ids = [int(mode == "hybrid" and s > 0) for s, _, _ in routing.lora_storage]
      rng = jax.random.PRNGKey(0) if rng is None else rng
      trainable["lora"] = lora_lib.init_adapters(config, routing.lora, ranks, rng,
                                                 share_init=init_ids)
    return cls(config, base, trainable, routing)

  # --- routing -------------------------------------------------------------

  @property
  def roles(self) -> tuple[str, ...]:
    return self.routing.roles

  @property
  def mode(self) -> str:
    return self.routing.mode

  @property
  def kind(self) -> str:
    return self.routing.kind

  def slot_of(self, role: str) -> int:
    return self.routing.slot_of(role)

  def adapter_weights(self, roles: Sequence[str]) -> np.ndarray | None:
    """[B, S] LoRA routing weights for rows of these roles (None without LoRA)."""
    if not self.routing.uses_lora:
      return None
    rows = {role: self.routing.lora_row(role) for role in set(roles)}
    return np.stack([rows[role] for role in roles]) if roles else None

  def full_slots(self, roles: Sequence[str]) -> np.ndarray | None:
    """[B] index of each row's full copy (None without full copies)."""
    if not self.routing.full_storage:
      return None
    return np.array([self.routing.full_slot(role) for role in roles], np.int32)

  def route(self, roles: Sequence[str], min_batch: int = 8) -> dict[str, np.ndarray]:
    """Per-row routing arrays (a pytree to pass into jitted scoring / losses).

    'adapter_weights' [B, S] with LoRA; with several full copies, 'index'
    [F, sub] and 'position' [B] from sampling.slot_layout, or 'slot' (a
    scalar) when every row uses one copy: only that copy runs, where the
    sub-batch layout would run every copy on as many rows.
    """
    route = {}
    if self.routing.uses_lora:
      route["adapter_weights"] = self.adapter_weights(roles)
    if len(self.routing.full_storage) > 1:
      slots = self.full_slots(roles)
      if len(slots) and (slots == slots[0]).all():  # one copy: no per-slot sub-batches
        route["slot"] = np.int32(slots[0])
      else:
        route["index"], route["position"] = sampling_lib.slot_layout(
            slots, len(self.routing.full_storage), min_batch)
    return route

  def replace(self, **changes) -> "PolicyStore":
    fields = dict(config=self.config, base=self.base, trainable=self.trainable,
                  routing=self.routing)
    fields.update(changes)
    return PolicyStore(**fields)

  # --- model calls ---------------------------------------------------------

  def params_for(self, role: str, trainable: dict[str, Any] | None = None) -> Any:
    """Plain decoder params of one role: its full copy and LoRA slots merged in.

    The result needs no adapters (per-role export to HF checkpoints).
    """
    trainable = self.trainable if trainable is None else trainable
    params = self.base
    if "full" in trainable:
      slot = self.routing.full_slot(role)
      params = jax.tree.map(lambda x: x[slot], trainable["full"])
    if "lora" in trainable:
      params = lora_lib.merge(params, trainable["lora"], self.routing.lora_row(role))
    return params

  def adapter_for(self, role: str, trainable: dict[str, Any] | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """One role's LoRA slots folded into one adapter on the frozen base
    (lora.fold), for a PEFT export; None without LoRA or when the role runs on
    a full copy (an adapter of the base would not reproduce it)."""
    trainable = self.trainable if trainable is None else trainable
    if "lora" not in trainable or "full" in trainable:
      return None
    ranks = [rank for _, rank, _ in self.routing.lora_storage]
    return lora_lib.fold(trainable["lora"], self.routing.lora_row(role), ranks)

  def routed(self, roles: Sequence[str]) -> tuple[Any, Any, np.ndarray | None,
                                                  np.ndarray | None]:
    """(params, adapters, adapter_weights [B, S], copies [B]) that run rows of
    `roles`: only the LoRA slots (lora.compact) and full copies the rows use, so a
    batch of one role needs no vmap over copies (copies None) in any mode."""
    adapters, weights = self.trainable.get("lora"), self.adapter_weights(roles)
    if adapters is not None:
      adapters, weights = lora_lib.compact(adapters, weights)
    params, full, copies = self.base, self.trainable.get("full"), None
    if full is not None:
      used, slots = np.unique(self.full_slots(roles), return_inverse=True)
      params = jax.tree.map(lambda x: x[used[0]] if len(used) == 1 else x[used], full)
      copies = slots if len(used) > 1 else None
    return params, adapters, weights, copies

  def generate(self, prompts: Sequence[Sequence[int]], roles: Sequence[str], rng: jax.Array,
               sampling: sampling_lib.SamplingParams, *, engine: str = "lockstep",
               **options) -> sampling_lib.Generation:
    """One sampler call for rows of any roles (the rollout's generator backend).

    Slots that no row uses are left out of the call (lora.compact), so a
    batch of one role costs the same in every mode but hybrid (two slots).
    `engine`: 'lockstep' (sampler.generate / generate_slots) or 'continuous'
    (continuous.generate; options then include slots=); `options` go to it.
    """
    if len(roles) != len(prompts):
      raise ValueError(f"generate() got {len(roles)} roles for {len(prompts)} prompts.")
    if engine not in continuous.ENGINES:
      raise ValueError(f"generate() engine={engine!r} is unknown; valid: {continuous.ENGINES}.")
    params, adapters, weights, copies = self.routed(roles)
    if engine == "continuous":
      return continuous.generate(self.config, params, prompts, rng, sampling, copies=copies,
                                 adapters=adapters, adapter_weights=weights, **options)
    if copies is not None:
      return sampling_lib.generate_slots(
          self.config, params, prompts, copies, rng, sampling,
          adapters=adapters, adapter_weights=weights, **options)
    return sampling_lib.generate(self.config, params, prompts, rng, sampling,
                                 adapters=adapters, adapter_weights=weights, **options)

  def session(self, roles: Sequence[str],
              sampling: sampling_lib.SamplingParams | Sequence[sampling_lib.SamplingParams], *,
              slots: int, max_prompt_len: int, **options) -> role_session.RoleSession:
    """A continuous-engine session (continuous.Session) for rows of these roles,
    routed as `generate` routes them, with `slots` decode slots in all (RoleSession);
    `options`: shares (role -> its calls per episode), chunk, min_prompt_len, stats."""
    return role_session.RoleSession(self, roles, sampling, slots=slots,
                                    max_prompt_len=max_prompt_len, **options)

  def token_logprobs(
      self,
      tokens: jax.Array,
      valid: jax.Array,
      route: dict[str, Any],
      *,
      trainable: dict[str, Any] | None = None,
      reference: bool = False,
      **options,
  ) -> tuple[jax.Array, jax.Array]:
    """scoring.token_logprobs of left-padded rows, each under its role's policy.

    Args:
      route: `self.route(roles)` for the rows.
      trainable: differentiate through this instead of self.trainable.
      reference: score under the base model (adapters off, no full copies).
      options: temperature, chunk_size, remat (see scoring.token_logprobs).
    """
    if reference:
      return scoring.token_logprobs(self.config, self.base, tokens, valid, **options)
    trainable = self.trainable if trainable is None else trainable
    adapters = trainable.get("lora")
    weights = route.get("adapter_weights")
    full = trainable.get("full")
    if full is None or "index" not in route:
      slot = route.get("slot", 0)
      params = self.base if full is None else jax.tree.map(lambda x: x[slot], full)
      return scoring.token_logprobs(self.config, params, tokens, valid, adapters=adapters,
                                    adapter_weights=weights, **options)
    index, position = route["index"], route["position"]
    pad_row = lambda x: jnp.concatenate([x, jnp.zeros_like(x[:1])])[index]

    def one_slot(params, slot_tokens, slot_valid, slot_weights):
      return scoring.token_logprobs(self.config, params, slot_tokens, slot_valid,
                                    adapters=adapters, adapter_weights=slot_weights, **options)

    weights = None if weights is None else pad_row(jnp.asarray(weights))
    out = jax.vmap(one_slot, in_axes=(0, 0, 0, None if weights is None else 0))(
        full, pad_row(jnp.asarray(tokens)), pad_row(jnp.asarray(valid)), weights)
    return tuple(x.reshape(-1, x.shape[-1])[position] for x in out)


class ScriptedPolicy:
  """A deterministic generator backend with PolicyStore's interface, for tests.

  `respond(role, prompt_text) -> completion text` scripts every call; the
  completion is encoded, the first eos id appended, and cut (truncated, no
  stop) at sampling.max_new_tokens. `sampler_calls` logs each generate call
  as a list of (role, prompt_text) rows. Logprobs are -0.5 per token.
  """

  def __init__(self, respond, tokenizer, roles: Sequence[str] = ()):
    self.respond, self.tokenizer, self.roles = respond, tokenizer, tuple(roles)
    self.sampler_calls: list[list[tuple[str, str]]] = []

  def slot_of(self, role: str) -> int:
    return self.roles.index(role) if role in self.roles else 0

  def generate(self, prompts: Sequence[Sequence[int]], roles: Sequence[str], rng: jax.Array,
               sampling: sampling_lib.SamplingParams, **options) -> sampling_lib.Generation:
    del rng, options  # the engine's options (rollout cuts rows to their limits)
    n_new, eos = sampling.max_new_tokens, self.tokenizer.eos_ids[0]
    texts = [self.tokenizer.decode(p) for p in prompts]
    self.sampler_calls.append(list(zip(roles, texts)))
    rows = [self.tokenizer.encode(self.respond(r, t)) + [eos] for r, t in zip(roles, texts)]
    tokens = np.full((len(rows), n_new), self.tokenizer.pad_id, np.int32)
    lengths = np.array([min(len(row), n_new) for row in rows], np.int32)
    for i, row in enumerate(rows):
      tokens[i, :lengths[i]] = row[:n_new]
    logprobs = np.where(np.arange(n_new) < lengths[:, None], -0.5, 0.0).astype(np.float32)
    return sampling_lib.Generation(tokens, logprobs, lengths,
                                   np.array([len(row) > n_new for row in rows]))
