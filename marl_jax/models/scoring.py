"""Per-token logprobs and entropies of given sequences, computed in chunks.

The LM head runs over `chunk_size` positions at a time under
`jax.checkpoint`, so neither the forward nor the backward pass holds a full
[batch, seq, vocab] float32 array: memory is O(batch * chunk * vocab).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from marl_jax.models import decoder
from marl_jax.models.config import ModelConfig


def _chunk_stats(config, params, hidden, targets, temperature):
  """logprob of targets and entropy, for hidden [B, C, D] and targets [B, C]."""
  logits = decoder.logits_from_hidden(config, params, hidden) / temperature
  logp_all = jax.nn.log_softmax(logits, axis=-1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


def token_logprobs(
    config: ModelConfig,
    params: Any,
    tokens: jax.Array,
    valid: jax.Array,
    *,
    temperature: float = 1.0,
    adapters: Any = None,
    adapter_weights: jax.Array | None = None,
    chunk_size: int = 128,
    remat: bool | str | None = False,
) -> tuple[jax.Array, jax.Array]:
  """Logprob and entropy of each next token of left-padded sequences.

  Args:
    tokens: [B, S] ids, left-padded; valid [B, S] marks real tokens.
    temperature: logits are divided by it (the sampler's convention).
    remat: what of each layer the backward pass recomputes
      (decoder.REMAT_POLICIES; True: 'layer').
  Returns:
    (logprobs, entropies), each [B, S - 1] float32; entry t scores token t + 1
    given tokens <= t. Entries whose target is padding are meaningless; mask
    them with valid[:, 1:].
  """
  b, s = tokens.shape
  positions = decoder.left_pad_positions(valid)
  hidden, _ = decoder.forward_hidden(
      config, params, tokens, positions, valid, adapters=adapters,
      adapter_weights=adapter_weights, remat=remat)
  hidden, targets = hidden[:, :-1], tokens[:, 1:]
  n = s - 1
  chunk = min(chunk_size, n)
  pad = (-n) % chunk
  hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
  targets = jnp.pad(targets, ((0, 0), (0, pad)))
  n_chunks = (n + pad) // chunk
  hidden = hidden.reshape(b, n_chunks, chunk, -1).swapaxes(0, 1)
  targets = targets.reshape(b, n_chunks, chunk).swapaxes(0, 1)
  stats = jax.checkpoint(
      lambda h, t: _chunk_stats(config, params, h, t, temperature), prevent_cse=False)
  logp, entropy = jax.lax.map(lambda xs: stats(*xs), (hidden, targets))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n + pad)[:, :n]
  return unchunk(logp), unchunk(entropy)
