"""The SIMS loss (docs/reference.md §5): per-kind NLL sums of the token log-probabilities.

The log-probabilities themselves (`token_logprobs`, `fused_nll_sum`) live in `slm_jax.model.logprobs`, beside the
model, so that evaluation shares them without importing training; they are re-exported here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from slm_jax.model.logprobs import fused_nll_sum, token_logprobs

__all__ = ["fused_nll_sum", "kind_nll_sums", "token_logprobs"]


def kind_nll_sums(logprobs: jax.Array, loss_mask: jax.Array, kind: jax.Array,
                  num_kinds: int = 3) -> tuple[jax.Array, jax.Array]:
  """(sum of -logprob [num_kinds], label count [num_kinds]) split by the kind of the target token.

  Sums, not means, so that micro-batches and hosts add up before the one division of docs/reference.md §5.
  """
  m = loss_mask.astype(jnp.float32)
  onehot = (kind.astype(jnp.int32)[..., None] == jnp.arange(num_kinds)).astype(jnp.float32) * m[..., None]
  nll = jnp.where(m > 0, -logprobs.astype(jnp.float32), 0.0)
  return jnp.einsum("bt,btk->k", nll, onehot), onehot.sum((0, 1))
