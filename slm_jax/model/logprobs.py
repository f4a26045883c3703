"""Token log-probabilities from final hidden states, in fp32, chunked over the sequence (docs/reference.md §5, §6).

The one place where logits meet targets: training, validation, DPO and evaluation scoring all call
`token_logprobs`, which never materialises [batch, length, vocab] fp32 logits at once; `fused_nll_sum` is the
training variant with the head gradient formed in the forward pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slm_jax.model.transformer import NEG_INF
from slm_jax.sharding import constrain


def token_logprobs(model, hidden: jax.Array, targets: jax.Array, banned: jax.Array | None = None,
                   chunk_size: int = 512) -> jax.Array:
  """log p(targets) [B, T] in fp32 from final hidden states [B, T, D].

  banned: optional bool [V_padded] of ids whose logits are set to -inf before the softmax (docs/reference.md §6 modality
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


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
  """[B, T, ...] -> [n, B, chunk, ...] (T padded to a multiple of chunk)."""
  B, T = x.shape[:2]
  pad = (-T) % chunk
  if pad:
    x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
  return x.reshape(B, -1, chunk, *x.shape[2:]).swapaxes(0, 1)


def _unchunk(x: jax.Array, T: int) -> jax.Array:
  n, B, c = x.shape[:3]
  return x.swapaxes(0, 1).reshape(B, n * c, *x.shape[3:])[:, :T]


def _fused_forward(hidden, w, targets, weights, vocab_size: int, chunk: int):
  """Per chunk: logits (fp32 accumulate), -log p, and the gradients of sum(weights * -log p) w.r.t. the chunk's
  hidden states and the head, so the backward pass needs no second logits matmul."""
  T = hidden.shape[1]
  valid = jnp.arange(w.shape[1]) < vocab_size
  cdt = hidden.dtype
  wc = w.astype(cdt)

  def one(dw, xs):
    h, t, m = xs
    logits = jnp.einsum("bcd,dv->bcv", h, wc, preferred_element_type=jnp.float32)
    logits = constrain(jnp.where(valid, logits, NEG_INF), ("batch", "length", "act_vocab"))
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, t[..., None].astype(jnp.int32), axis=-1)[..., 0]
    g = jnp.exp(logits - lse[..., None])                       # softmax; d(-log p_t)/dlogits = p - onehot(t)
    g = g - (jnp.arange(w.shape[1]) == t[..., None]).astype(jnp.float32)
    g = (g * m[..., None]).astype(cdt)
    dh = jnp.einsum("bcv,dv->bcd", g, wc, preferred_element_type=jnp.float32).astype(cdt)
    dw = constrain(dw + jnp.einsum("bcd,bcv->dv", h, g, preferred_element_type=jnp.float32), ("embed", "vocab"))
    return dw, (lse - picked, dh)

  dw0 = constrain(jnp.zeros(w.shape, jnp.float32), ("embed", "vocab"))  # laid out like the head
  dw, (nll, dh) = jax.lax.scan(one, dw0, (_chunks(hidden, chunk), _chunks(targets, chunk), _chunks(weights, chunk)))
  return _unchunk(nll, T), _unchunk(dh, T), dw.astype(w.dtype)


def _make_fused(vocab_size: int, chunk: int):
  @jax.custom_vjp
  def fused(hidden, w, targets, weights):
    nll, _, _ = _fused_forward(hidden, w, targets, weights, vocab_size, chunk)
    return (weights * nll).sum(), jax.lax.stop_gradient(nll)

  def fwd(hidden, w, targets, weights):
    nll, dh, dw = _fused_forward(hidden, w, targets, weights, vocab_size, chunk)
    return ((weights * nll).sum(), nll), (dh, dw)

  def bwd(res, cotangents):
    dh, dw = res
    g = cotangents[0]  # the per-token output is not differentiable (documented)
    return (g.astype(dh.dtype) * dh, g.astype(dw.dtype) * dw, None, None)

  fused.defvjp(fwd, bwd)
  return fused


def fused_nll_sum(model, hidden: jax.Array, targets: jax.Array, weights: jax.Array,
                  chunk_size: int = 512) -> tuple[jax.Array, jax.Array]:
  """(sum of weights * -log p(targets), -log p per token [B, T]) in fp32, for training.

  The same numbers as `token_logprobs`, but the gradients of the weighted sum w.r.t. hidden states and the
  output head are formed chunk by chunk during the forward pass (softmax minus one-hot, times the weights), so
  the backward pass does not recompute the logits: 6 instead of 8 head matmul FLOPs per token and vocabulary
  entry, still never [batch, length, vocab] fp32 logits at once. Only the sum is differentiable; `weights`
  (the loss mask) is not.
  """
  T = hidden.shape[1]
  fused = _make_fused(model.cfg.vocab_size, min(chunk_size, T))
  return fused(hidden, model.head_weight(), targets, weights.astype(jnp.float32))
