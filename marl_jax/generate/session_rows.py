"""The host-side records of a continuous session (continuous.Session): its rows,
what it did (Stats), and which prompts its slots hold (HeldPrompts).

A row whose prompt (the same tokens, the same LoRA routing, the same copy) a
live row holds starts from that row's cache: the prompt's columns are copied
and its first token drawn from the prompt's last hidden state, with the row's
own key (slot_programs.fork_program), instead of a prefill. GRPO's samples of
a problem and Voting's generators share their prompt, so a stage of
group x agents rows prefills each prompt once while one of its rows decodes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from marl_jax.models.config import ModelConfig, as_dtype


@dataclasses.dataclass
class Stats:
  """What one continuous.generate call (or Session) did.

  slot_steps counts every (slot, step) the decode programs ran (the slots of
  their width) plus one per started row (its first token); tokens the rows'
  real tokens; so useful_fraction = tokens / slot_steps. prefills: prefill
  calls; forks: rows started from a prompt another row holds (HeldPrompts), no
  prefill. compactions: the times live rows were moved into a narrower prefix.
  column_steps: the cache columns the decode steps attended to, summed over
  their slots (each slot's whole cache row without shrink). copy_steps: the
  decode steps times the weight copies each ran (an engine over stacked full
  copies runs every copy at each step): the weights decode read, in copies.
  """

  rows: int = 0
  slots: int = 0
  chunks: int = 0
  prefills: int = 0
  forks: int = 0
  decode_steps: int = 0
  slot_steps: int = 0
  tokens: int = 0
  cache_bytes: int = 0
  compactions: int = 0
  column_steps: int = 0
  copy_steps: int = 0

  @property
  def useful_fraction(self) -> float:
    return self.tokens / max(self.slot_steps, 1)


@dataclasses.dataclass
class Finished:
  """A row the engine finished.

  row: its handle (Session.submit's). tokens, logprobs: what it sampled, the
  stop token included. truncated: it ran to its limit without a stop token.
  prefill: which of the session's start calls (its prefills and forks, 0, 1,
  ...) started it.
  """

  row: int
  tokens: np.ndarray
  logprobs: np.ndarray
  truncated: bool
  prefill: int


@dataclasses.dataclass
class Row:
  """A submitted row: its prompt, key, settings, token limit and LoRA weights;
  `shared`: what a row must match to start from its prompt (HeldPrompts.key)."""

  prompt: Sequence[int]
  key: np.ndarray
  settings: dict[str, Any]
  limit: int
  weights: np.ndarray | None
  shared: tuple[Any, ...] = ()
  prefill: int = -1
  tokens: list = dataclasses.field(default_factory=list)
  logprobs: list = dataclasses.field(default_factory=list)


class HeldPrompts:
  """The prompts the live rows of each copy's slots hold (module doc). A slot
  holds its row's prompt from its start until the row finishes: the decode writes
  a live row's cache past its prompt only (a finished row may write anywhere)."""

  def __init__(self, copies: int):
    self._slots: list[dict[tuple, set[int]]] = [{} for _ in range(copies)]
    self._of: list[dict[int, tuple]] = [{} for _ in range(copies)]

  @staticmethod
  def key(prompt: Sequence[int], weights: np.ndarray | None) -> tuple[Any, ...]:
    return (tuple(int(t) for t in prompt),
            None if weights is None else np.asarray(weights, np.float32).tobytes())

  def holder(self, copy: int, key: tuple) -> int | None:
    """A slot of this copy whose live row holds the prompt `key`, or None."""
    slots = self._slots[copy].get(key)
    return min(slots) if slots else None

  def hold(self, copy: int, slot: int, key: tuple) -> None:
    self.release(copy, slot)
    self._of[copy][slot] = key
    self._slots[copy].setdefault(key, set()).add(slot)

  def release(self, copy: int, slot: int) -> None:
    key = self._of[copy].pop(slot, None)
    if key is not None:
      self._slots[copy][key].discard(slot)
      if not self._slots[copy][key]:
        del self._slots[copy][key]

  def move(self, copy: int, src: int, dst: int) -> None:
    key = self._of[copy].get(src)
    self.release(copy, src)
    if key is not None:
      self.hold(copy, dst, key)


def cache_bytes(config: ModelConfig, slots: int, length: int) -> int:
  """Bytes of the KV cache of `slots` rows of `length` tokens (keys and values, all layers)."""
  itemsize = np.dtype(as_dtype(config.compute_dtype)).itemsize
  return (2 * config.num_layers * slots * config.num_kv_heads * length * config.head_dim
          * itemsize)


def check_prompts(prompts: Sequence[Sequence[int]], prompt_cap: int, max_new_tokens: int,
                  max_positions: int) -> None:
  """A ValueError where a prompt does not fit a session's prompt columns, or with
  its answer, the model's positions."""
  longest = max(map(len, prompts), default=0)
  if longest > prompt_cap:
    raise ValueError(f"a prompt of {longest} tokens is longer than max_prompt_len={prompt_cap}; "
                     "truncate it (rollout does, from the left) or raise max_prompt_len.")
  if longest + max_new_tokens > max_positions:
    raise ValueError(
        f"a prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
        f"max_position_embeddings={max_positions}; shorten the prompts or lower max_new_tokens.")
