"""Turns a rollout's episodes into the padded arrays of one training step.

Every call becomes one row: prompt + completion, left-padded to a bucketed
length S. Scores from `scoring.token_logprobs` are [B, S - 1] (entry t scores
token t + 1), so a completion of n tokens occupies the last n entries of that
grid; `mask`, `old_logp` and `ref_logp` live on the same grid.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from marl_jax.generate import sampler as sampling
from marl_jax.rl import advantages as adv_lib
from marl_jax.workflows.episodes import Episode

MIN_LEN = 16  # the shortest length bucket of an update row
PER_OCTAVE = 2  # update length buckets per doubling: 16, 24, 32, 48, 64, 96, 128, ..


def length_ladder(upto: int, per_octave: int | None = None) -> list[int]:
  """The update chunks' length buckets below `upto`: MIN_LEN 2^k (1 + i / per_octave)."""
  per_octave = per_octave or PER_OCTAVE
  out, octave = [], MIN_LEN
  while octave < upto:
    out += [n for n in (octave + octave * i // per_octave for i in range(per_octave)) if n < upto]
    octave *= 2
  return out


def length_bucket(n: int, per_octave: int | None = None) -> int:
  """The smallest update length bucket >= n (length_ladder)."""
  return next(b for b in length_ladder(2 * max(n, MIN_LEN) + 1, per_octave) if b >= n)


REWARD_MODES = ("final", "role")


@dataclasses.dataclass
class TrainBatch:
  """Arrays of one update (numpy; rows past `num_calls` are padding).

  tokens, valid: [B, S] left-padded prompt + completion.
  mask: [B, S-1] completion tokens (the stop token included).
  old_logp: [B, S-1] the rollout's sampled logprobs on the mask.
  advantages: [B]; role: [B] index into `roles`; kl_coef: [B] per-row KL weight.
  rewards_final / rewards_role: [num_calls] both reward modes, always logged.
  """

  tokens: np.ndarray
  valid: np.ndarray
  mask: np.ndarray
  old_logp: np.ndarray
  advantages: np.ndarray
  role: np.ndarray
  kl_coef: np.ndarray
  roles: tuple[str, ...]
  row_roles: list[str]
  num_calls: int
  rewards_final: np.ndarray
  rewards_role: np.ndarray

  def arrays(self) -> dict[str, np.ndarray]:
    return {k: getattr(self, k) for k in
            ("tokens", "valid", "mask", "old_logp", "advantages", "role", "kl_coef")}


def call_rewards(episodes: Sequence[Episode]) -> tuple[np.ndarray, np.ndarray]:
  """(final, role) reward of every call: the broadcast outcome, and the call's
  own correctness where its role defines one (else the outcome)."""
  final, role = [], []
  for episode in episodes:
    for call in episode.calls:
      final.append(episode.reward)
      role.append(episode.reward if call.correct is None else float(call.correct))
  return np.asarray(final, np.float32), np.asarray(role, np.float32)


def build(episodes: Sequence[Episode], roles: Sequence[str], *, grouping: str = "episode",
          reward_mode: str = "final", estimator: str = "grpo", normalize_std: bool = True,
          kl_coefs: dict[str, float] | None = None, default_kl: float = 0.0,
          min_rows: int = 8, min_len: int = MIN_LEN,
          rewards_of: Callable[[Sequence[Episode]], tuple[np.ndarray, np.ndarray]] = call_rewards
          ) -> TrainBatch:
  """Packs every call of `episodes` into a TrainBatch (module docstring).

  rewards_of gives every call's (final, role) rewards (default call_rewards);
  tests pass their own to give a random model a learning signal.
  """
  if reward_mode not in REWARD_MODES:
    raise ValueError(f"Unknown reward mode {reward_mode!r}; valid: {REWARD_MODES}.")
  calls = [(e, c) for e in episodes for c in e.calls]
  if not calls:
    raise ValueError("The rollout produced no calls to train on.")
  unknown = sorted({c.role for _, c in calls} - set(roles))
  if unknown or set(kl_coefs or {}) - set(roles):
    raise ValueError(f"Roles {unknown or sorted(set(kl_coefs) - set(roles))} are not among "
                     f"the workflow's roles {tuple(roles)}.")
  final, role_reward = rewards_of(episodes)
  rewards = final if reward_mode == "final" else role_reward
  cols = dict(problem=[e.group for e, _ in calls], episode=[e.id for e, _ in calls],
              role=[c.role for _, c in calls], turn=[c.turn for _, c in calls],
              agent=[c.agent for _, c in calls])
  groups = adv_lib.group_keys(grouping, **cols)
  weights = adv_lib.call_weights(grouping, cols["episode"])
  advantages = adv_lib.group_advantages(rewards, groups, weights, estimator=estimator,
                                        normalize_std=normalize_std)
  n = len(calls)
  rows = sampling.bucket(n, min_rows)
  length = sampling.bucket(max(len(c.prompt_tokens) + len(c.completion_tokens)
                               for _, c in calls), min_len)
  seqs = [list(c.prompt_tokens) + list(c.completion_tokens) for _, c in calls]
  tokens, valid = sampling.left_pad(seqs, length, rows, pad_id=0)
  mask = np.zeros((rows, length - 1), bool)
  old_logp = np.zeros((rows, length - 1), np.float32)
  for i, (_, call) in enumerate(calls):
    k = len(call.completion_tokens)
    if k:
      mask[i, -k:] = True
      old_logp[i, -k:] = call.logprobs
  role_index = {r: i for i, r in enumerate(roles)}
  kl = {r: (kl_coefs or {}).get(r, default_kl) for r in roles}
  pad = rows - n
  return TrainBatch(
      tokens=tokens, valid=valid, mask=mask, old_logp=old_logp,
      advantages=np.pad(advantages, (0, pad)),
      role=np.pad(np.array([role_index[c.role] for _, c in calls], np.int32), (0, pad)),
      kl_coef=np.pad(np.array([kl[c.role] for _, c in calls], np.float32), (0, pad)),
      roles=tuple(roles), row_roles=[c.role for _, c in calls] + [roles[0]] * pad,
      num_calls=n, rewards_final=final, rewards_role=role_reward)


def minibatches(batch: TrainBatch, count: int,
                rng: np.random.Generator | None) -> list[np.ndarray]:
  """Row indices of `count` equal minibatches of a shuffled batch (padding rows
  spread); rng None keeps the rows' order (rl.shuffle=false)."""
  rows = len(batch.tokens)
  if count < 1 or rows % count:
    raise ValueError(f"rl.minibatches={count} must divide the padded batch of {rows} rows.")
  order = rng.permutation(rows) if rng is not None else np.arange(rows)
  return list(order.reshape(count, rows // count))


def select(arrays: dict[str, Any], index: np.ndarray) -> dict[str, Any]:
  return {k: v[index] for k, v in arrays.items()}


def length_chunks(valid: np.ndarray, index: np.ndarray, rows: int, *, min_rows: int = 8,
                  per_octave: int | None = None, groups: np.ndarray | None = None,
                  multiple: int = 1) -> list[tuple[np.ndarray, int, int]]:
  """Cuts a minibatch's rows into update chunks of `rows` rows of similar length.

  Rows padded to the batch's longest sequence waste most of an update when
  roles' sequences differ in length (a Voting aggregator reads every
  generator's answer). The real rows (padding rows, with no valid token,
  weigh nothing and are dropped) are sorted by length and cut into chunks of
  `rows` (fewer rows in all: their bucket, sampling.bucket(n, min_rows)); each
  chunk is padded to the length bucket of its longest row (length_bucket:
  two per doubling, the measured trade between padding and the programs a
  run compiles). Returns (row indices, length, padded rows) per chunk. Every
  chunk of a run has one row count, so the update compiles once per length
  bucket, whatever mix of lengths a step brings. rows = 0: the whole
  minibatch, one chunk. `groups` ([B], e.g. each row's full policy copy)
  keeps rows of different groups in different chunks, so that a chunk runs
  one copy rather than every copy on as many rows (policies.route). The padded
  row count is rounded up to a `multiple` (a mesh's batch-axis devices).
  """
  if rows < 0:
    raise ValueError(f"rl.update_rows={rows} must be >= 0 (0: the whole minibatch at once).")
  lengths = valid[index].sum(-1)
  real = index[lengths > 0]
  if rows == 0 or len(real) == 0:
    return [(index, valid.shape[1], len(index))]
  lengths = lengths[lengths > 0]
  size = min(rows, sampling.bucket(len(real), min_rows))
  size = -(-size // multiple) * multiple
  group = np.zeros(len(real), int) if groups is None else np.asarray(groups)[real]
  chunks = []
  for g in np.unique(group):
    order = np.flatnonzero(group == g)
    order = order[np.argsort(lengths[order], kind="stable")]
    chunks += [(real[order[a:a + size]],
                min(length_bucket(int(lengths[order[a:a + size]].max()), per_octave),
                    valid.shape[1]), size) for a in range(0, len(order), size)]
  return chunks


def group_arrays(arrays: dict[str, np.ndarray], rows: np.ndarray, length: int,
                 padded_rows: int) -> dict[str, np.ndarray]:
  """The arrays of `rows`, cut to their last `length` positions (left padding)
  and padded with empty rows to `padded_rows`."""
  cut = {k: v[:, -_width(k, length):] if v.ndim == 2 else v
         for k, v in select(arrays, rows).items()}
  return pad_rows(cut, padded_rows, length)


def _width(key: str, length: int) -> int:
  """Columns of a [B, *] array of a batch of sequence length `length`: tokens
  and valid hold every position, scores ([B, S - 1]) every next token."""
  return length if key in ("tokens", "valid") else length - 1


def pad_rows(arrays: dict[str, Any], rows: int, length: int) -> dict[str, np.ndarray]:
  """Pads a TrainBatch's arrays to `rows` rows and sequence `length` (left, like build)."""
  out = {}
  for key, x in arrays.items():
    x = np.asarray(x)
    widths = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    if x.ndim == 2:  # tokens / valid [B, S]; scores [B, S - 1]; all left-padded
      widths[1] = (_width(key, length) - x.shape[1], 0)
    out[key] = np.pad(x, widths)
  return out
