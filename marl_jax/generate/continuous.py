"""Continuous batching: a fixed number of decode slots kept full from a queue of prompts.

    out = continuous.generate(config, params, prompts, rng, sampling, slots=16)

The KV cache is allocated once for `slots x (max_prompt_len + max_new_tokens)`
tokens, whatever the number of prompts. A host loop runs jitted, static-shaped
programs:

  prefill   the next prompts of the queue into the slots that are free: their
            keys and values are written at columns [0, P) of those slots' cache
            rows (P a prompt-length bucket: one call per bucket among them),
            their first token is drawn; a call's rows are bucketed to a power
            of two (padding rows write nowhere).
  fork      a row whose prompt (tokens, LoRA routing, copy) a live row holds
            starts from it instead: those columns copied, its first token drawn
            from the prompt's last hidden state (session_rows; share=False: off).
  decode    `chunk` steps (fewer when all have stopped) of the slots' smallest
            prefix that holds every live row, its width a power of two, over
            the fewest cache columns (length / 2^k, k <= 3) that hold their
            next chunk; each row writes its next key and value at its own
            column and position.
A row stops at a stop token or at its own token limit; its slot is refilled
before the next chunk, so the batch stays full until the queue drains. Then it
narrows, as vLLM's does: once the live rows fit a prefix of half the width, one
program (move) moves them into it; and a row early in its answer attends only
to the columns its prompt and answer fill, not the whole row sized for the
longest (shrink=False: every slot, every column). A narrowed decode works on a
copy of its part of the cache (at most half), a move copies the rows it moves:
the planner budgets the larger (marl_jax.trainer.planner, the engine's row).

Row i draws token j with fold_in(key_i, j), key_i = fold_in(rng, row_ids[i])
(default i; or its own key: draw.row_keys), whatever slot it lands in, so the
tokens equal sampler.generate's for the same key (logprobs to float rounding:
the cache rows hold the same values at other columns). Per-row temperature,
top-k and top-p (one SamplingParams per row), per-row LoRA routing
(adapter_weights; a call runs only the LoRA slots its rows use) and per-row full
copies (`copies`: params stacked [F, ...], each copy with its own slots and
queue, vmapped) are as in sampler.generate / generate_slots. Programs: a decode
per (width, columns, LoRA slots run) met (widths: powers of two up to the slots),
a move per width, a prefill per (rows, prompt bucket, LoRA slots run), a fork
per (rows, prompt bucket); all counted by sampler.compiled_shapes().

A Session is the engine that takes rows while it runs: `submit` queues rows
(each with its key, settings, limit, LoRA weights or copy, and a priority),
`step` refills the free slots from the queues (lowest priority first, then
submission order) and decodes one chunk, returning the rows that finished,
so a caller can submit a row's follow-up as soon as the row is done.
generate() is one Session fed every row at once.
"""

from __future__ import annotations

import heapq
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from marl_jax.generate import draw, sampler, slot_programs
from marl_jax.generate.draw import SamplingParams
from marl_jax.generate.session_rows import (Finished, HeldPrompts, Row, Stats, cache_bytes,
                                             check_prompts)
from marl_jax.models import lora
from marl_jax.models.config import ModelConfig
from marl_jax.parallel import sharding

ENGINES = ("lockstep", "continuous")  # config.rollout.engine
# Decode slots where nothing sizes them (config.rollout.slots=0 on a device
# that reports no memory, a CPU): SmolLM2-135M's float32 cache is 45 KiB a
# token, 2.9 GiB for 64 slots of 1,024 tokens (`cache_bytes`).
DEFAULT_SLOTS = 64
# Decode steps per program call: a slot that stops mid-chunk idles for the rest
# of it, fewer steps pay the host round trip more often; 8 is within 1% of the
# best of 1-32 (launch/benchmark.py --only=rollout_chunks; WORKSPACE.md).
DEFAULT_CHUNK = 8
# Decode only the slots and columns that hold live rows (module doc), where no
# caller says; launch/benchmark.py --only=rollout_shrink measures both.
DEFAULT_SHRINK = True
# Start a row whose prompt a live row holds from that row's cache (session_rows).
DEFAULT_SHARE = True


def generate(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]],
    rng: jax.Array,
    sampling: SamplingParams | Sequence[SamplingParams] = SamplingParams(),
    *,
    slots: int,
    copies: Sequence[int] | None = None,
    adapters: Any = None,
    adapter_weights: np.ndarray | None = None,
    limits: Sequence[int] | None = None,
    row_ids: Sequence[int] | None = None,
    max_prompt_len: int | None = None,
    chunk: int | None = None,
    min_prompt_len: int = 16,
    shrink: bool | None = None,
    share: bool | None = None,
    stats: Stats | None = None,
) -> sampler.Generation:
  """Samples one completion per prompt through `slots` decode slots (module doc).

  Args:
    sampling: one SamplingParams for every row, or one per row (their stop_ids
      must agree); a row's token limit is its max_new_tokens, or limits[i].
    slots: decode slots (rows decoded at once); with `copies`, per copy.
    copies: [B] index of each row's full parameter copy; params then carry a
      leading copy axis (as sampler.generate_slots).
    row_ids: [B] each row's identity, its key fold_in(rng, row_ids[i])
      (draw.row_keys; default its index).
    max_prompt_len: the cache's prompt columns (default: the bucket of the
      longest prompt); a longer prompt is an error.
    chunk: decode steps per program call (default DEFAULT_CHUNK, read at the call).
    shrink: decode only the slots and columns live rows use (module doc; default
      DEFAULT_SHRINK, read at the call).
    share: start a row whose prompt a live row holds from its cache (session_rows;
      default DEFAULT_SHARE, read at the call).
    stats: if given, filled with what the call did (Stats).
  """
  n = len(prompts)
  if n == 0:
    raise ValueError("continuous.generate() got no prompts.")
  samplings = draw.per_row(sampling, n, "continuous.generate()")
  n_new = max(s.max_new_tokens for s in samplings)
  if adapters is not None and (adapter_weights is None or len(adapter_weights) != n):
    raise ValueError("continuous.generate(adapters=...) needs adapter_weights with one row per "
                     "prompt.")
  prompt_cap = max_prompt_len or sampler.bucket(max(len(p) for p in prompts), min_prompt_len)
  session = Session(config, params, samplings, slots=slots, max_prompt_len=prompt_cap,
                    stacked=copies is not None, adapters=adapters,
                    adapter_slots=None if adapters is None else np.shape(adapter_weights)[1],
                    chunk=chunk, min_prompt_len=min_prompt_len, shrink=shrink, share=share,
                    stats=stats)
  session.submit(prompts, draw.row_keys(rng, n, row_ids), samplings, limits=limits,
                 copies=copies, adapter_weights=adapter_weights)
  tokens = np.full((n, n_new), config.pad_id, np.int32)
  logprobs = np.zeros((n, n_new), np.float32)
  lengths, truncated = np.zeros(n, np.int32), np.zeros(n, bool)
  for done in session.run():  # a fresh session's rows are 0..n-1
    i, length = done.row, len(done.tokens)
    tokens[i, :length], logprobs[i, :length] = done.tokens, done.logprobs
    lengths[i], truncated[i] = length, done.truncated
  return sampler.Generation(tokens, logprobs, lengths, truncated)


class Session:
  """The continuous engine as a loop the caller drives: submit rows, step, get finished rows.

      session = continuous.Session(config, params, sampling, slots=8, max_prompt_len=256)
      session.submit(prompts, keys)
      while not session.idle:
        for row in session.step():
          ...  # session.submit(follow-ups) as rows finish

  Shapes are fixed when it opens (slots, prompt columns, the largest
  max_new_tokens of `sampling`, the draw program of its settings, the LoRA
  width), so rows submitted at any time reuse the same compiled programs.
  """

  def __init__(self, config: ModelConfig, params: Any,
               sampling: SamplingParams | Sequence[SamplingParams], *, slots: int,
               max_prompt_len: int, stacked: bool = False, adapters: Any = None,
               adapter_slots: int | None = None, chunk: int | None = None,
               min_prompt_len: int = 16, shrink: bool | None = None,
               share: bool | None = None, stats: Stats | None = None):
    """Opens the engine; `sampling`: every setting its rows will use (the first is
    submit's default); `stacked`: params carry a leading full-copy axis, each copy
    with `slots` slots and its own queue; `adapter_slots`: the LoRA routing width;
    `shrink`: decode only the slots and columns live rows use (module doc);
    `share`: start rows from the prompts live rows hold (session_rows)."""
    samplings = draw.per_row(sampling, 1 if isinstance(sampling, SamplingParams)
                             else len(sampling), "continuous.Session()")
    chunk = DEFAULT_CHUNK if chunk is None else chunk
    if slots < 1 or chunk < 1 or not samplings:
      raise ValueError(f"the continuous engine needs slots >= 1, chunk >= 1 and a sampling, got "
                       f"slots={slots}, chunk={chunk}.")
    if (adapters is None) != (adapter_slots is None):
      raise ValueError("continuous.Session needs adapter_slots (the LoRA routing width) with "
                       "adapters, and neither without.")
    self.config, self.slots, self.stacked, self.chunk = config, slots, stacked, chunk
    self.shrink = DEFAULT_SHRINK if shrink is None else shrink
    self.share = DEFAULT_SHARE if share is None else share
    self.sampling, self.spec = samplings[0], draw.DrawSpec.of(samplings)
    self.n_new = max(s.max_new_tokens for s in samplings)
    self.min_prompt_len, self.prompt_cap = min_prompt_len, max_prompt_len
    self.length, self.adapter_slots = max_prompt_len + self.n_new, adapter_slots
    self.num_copies = jax.tree_util.tree_leaves(params)[0].shape[0] if stacked else 1
    self.stop_ids = jnp.asarray(tuple(config.eos_ids) + tuple(self.sampling.stop_ids), jnp.int32)
    self._stop_ids = np.asarray(self.stop_ids)
    self.prefill_params, self.decode_params = sampler.program_weights(
        config, params, slots, slots=stacked)
    per_layer = isinstance(self.decode_params["layers"], list)
    self.decode_adapters = (slot_programs.unstacked_adapters(config, adapters) if per_layer
                            else adapters)
    self.prefill_adapters = (self.decode_adapters
                             if isinstance(self.prefill_params["layers"], list) else adapters)
    state = slot_programs.init_state(config, slots, self.length, adapter_slots, per_layer)
    if stacked:
      state = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.num_copies, *x.shape)).copy(),
                           state)
    self.state = state
    self.signature = (config, self.spec, slots, self.num_copies, self.length, adapter_slots)
    self.stats = Stats() if stats is None else stats
    self.stats.slots = slots * self.num_copies
    self.stats.cache_bytes = cache_bytes(config, slots * self.num_copies, self.length)
    self._queues: list[list[tuple[Any, int]]] = [[] for _ in range(self.num_copies)]
    self._free = np.ones((self.num_copies, slots), bool)
    self._row_of = np.full((self.num_copies, slots), -1)
    self._column = np.zeros((self.num_copies, slots), np.int64)  # each slot's next cache column
    self._rows: dict[int, Row] = {}
    self._run_slots = slot_programs.SlotSelection(adapter_slots)
    self._held = HeldPrompts(self.num_copies)
    self._next = self._prefills = 0

  @property
  def idle(self) -> bool:
    """No row queued or decoding."""
    return bool(self._free.all()) and not any(self._queues)

  def submit(self, prompts: Sequence[Sequence[int]], keys: jax.Array | np.ndarray,
             sampling: SamplingParams | Sequence[SamplingParams] | None = None, *,
             limits: Sequence[int] | None = None, copies: Sequence[int] | None = None,
             adapter_weights: np.ndarray | None = None,
             priority: Sequence[Any] | None = None) -> list[int]:
    """Queues rows; returns their handles (Finished.row).

    keys [n, 2]: each row's own key (draw.row_keys). sampling: the session's
    first by default; a row's settings must need no other draw program than
    the session's. limits: token limits (default each row's max_new_tokens).
    copies: each row's full copy (stacked sessions). adapter_weights [n, S].
    priority: rows with lower values are prefilled first, then in submission
    order (default: submission order).
    """
    n = len(prompts)
    samplings = draw.per_row(self.sampling if sampling is None else sampling, n,
                             "Session.submit()")
    need = draw.DrawSpec.of(samplings)
    if samplings and (samplings[0].stop_ids != self.sampling.stop_ids
                      or not self.spec.covers(need)):
      raise ValueError(f"rows with draw {need} and stop_ids {samplings[0].stop_ids} do not fit "
                       f"this session's draw {self.spec} and stop_ids {self.sampling.stop_ids}; "
                       "open the session with every sampling its rows will use.")
    limits = np.array([s.max_new_tokens for s in samplings] if limits is None else limits,
                      np.int32)
    if len(limits) != n or (n and (limits.min() < 1 or limits.max() > self.n_new)):
      raise ValueError(f"limits must give each of the {n} rows a token limit in [1, "
                       f"max_new_tokens={self.n_new}], got {limits.tolist()}.")
    check_prompts(prompts, self.prompt_cap, self.n_new, self.config.max_position_embeddings)
    copy_of = np.zeros(n, np.int64) if copies is None else np.asarray(copies, np.int64)
    if (copies is not None and not self.stacked) or len(copy_of) != n or (n and (
        copy_of.min() < 0 or copy_of.max() >= self.num_copies)):
      raise ValueError(f"copies must give each of the {n} rows a copy in [0, {self.num_copies}) "
                       "(a session over stacked full copies only).")
    weights = None if adapter_weights is None else np.asarray(adapter_weights, np.float32)
    if (weights is None) != (self.adapter_slots is None) or (
        weights is not None and weights.shape != (n, self.adapter_slots)):
      raise ValueError(f"adapter_weights must be [{n}, {self.adapter_slots}] with adapters, and "
                       "absent without.")
    keys = np.asarray(keys)
    if keys.shape != (n, 2):
      raise ValueError(f"Session.submit() needs one [2] key per row, got shape {keys.shape}.")
    settings = draw.row_settings(samplings)
    handles = list(range(self._next, self._next + n))
    self._next += n
    for i, handle in enumerate(handles):
      row_weights = None if weights is None else weights[i]
      self._rows[handle] = Row(prompts[i], keys[i], {k: v[i] for k, v in settings.items()},
                               int(limits[i]), row_weights,
                               HeldPrompts.key(prompts[i], row_weights) if self.share else ())
      rank = handle if priority is None else priority[i]
      heapq.heappush(self._queues[copy_of[i]], (rank, handle))
    self.stats.rows += n
    return handles

  def run(self) -> list[Finished]:
    """Steps until idle; the rows finished, in the order they finished."""
    out = []
    while not self.idle:
      out += self.step()
    return out

  def step(self) -> list[Finished]:
    """Refills free slots from the queues, decodes one chunk; returns the rows that finished."""
    finished: list[Finished] = []
    taken = [[heapq.heappop(queue)[1] for _ in range(min(int(self._free[c].sum()), len(queue)))]
             for c, queue in enumerate(self._queues)]
    while any(taken):
      taken = self._start(taken, finished)
    if self._free.all():
      return finished
    width = self._width()
    window = self._window()
    columns = self._lora_columns(self._row_of[~self._free])
    self._note("decode", self.chunk, width, window, None if columns is None else len(columns))
    self.state, out_tokens, out_logp, steps = slot_programs.decode_program(
        self.config, self.spec, self.chunk, width, window, self.stacked, self.decode_params,
        *self._run_slots(self.decode_adapters, columns), self.state, self.stop_ids)
    out_tokens, out_logp = np.asarray(out_tokens), np.asarray(out_logp)
    state = {k: np.asarray(self.state[k]) for k in ("steps", "done", "stopped", "column")}
    if not self.stacked:
      out_tokens, out_logp = out_tokens[None], out_logp[None]
      state = {k: v[None] for k, v in state.items()}
    self.stats.chunks += 1
    self.stats.decode_steps += int(steps)
    self.stats.copy_steps += int(steps) * self.num_copies
    self.stats.slot_steps += int(steps) * width * self.num_copies
    self.stats.column_steps += int(steps) * width * window * self.num_copies
    self._column = state["column"].copy()
    for c, slot in zip(*np.nonzero(~self._free)):
      handle = int(self._row_of[c, slot])
      row = self._rows[handle]
      new = int(state["steps"][c, slot]) - sum(map(len, row.tokens))
      row.tokens.append(out_tokens[c, slot, :new])
      row.logprobs.append(out_logp[c, slot, :new])
      if state["done"][c, slot]:
        self._free[c, slot] = True
        self._held.release(c, slot)
        finished.append(self._finish(handle, not state["stopped"][c, slot]))
    return finished

  def _start(self, taken: list[list[int]], finished: list[Finished]) -> list[list[int]]:
    """Starts the rows `taken` per copy in free slots: a row whose prompt a live row
    holds from it (fork), one row of each other prompt by prefill; returns the rows
    left, which share a prompt prefilled now (the next round forks from it, or
    prefills it again where its row already finished)."""
    prefill, fork, later = [], [], []
    for c, part in enumerate(taken):
      prefill.append([]), fork.append([]), later.append([])
      leaders = set()
      for r in part:
        shared = self._rows[r].shared
        if shared and self._held.holder(c, shared) is not None:
          fork[c].append(r)
        elif shared and shared in leaders:
          later[c].append(r)
        else:
          prefill[c].append(r)
          leaders.add(shared)
    # One call per prompt bucket, not a short prompt padded to a long one's (the
    # episodes schedule mixes first calls with follow-ups holding earlier answers).
    for rows, start in ((prefill, self._refill), (fork, self._fork)):
      bucket = {r: self._prompt_bucket(len(self._rows[r].prompt)) for p in rows for r in p}
      for size in sorted(set(bucket.values())):
        start([[r for r in part if bucket[r] == size] for part in rows], finished)
    return later

  def _width(self) -> int:
    """The decode width: the power of two (at least the mesh's row shards, at most
    the slots) whose prefix of slots holds every copy's live rows; moves them into
    the lowest slots first when that narrows it."""
    if not self.shrink:
      return self.slots
    live = ~self._free
    fit = lambda n: min(self.slots, sampler.bucket(n, sharding.row_shards()))
    width = fit(max(int(np.flatnonzero(row)[-1]) + 1 if row.any() else 0 for row in live))
    narrowest = fit(int(live.sum(1).max()))
    if narrowest < width:
      self._move_into(narrowest)
      width = narrowest
    return width

  def _window(self) -> int:
    """The decode's cache columns: the fewest of length / 8, / 4, / 2 (rounded up) or all
    that hold every live row's columns (from its prompt bucket on) for the next chunk."""
    if not self.shrink:
      return self.length
    need = int(self._column[~self._free].max()) + self.chunk
    windows = [-(-self.length // 2**k) for k in (3, 2, 1)]
    return next((w for w in windows if w >= need), self.length)

  def _move_into(self, width: int) -> None:
    """Moves each copy's live rows past slot `width` into its free slots below it
    (one program call, `width` moves a copy, padded with moves to nowhere)."""
    src = np.zeros((self.num_copies, width), np.int32)
    dst = np.full((self.num_copies, width), self.slots, np.int32)  # out of range: no move
    for c in range(self.num_copies):
      out = np.flatnonzero(~self._free[c, width:]) + width
      into = np.flatnonzero(self._free[c, :width])[:len(out)]
      src[c, :len(out)], dst[c, :len(out)] = out, into
      self._row_of[c, into] = self._row_of[c, out]
      self._column[c, into] = self._column[c, out]
      for a, b in zip(out, into):
        self._held.move(c, a, b)
      self._free[c, into], self._free[c, out] = False, True
    self._note("move", width)
    self.state = slot_programs.move_program(
        self.stacked, self.state, *(jnp.asarray(a if self.stacked else a[0]) for a in (src, dst)))
    self.stats.compactions += 1

  def _lora_columns(self, handles: Any) -> tuple[int, ...] | None:
    """The LoRA slots these rows use: a call runs only those (None: every slot)."""
    if self.adapter_slots is None:
      return None
    used = lora.used_slots([self._rows[int(h)].weights for h in np.ravel(handles)])
    return None if len(used) in (0, self.adapter_slots) else tuple(map(int, used))

  def _finish(self, handle: int, truncated: bool) -> Finished:
    row = self._rows.pop(handle)
    tokens = np.concatenate(row.tokens).astype(np.int32)
    self.stats.tokens += len(tokens)
    return Finished(handle, tokens, np.concatenate(row.logprobs).astype(np.float32),
                    bool(truncated), row.prefill)

  def _note(self, kind: str, *shape) -> None:
    sampler._note_compile(  # pylint: disable=protected-access
        ("continuous", kind, *self.signature, *shape),
        f"continuous {kind} {shape}, {self.slots} slots x {self.length} tokens")

  def _prompt_bucket(self, length: int) -> int:
    return min(sampler.bucket(length, self.min_prompt_len), self.prompt_cap)

  def _place(self, taken: list[list[int]]) -> tuple[list, dict[str, Any], int]:
    """The rows `taken` per copy placed in free slots, in arrays [copies, rows bucket]
    (slot_ids, keys, settings, limits, weights; a padding row's slot id is out of
    range: written nowhere), their places (copy, index, handle, slot), the prompt bucket."""
    shape = (self.num_copies, min(sampler.bucket(max(map(len, taken)), 1), self.slots))
    arrays = {"slot_ids": np.full(shape, self.slots, np.int32),
              "keys": np.zeros((*shape, 2), np.uint32),
              "settings": {k: np.zeros(shape, v.dtype)
                           for k, v in draw.row_settings([self.sampling]).items()},
              "limits": np.ones(shape, np.int32),
              "weights": None if self.adapter_slots is None else np.zeros(
                  (*shape, self.adapter_slots), np.float32)}
    places = []
    for c, part in enumerate(taken):
      for j, (handle, slot) in enumerate(zip(part, np.flatnonzero(self._free[c]))):
        row = self._rows[handle]
        arrays["slot_ids"][c, j], arrays["keys"][c, j] = slot, row.key
        arrays["limits"][c, j] = row.limit
        for k, v in row.settings.items():
          arrays["settings"][k][c, j] = v
        if row.weights is not None:
          arrays["weights"][c, j] = row.weights
        places.append((c, j, handle, slot))
    prompt_len = self._prompt_bucket(max(len(self._rows[r].prompt) for p in taken for r in p))
    return places, arrays, prompt_len

  def _args(self, *arrays) -> list[Any]:
    """Program arguments: a copy axis only in a stacked session."""
    return [None if a is None else jax.tree.map(
        lambda x: jnp.asarray(x if self.stacked else x[0]), a) for a in arrays]

  def _refill(self, taken: list[list[int]], finished: list[Finished]) -> None:
    """One prefill program call for the rows `taken` per copy, into their free slots."""
    places, a, prompt_len = self._place(taken)
    shape = a["limits"].shape
    tokens = np.full((*shape, prompt_len), self.config.pad_id, np.int32)
    valid = np.zeros((*shape, prompt_len), bool)
    for c, part in enumerate(taken):
      if part:
        tokens[c, :len(part)], valid[c, :len(part)] = sampler.left_pad(
            [self._rows[r].prompt for r in part], prompt_len, len(part), self.config.pad_id)
    columns = self._lora_columns([r for part in taken for r in part])
    self._note("prefill", shape[1], prompt_len, None if columns is None else len(columns))
    self.state, *out = slot_programs.prefill_program(
        self.config, self.spec, self.stacked, self.prefill_params,
        *self._run_slots(self.prefill_adapters, columns), self.state,
        *self._args(tokens, valid, a["slot_ids"], a["keys"], a["settings"], a["limits"],
                    a["weights"]), self.stop_ids)
    self.stats.prefills += 1
    self._started(places, out, prompt_len, finished)

  def _fork(self, taken: list[list[int]], finished: list[Finished]) -> None:
    """One fork program call: the rows `taken` per copy start from the prompts live
    rows hold (session_rows), into their free slots."""
    places, a, prompt_len = self._place(taken)
    src = np.zeros(a["limits"].shape, np.int32)
    for c, j, handle, _ in places:
      src[c, j] = self._held.holder(c, self._rows[handle].shared)
    self._note("fork", src.shape[1], prompt_len)
    self.state, *out = slot_programs.fork_program(
        self.config, self.spec, prompt_len, self.stacked, self.prefill_params, self.state,
        *self._args(src, a["slot_ids"], a["keys"], a["settings"], a["limits"], a["weights"]),
        self.stop_ids)
    self.stats.forks += len(places)
    self._started(places, out, prompt_len, finished)

  def _started(self, places: list, out: Sequence[Any], prompt_len: int,
               finished: list[Finished]) -> None:
    """Records the first tokens (ids, logprobs, done) of the rows a start call placed."""
    ids, logp, done = (np.asarray(x) if self.stacked else np.asarray(x)[None] for x in out)
    for c, j, handle, slot in places:
      row = self._rows[handle]
      row.tokens, row.logprobs, row.prefill = [ids[c, j:j + 1]], [logp[c, j:j + 1]], self._prefills
      self._row_of[c, slot] = handle
      self._column[c, slot] = prompt_len
      self._free[c, slot] = bool(done[c, j])
      if done[c, j]:
        finished.append(self._finish(handle, not np.isin(ids[c, j], self._stop_ids)))
      elif row.shared:
        self._held.hold(c, slot, row.shared)
    self._prefills += 1
    self.stats.slot_steps += len(places)
