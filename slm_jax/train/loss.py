"""Token log-probabilities and the SIMS loss (SPEC §5), in fp32, chunked over the sequence.

The one place where logits meet targets: training, validation and evaluation scoring all call
`token_logprobs`, which never materialises [batch, length, vocab] fp32 logits at once.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slm_jax.model.transformer import NEG_INF


def token_logprobs(model, hidden: jax.Array, targets: jax.Array, banned: jax.Array | None = None,
                   chunk_size: int = 512) -> jax.Array:
  """log p(targets) [B, T] in fp32 from final hidden states [B, T, D].

  banned: optional bool [V_padded] of ids whose logits are set to -inf before the softmax (SPEC §6 modality
  masking). The head is applied to `chunk_size` positions at a time under `jax.checkpoint`, so the backward pass
  also only holds one chunk of logits.
  """
  B, T, D = hidden.shape
  chunk = min(chunk_size, T)
  pad = (-T) % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  n = (T + pad) // chunk
  hs = hidden.reshape(B, n, chunk, D).swapaxes(0, 1)
  ts = targets.reshape(B, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one(h, t):
    logits = model.logits(h, dtype=jnp.float32)
    if banned is not None:
      logits = jnp.where(banned, NEG_INF, logits)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, t[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - lse

  out = jax.lax.map(lambda ht: one(*ht), (hs, ts))  # [n, B, chunk]
  return out.swapaxes(0, 1).reshape(B, n * chunk)[:, :T]


def masked_mean_nll(logprobs: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum of -logprob over unmasked labels / their count, count). SPEC §5: mean over the whole batch's labels."""
  m = loss_mask.astype(jnp.float32)
  count = m.sum()
  return -(logprobs * m).sum() / jnp.maximum(count, 1.0), count


def kind_nll_sums(logprobs: jax.Array, loss_mask: jax.Array, kind: jax.Array,
                  num_kinds: int = 3) -> tuple[jax.Array, jax.Array]:
  """(sum of -logprob [num_kinds], label count [num_kinds]) split by the kind of the target token.

  Sums, not means, so that micro-batches and hosts add up before the one division of SPEC §5.
  """
  m = loss_mask.astype(jnp.float32)
  onehot = (kind.astype(jnp.int32)[..., None] == jnp.arange(num_kinds)).astype(jnp.float32) * m[..., None]
  nll = jnp.where(m > 0, -logprobs.astype(jnp.float32), 0.0)
  return jnp.einsum("bt,btk->k", nll, onehot), onehot.sum((0, 1))
